"""How the bytes of a document become text: UTF-8 (with or without a byte-order mark), else GB18030 or Big5, the
encodings Chinese portals publish in, and UTF-16/32 with a byte-order mark (Windows Notepad's "Unicode").

One place for every reader: the files ``govtopic predict`` reads (``govtopic.inputs``) and the tables training
reads (``govtopic.tables``). Undecodable bytes in a table become lone surrogates (``UNDECODED``), reported per row
by the reader, never a stop.
"""

from __future__ import annotations

import codecs
import gzip
import io
import re
import unicodedata
from pathlib import Path

# Byte-order marks that name an encoding outright (UTF-32 first: its little-endian mark starts like UTF-16's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Tried in this order when a text is not UTF-8; when both decode it, charset-normalizer decides.
CHINESE_ENCODINGS = ("gb18030", "big5")
UNREADABLE = "not UTF-8, GB18030 or Big5 text"
# Bytes of a table read to choose its encoding.
ENCODING_SAMPLE = 65536
UNDECODED = re.compile("[\udc80-\udcff]")
# Characters every real text has some of: ASCII (spaces, line breaks, digits), CJK and full-width punctuation.
_TEXT_MARKS = re.compile("[\x09-\x7e\u3000-\u303f\uff01-\uff65]")


def decode_bytes(raw: bytes) -> str:
    """UTF-8 (with or without BOM), else GB18030 or Big5, the encodings Chinese portals publish in.

    Big5 text comes back as the Traditional Chinese it holds (normalisation converts it to Simplified later).
    UTF-16 and UTF-32 with a byte-order mark (Windows Notepad's "Unicode") are read too.
    Raises ``UnicodeDecodeError`` when the bytes are none of these.
    """
    bom = bom_encoding(raw)
    if bom is not None:
        return _decode_with_bom(raw, bom)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        first = err
    encoding = detect_chinese_encoding(raw)
    if encoding is None:
        raise UnicodeDecodeError("utf-8/gb18030/big5", raw, first.start, first.end, UNREADABLE)
    return raw.decode(encoding)


def detect_chinese_encoding(raw: bytes) -> str | None:
    """``"gb18030"`` or ``"big5"``, whichever decodes ``raw`` into real text; None when neither decodes it.

    Almost any Big5 text also decodes as GB18030 (into nonsense) and short Simplified texts often decode as
    Big5, so charset-normalizer compares the two readings; GB18030 wins a tie, as it is what mainland
    portals publish in.
    """
    if raw.isascii():  # both read ASCII alike: nothing to choose between
        return "gb18030"
    fits = [enc for enc in CHINESE_ENCODINGS if _decodes(raw, enc)]
    if len(fits) < 2:
        return fits[0] if fits else None
    from charset_normalizer import from_bytes

    chaos = {match.encoding: match.chaos for match in from_bytes(raw, cp_isolation=fits)}
    if "big5" in chaos and chaos["big5"] < chaos.get("gb18030", float("inf")):
        return "big5"
    return "gb18030"


def bom_encoding(head: bytes) -> str | None:
    """``"utf-16"`` or ``"utf-32"`` when ``head`` starts with that encoding's byte-order mark."""
    for mark, encoding in _BOMS:
        if head.startswith(mark):
            return encoding
    return None


def _decode_with_bom(raw: bytes, encoding: str) -> str:
    """Decode UTF-16/32 text; bytes that only start like it (binary junk) raise ``UnicodeDecodeError``.

    Any two bytes are a UTF-16 character, so the text must also look like text: no control, unassigned or
    private-use characters, and some punctuation, space, line break or ASCII, as every real document has.
    """
    text = raw.decode(encoding)
    for position, char in enumerate(text):
        if unicodedata.category(char) in ("Cn", "Co", "Cs") or (char < " " and char not in "\t\n\r\f"):
            offset = len(text[:position].encode(encoding))  # the BOM included
            raise UnicodeDecodeError(encoding, raw, offset, offset + 1, f"{encoding} that holds no text")
    if text and not _TEXT_MARKS.search(text):
        raise UnicodeDecodeError(encoding, raw, 0, len(raw), f"{encoding} that holds no text")
    return text


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def open_text(path: Path):
    """A text stream over a table file (gzip or plain), in the encoding its first ``ENCODING_SAMPLE`` bytes show.

    UTF-8 unless those bytes say otherwise: a byte-order mark, or lines that are mostly not UTF-8, which are then
    read as GB18030 or Big5 (``detect_chinese_encoding`` on those lines alone, so that an ASCII header decides
    nothing). A UTF-8 file with a few bad bytes stays UTF-8. Bytes the chosen encoding cannot decode become lone
    surrogates (``UNDECODED``), reported per row by the reader, never a stop.
    """
    raw = gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")
    head = raw.read(ENCODING_SAMPLE)
    raw.seek(0)
    encoding = bom_encoding(head) or _sample_encoding(head)
    return io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline="")


def _sample_encoding(head: bytes) -> str:
    """``"utf-8-sig"`` unless most lines of ``head`` that hold non-ASCII bytes are not UTF-8; then the Chinese
    encoding those lines are in."""
    try:
        head.decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 4:  # only a character cut at the end of the sample
            return "utf-8-sig"
    whole_lines = head[: head.rfind(b"\n") + 1]
    lines = [line for line in whole_lines.split(b"\n") if not line.isascii()]
    if not lines:  # one row longer than the sample: its start, cut to whole characters
        lines = [_whole_characters(head)]
    other = [line for line in lines if not _decodes(line, "utf-8")]
    if 2 * len(other) <= len(lines):  # UTF-8 with some bad bytes: those rows are reported, the rest read
        return "utf-8-sig"
    return detect_chinese_encoding(b"\n".join(other)) or "gb18030"


def _whole_characters(sample: bytes) -> bytes:
    """``sample`` without the one to three bytes of a character its end may have split."""
    for end in range(len(sample), max(len(sample) - 4, 0), -1):
        if any(_decodes(sample[:end], encoding) for encoding in CHINESE_ENCODINGS):
            return sample[:end]
    return sample
