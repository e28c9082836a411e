"""Prediction over files: streams documents from .txt files, folders, JSONL, CSV or Parquet in bounded memory,
writes results as it goes, resumes an interrupted run, and reports unreadable documents instead of stopping.

Every document has a stable ``source`` key (``path`` for a .txt file, ``path:line`` for JSONL, CSV and TSV,
the line a row starts on, ``path:N`` for the N-th object of a JSON array, ``path:row`` for Parquet), which is how
a resumed run knows what is already done. A file in a folder that is not read (a .docx, a .pdf) is reported
as an error, never skipped in silence.
A run writes only files it may own (see ``govtopic.fsutil.claim_output``): never an input, never a file
another program wrote, never one another run is writing, never a device or pipe.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import io
import json
import logging
import os
import re
import sys
import time
import unicodedata
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from govtopic.fsutil import (
    FileSafetyError,
    atomic_write_text,
    check_claimable,
    claim_output,
    identity,
    release_output,
    same_file,
    written_by_govtopic,
)

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
# Byte-order marks that name an encoding outright (UTF-32 first: its little-endian mark starts like UTF-16's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Files that are not text whatever their name says: (how they start, what they are).
_BINARY_MAGIC = (
    (b"PK\x03\x04", "a Word, Excel, WPS or zip file"),
    (b"\xd0\xcf\x11\xe0", "an old Word, Excel or WPS file"),
    (b"%PDF", "a PDF"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"{\\rtf", "an RTF document"),
)
# Files a folder may hold that are nobody's document (Windows thumbnails, Office lock files start with ~$).
_SYSTEM_FILES = {"thumbs.db", "desktop.ini"}
# Tried in this order when a text is not UTF-8; when both decode it, charset-normalizer decides.
CHINESE_ENCODINGS = ("gb18030", "big5")
UNREADABLE = "not UTF-8, GB18030 or Big5 text"
# Bytes of a table read to choose its encoding.
ENCODING_SAMPLE = 65536
# How messages name the two files a run writes, and the option that chooses each.
OUTPUT = ("output file", "--output")
ERRORS = ("errors file", "--errors")


_UNDECODED = re.compile("[\udc80-\udcff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Characters every real text has some of: ASCII (spaces, line breaks, digits), CJK and full-width punctuation.
_TEXT_MARKS = re.compile("[\x09-\x7e\u3000-\u303f\uff01-\uff65]")


class InputError(ValueError):
    """An input of a prediction run cannot be read at all (it does not exist, or is a device or pipe)."""


@dataclass
class Columns:
    text: str = "text"
    id: str = "id"
    # The title column (the model's own by default); titles are read by the model's title rule.
    title: str | None = None


@dataclass
class Record:
    source: str
    id: str | None = None
    text: str | None = None
    error: str | None = None
    position: int | None = None  # input position, kept only while several processes share the work
    title: str | None = None

    def document(self) -> dict:
        return {"title": self.title or "", "text": self.text or ""}


def decode_bytes(raw: bytes) -> str:
    """UTF-8 (with or without BOM), else GB18030 or Big5, the encodings Chinese portals publish in.

    Big5 text comes back as the Traditional Chinese it holds (normalisation converts it to Simplified later).
    UTF-16 and UTF-32 with a byte-order mark (Windows Notepad's "Unicode") are read too.
    Raises ``UnicodeDecodeError`` when the bytes are none of these.
    """
    bom = _bom_encoding(raw)
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
    fits = [enc for enc in CHINESE_ENCODINGS if _decodes(raw, enc)]
    if len(fits) < 2:
        return fits[0] if fits else None
    from charset_normalizer import from_bytes

    chaos = {match.encoding: match.chaos for match in from_bytes(raw, cp_isolation=fits)}
    if "big5" in chaos and chaos["big5"] < chaos.get("gb18030", float("inf")):
        return "big5"
    return "gb18030"


def _bom_encoding(head: bytes) -> str | None:
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


def _doc_id(path: Path) -> str:
    """A .txt file's id: its name without .txt (and without .gz)."""
    name = path.name[: -len(".gz")] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem


def _read_txt(path: Path) -> Record:
    ident = _doc_id(path)
    try:
        raw = path.read_bytes()
        if path.suffix.lower() == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # a damaged or cut .gz raises EOFError or zlib.error
        return Record(str(path), ident, error=f"unreadable: {type(err).__name__}: {err}")
    for magic, what in _BINARY_MAGIC:
        if raw.startswith(magic):
            problem = f"{what}, not plain text: save it as a .txt file (UTF-8) and pass that instead"
            return Record(str(path), ident, error=problem)
    try:
        return Record(str(path), ident, decode_bytes(raw))
    except UnicodeDecodeError as err:
        problem = f"{UNREADABLE} (undecodable byte at offset {err.start}); save it as UTF-8"
        return Record(str(path), ident, error=problem)


def _is_txt(path: Path) -> bool:
    """Whether a file in a folder is read as a document: ``.txt`` or ``.txt.gz``, in any case."""
    name = path.name.lower()
    return name.endswith(".txt") or name.endswith(".txt.gz")


def _read_folder(folder: Path) -> Iterator[Record]:
    """The .txt files of a folder (sorted), and an error record for every other file a person put there.

    Hidden files, system files (Thumbs.db, Office lock files) and govtopic's own outputs are passed over.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not any(_is_txt(p) for p in files):
        yield Record(str(folder), error="folder holds no .txt files")
    for path in files:
        if _is_txt(path):
            yield _read_txt(path)
        elif not _passed_over(path, folder):
            kind = "".join(path.suffixes[-2:]) or "no extension"
            yield Record(
                str(path),
                _doc_id(path),
                error=f"not a .txt file ({kind}): only .txt files are read from a folder; save the document as "
                ".txt (UTF-8), or pass a .jsonl/.csv/.tsv/.parquet table as an input of its own",
            )


def _passed_over(path: Path, folder: Path) -> bool:
    name = path.name.lower()
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return hidden or name in _SYSTEM_FILES or name.startswith("~$") or written_by_govtopic(path)


def _open_text(path: Path):
    raw = gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")
    head = raw.peek(ENCODING_SAMPLE)[:ENCODING_SAMPLE] if hasattr(raw, "peek") else b""
    encoding = _bom_encoding(head) or "utf-8-sig"
    try:
        if encoding == "utf-8-sig":
            head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut at the end of the sample
            whole_lines = head[: head.rfind(b"\n") + 1] or head
            encoding = detect_chinese_encoding(whole_lines) or "gb18030"
    # Undecodable bytes become lone surrogates, reported per row (see _UNDECODED), not a stop.
    return io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline="")


def _table_kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return suffixes[-1] if suffixes else ""


def _read_jsonl(path: Path, cols: Columns) -> Iterator[Record]:
    """JSON lines; a file that is one JSON array of objects (``[{...}, {...}]``) is read as its objects."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as fh:
        head = fh.peek(ENCODING_SAMPLE)[:ENCODING_SAMPLE]
        start = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")[:1]
        if start == "[":
            yield from _read_json_array(path, fh.read(), cols)
            return
        if _bom_encoding(head):  # UTF-16 lines cannot be cut at b"\n": read them as text
            text = io.TextIOWrapper(fh, encoding=_bom_encoding(head), errors="surrogateescape")
            for number, line in enumerate(text, 1):
                if line.strip():
                    yield _json_record(line, f"{path}:{number}", cols)
            return
        # Lines are decoded one by one, so one undecodable line is reported and the rest still read.
        for number, raw in enumerate(fh, 1):
            source = f"{path}:{number}"
            try:
                line = decode_bytes(raw)
            except UnicodeDecodeError:
                yield Record(source, error=f"line {number}: {UNREADABLE}")
                continue
            if line.strip():
                yield _json_record(line, source, cols)


def _read_json_array(path: Path, raw: bytes, cols: Columns) -> Iterator[Record]:
    try:
        items = json.loads(decode_bytes(raw))
    except UnicodeDecodeError:
        yield Record(str(path), error=f"a JSON array in {UNREADABLE}; save it as UTF-8")
        return
    except json.JSONDecodeError as err:
        yield Record(
            str(path),
            error=f"malformed JSON array ({err.msg}: line {err.lineno}, column {err.colno}), so none of its "
            "documents were read; fix the file, or write one JSON object per line (JSONL)",
        )
        return
    if not isinstance(items, list):
        yield Record(str(path), error="expected JSON lines or an array of JSON objects")
        return
    for number, item in enumerate(items, 1):
        source = f"{path}:{number}"
        if isinstance(item, dict):
            yield _row_record(item, source, cols)
        else:
            yield Record(source, error=f"item {number} of the JSON array is {type(item).__name__}, not an object")


def _json_record(line: str, source: str, cols: Columns) -> Record:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return Record(source, error=f"malformed JSON ({err.msg}: column {err.colno})")
    if not isinstance(row, dict):
        return Record(source, error="expected a JSON object")
    return _row_record(row, source, cols)


def _row_record(row: dict, source: str, cols: Columns) -> Record:
    ident = row.get(cols.id)
    ident = None if ident is None else str(ident)
    has_title = bool(cols.title) and cols.title in row
    if cols.text not in row and not has_title:
        return Record(source, ident, error=f"no {cols.text!r} column (use --text-column)")
    text, title = row.get(cols.text), row.get(cols.title) if has_title else None
    for name, value in ((cols.text, text), (cols.title, title)):
        if value is not None and not isinstance(value, str):
            return Record(source, ident, error=f"{name!r} is {type(value).__name__}, not text")
        if value and _UNDECODED.search(value):
            return Record(source, ident, error=f"undecodable bytes ({UNREADABLE})")
    return Record(source, ident, text or "", title=title)


class _Lines:
    """The physical lines of a text file, numbered from 1; lines taken since a record began can be re-read."""

    def __init__(self, fh):
        self.fh = fh
        self.number = 0  # of the last line handed out
        self.taken: list[str] = []
        self.again: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.again.pop() if self.again else next(self.fh)
        self.number += 1
        self.taken.append(line)
        return line

    def begin_record(self) -> int:
        """Forget the lines taken so far; returns the number of the line the next record starts on."""
        self.taken = []
        return self.number + 1

    def reread_after_first(self) -> None:
        """Hand out again every line of the current record but its first (it swallowed them by mistake)."""
        rest = self.taken[1:]
        self.again.extend(reversed(rest))
        self.number -= len(rest)


def _read_csv(path: Path, cols: Columns, delimiter: str = ",") -> Iterator[Record]:
    """Rows of a CSV (or, with ``delimiter="\\t"``, TSV) file, each named by the line it starts on.

    A quote that is never closed would swallow every following row into one text, so quoting is read
    strictly: such a row becomes an error record naming its line, and the lines it swallowed are read again
    as rows. A row with more or fewer fields than the header (a comma in unquoted text) is an error too.
    """
    csv.field_size_limit(sys.maxsize)
    with _open_text(path) as fh:
        lines = _Lines(fh)
        reader = csv.reader(lines, strict=True, delimiter=delimiter)
        try:
            header = next(reader, None)
        except csv.Error as err:
            header, problem = None, f"unreadable header ({err})"
        else:
            problem = f"no {cols.text!r} column in the header {header} (use --text-column)"
        if header is None and not problem.startswith("unreadable"):
            problem = "the file is empty: expected a header line naming the columns, then one row per document"
        if header is None or cols.text not in header:
            yield Record(str(path), error=problem)
            return
        wanted = (cols.text, cols.id, cols.title)
        repeated = sorted({name for name in header if header.count(name) > 1 and name in wanted})
        if repeated:
            yield Record(str(path), error=f"the header names column(s) {repeated} more than once; rename one of them")
            return
        rows = 0
        while True:
            start = lines.begin_record()
            try:
                row = next(reader)
            except StopIteration:
                if not rows:
                    yield Record(str(path), error="no rows below the header: the table holds no documents")
                return
            except csv.Error as err:
                yield Record(f"{path}:{start}", error=_quote_problem(start, lines.number, err))
                lines.reread_after_first()
                continue
            if row:  # blank lines are skipped
                rows += 1
                yield _csv_record(row, header, f"{path}:{start}", start, cols)


def _quote_problem(start: int, end: int, err: csv.Error) -> str:
    if "end of data" in str(err):
        where = "the file ends inside it"
    elif "expected after" in str(err):
        where = f"{err} on line {end}"
    else:
        return f"line {start}: malformed CSV ({err}, on line {end}); the row was skipped"
    return (
        f"line {start}: a quote opened in this row is never closed ({where}), so the row was skipped and the "
        'lines after it were read as rows of their own; close the quote, or write a quote inside quoted text as ""'
    )


def _csv_record(row: list[str], header: list[str], source: str, line: int, cols: Columns) -> Record:
    if len(row) != len(header):
        fields = f"{len(row)} field{'s' if len(row) != 1 else ''}"
        ident = row[header.index(cols.id)] if cols.id in header and header.index(cols.id) < len(row) else None
        return Record(
            source,
            ident,
            error=f"line {line}: {fields}, but the header has {len(header)}; put text that holds commas in quotes",
        )
    return _row_record(dict(zip(header, row)), source, cols)


def _read_parquet(path: Path, cols: Columns) -> Iterator[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if cols.text not in pf.schema_arrow.names:
        yield Record(str(path), error=f"no {cols.text!r} column; columns: {pf.schema_arrow.names} (use --text-column)")
        return
    columns = [c for c in (cols.text, cols.id, cols.title) if c and c in pf.schema_arrow.names]
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=columns):
        for item in batch.to_pylist():
            yield _row_record(item, f"{path}:{row}", cols)
            row += 1
    if not row:
        yield Record(str(path), error="no rows: the table holds no documents")


def iter_records(inputs: list[str], cols: Columns | None = None) -> Iterator[Record]:
    """Documents of every input, in order: .txt files, folders of them (sorted), and tables.

    A file that breaks while being read (a damaged Parquet file, say) ends in an error record naming it;
    the remaining inputs are still read.
    """
    cols = cols or Columns()
    for item in inputs:
        try:
            yield from _records_of(item, cols)
        except Exception as err:  # noqa: BLE001 - any reader failure becomes a reported record, not a stop
            yield Record(str(item), error=f"could not be read further: {type(err).__name__}: {err}")


def _records_of(item: str, cols: Columns) -> Iterator[Record]:
    path = Path(item)
    kind = _table_kind(path)
    if path.is_dir():
        yield from _read_folder(path)
    elif not path.is_file():
        yield Record(str(path), error="no such file or folder")
    elif kind in (".jsonl", ".json"):
        yield from _read_jsonl(path, cols)
    elif kind == ".csv":
        yield from _read_csv(path, cols)
    elif kind == ".tsv":
        yield from _read_csv(path, cols, delimiter="\t")
    elif kind == ".parquet":
        yield from _read_parquet(path, cols)
    else:
        yield _read_txt(path)


def check_inputs(inputs: list[str]) -> None:
    """Raise ``InputError`` naming every input that is missing or not a file or folder, before any work."""
    if not inputs:
        raise InputError("no inputs given: pass .txt files, folders of them, or .jsonl/.csv/.parquet tables")
    problems = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            problems.append(f"{item}: no such file or folder")
        elif not (path.is_file() or path.is_dir()):
            problems.append(f"{item}: not a regular file or folder (a device, pipe or socket)")
    if problems:
        raise InputError(
            "cannot read the inputs: " + "; ".join(problems) + ". Inputs are .txt files, folders of them, "
            "or .jsonl/.csv/.parquet tables: check the paths"
        )


def check_outputs(inputs: list[str], output: Path, errors: Path) -> None:
    """Refuse an output or errors file that is an input or each other, or that govtopic may not write.

    Checked before anything is deleted or opened for writing; links and hard links count as the same file.
    """
    for path, (what, option) in ((output, OUTPUT), (errors, ERRORS)):
        check_not_an_input(inputs, path, what, option)
    if same_file(output, errors):
        raise FileSafetyError(
            f"the output file {output} and the errors file {errors} are the same file; pass another --errors "
            f"path, or leave it out to use {_default_errors(output)}"
        )
    check_claimable(output, *OUTPUT)
    check_claimable(errors, *ERRORS)


def check_not_an_input(inputs: list[str], path: Path, what: str, option: str) -> None:
    """Refuse to write ``path`` when reading ``inputs`` reads it (links and hard links count), before any work.

    Example:
        >>> check_not_an_input(["inbox/"], Path("inbox/a.txt"), "output file", "--output")
        Traceback (most recent call last):
        FileSafetyError: output file inbox/a.txt is also an input (read from inbox/): ...
    """
    for item in inputs:
        if _reads(item, path):
            raise FileSafetyError(
                f"{what} {path} is also an input (read from {item}): writing it would destroy the documents "
                f"being read; choose a path outside the inputs ({option})"
            )


def _reads(item: str, path: Path) -> bool:
    """Whether reading input ``item`` reads the file at ``path``, as it is or once it is created."""
    source = Path(item)
    if not source.is_dir():
        return same_file(source, path)
    real = Path(os.path.realpath(path))
    if _is_txt(real) and real.is_relative_to(os.path.realpath(source)):
        return True
    ident = identity(path)
    for entry in source.rglob("*"):  # links inside the folder may point at the path from anywhere
        if not _is_txt(entry):
            continue
        if entry.is_symlink() and Path(os.path.realpath(entry)) == real:
            return True
        if ident is not None and identity(entry) == ident:
            return True
    return False


def _file_path(path: str | Path, what: str, option: str) -> Path:
    if str(path).endswith(("/", os.sep)):  # Path() would drop the slash and write a file named like the folder
        raise FileSafetyError(f"{what} {path} names a folder; expected a file path ({option}), e.g. {path}out.jsonl")
    return Path(path)


def _default_errors(output: Path) -> Path:
    return output.with_name(output.stem + ".errors.jsonl")


def json_line(row: dict) -> str:
    """``row`` as one JSON line that can always be written as UTF-8.

    A file name that is not UTF-8 (a GBK name from a Windows zip) reaches Python with lone surrogates, which
    UTF-8 cannot hold; they are written as ``\\udcXX`` escapes, which read back as the same name on resume.
    """
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(row, ensure_ascii=False))


def _source_of(line: bytes) -> str | None:
    """The ``source`` of a result or error line govtopic wrote; None for anything else."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    source = row.get("source") if isinstance(row, dict) else None
    return source if isinstance(source, str) else None


def _not_ours(path: Path, number: int) -> FileSafetyError:
    return FileSafetyError(
        f"line {number} of {path} is not a govtopic result (a JSON object with a 'source'), so the file was "
        "changed after govtopic wrote it; govtopic will not append to it, cut it or delete it: choose another "
        "path, or delete the file yourself if you no longer need it"
    )


def _verify_results(path: Path) -> None:
    """Refuse an output whose first line is not a govtopic result (a lone cut-short line is accepted)."""
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20)
    if first.endswith(b"\n") and first.strip() and _source_of(first) is None:
        raise _not_ours(path, 1)


def _done_sources(output: Path) -> set[str]:
    """Sources already in a govtopic output; a last line cut short by a crash is removed first."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    done = set()
    for number, line in enumerate(data[:keep].splitlines(), 1):
        if line.strip():
            source = _source_of(line)
            if source is None:
                raise _not_ours(output, number)
            done.add(source)
    if keep < len(data):
        with open(output, "r+b") as fh:
            fh.truncate(keep)
    return done


@dataclass
class Job:
    """Settings of one prediction run, shared by every process and chunk."""

    model: str
    batch_size: int = 32
    top_k: int = 1
    long_doc: str | None = None
    chunk_docs: int = 256  # documents predicted and written together
    resume: bool = True
    text_column: str = "text"
    id_column: str = "id"
    # Title column of tables; None: the model's own (the column it was trained with), "" for none.
    title_column: str | None = None
    evidence: bool = False
    progress: bool = True


def predict_files(
    inputs: list[str], model: str, output: str | Path, errors: str | Path | None = None, **settings
) -> dict:
    """Predict every document of ``inputs`` into JSONL ``output``; unreadable ones go to ``errors``.

    ``settings`` are the fields of ``Job`` (batch_size, top_k, long_doc, resume, text_column, ...). Before
    the model loads, missing inputs raise ``InputError``, and an output or errors file that is an input,
    that is not a regular file, that another run is writing, or that govtopic did not write raises
    ``FileSafetyError``: govtopic only resumes into (or with ``resume=False`` starts over in) its own files.
    Under ``accelerate launch`` (WORLD_SIZE > 1) each process takes every n-th document and writes its own
    part; the first process then merges the parts into ``output`` in input order.
    """
    job = Job(model=model, **settings)
    output = _file_path(output, *OUTPUT)
    errors = _file_path(errors, *ERRORS) if errors else _default_errors(output)
    check_inputs(inputs)
    check_outputs(inputs, output, errors)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _predict_shard(inputs, job, output, errors, 0, 1)
    import torch
    from accelerate import PartialState

    # Without CUDA the processes run on the CPU and talk over gloo.
    state = PartialState(cpu=not torch.cuda.is_available())
    part = output.with_name(f"{output.name}.part{state.process_index}")
    part_errors = errors.with_name(f"{errors.name}.part{state.process_index}")
    job = dataclasses.replace(job, progress=job.progress and state.is_main_process)
    with ExitStack() as held:
        if state.is_main_process:  # the merged files are written by this process only
            held.enter_context(claim_output(output, *OUTPUT, verify=_verify_results))
            held.enter_context(claim_output(errors, *ERRORS, verify=_verify_results))
        counts = _predict_shard(inputs, job, part, part_errors, state.process_index, world)
        state.wait_for_everyone()
        if state.is_main_process:
            _merge_parts(output, world)
            _merge_parts(errors, world)
        state.wait_for_everyone()
    return {**counts, "output": str(output), "errors_file": str(errors), "process": state.process_index}


def _merge_parts(target: Path, world: int) -> None:
    """Join the processes' parts in input order (each line carries its input position) and drop them."""
    rows = []
    for rank in range(world):
        part = target.with_name(f"{target.name}.part{rank}")
        if part.exists():
            rows += [json.loads(x) for x in part.read_text(encoding="utf-8").splitlines() if x.strip()]
    rows.sort(key=lambda r: r.pop("position"))
    atomic_write_text(target, "".join(json_line(r) + "\n" for r in rows))
    for rank in range(world):
        part = target.with_name(f"{target.name}.part{rank}")
        part.unlink(missing_ok=True)
        release_output(part)


def _predict_shard(inputs: list[str], job: Job, output: Path, errors: Path, rank: int, world: int) -> dict:
    """This process's share (every ``world``-th document from ``rank``), appended to ``output``."""
    from govtopic.predict import get_classifier

    with (
        claim_output(output, *OUTPUT, verify=_verify_results),
        claim_output(errors, *ERRORS, verify=_verify_results),
    ):
        if not job.resume:  # both are govtopic's own files, held by this run: start them over
            os.truncate(output, 0)
            os.truncate(errors, 0)
        done = _Done(_done_sources(output), _done_sources(errors))
        if done.predicted & done.failed:  # fixed and predicted by a run that was then interrupted
            _drop_errors(errors, done.predicted & done.failed)
        with open(output, "a", encoding="utf-8") as out, open(errors, "a", encoding="utf-8") as err:
            clf = get_classifier(job.model)
            title = clf.record.read_title_column(job.title_column)
            columns = Columns(job.text_column, job.id_column, title)
            counts = _predict_records(iter_records(inputs, columns), clf, job, out, err, done, rank, world)
        if done.retried:  # documents fixed since an earlier run: their old error no longer holds
            _drop_errors(errors, done.retried)
    counts["output"], counts["errors_file"] = str(output), str(errors)
    return counts


@dataclass
class _Done:
    """What earlier runs into the same output did: documents predicted, and documents reported unreadable."""

    predicted: set[str]
    failed: set[str]
    retried: set[str] = dataclasses.field(default_factory=set)

    def skip(self, rec: Record) -> bool:
        """Whether ``rec`` is done: predicted before, or still unreadable and already reported.

        A document reported unreadable before that now reads (the user fixed the file) is predicted again.
        """
        if rec.source in self.predicted:
            return True
        if rec.source in self.failed:
            if rec.error:
                return True
            self.retried.add(rec.source)
        return False


def _drop_errors(errors: Path, sources: set[str]) -> None:
    """Remove the lines of ``sources`` from a govtopic errors file (held by this run)."""
    lines = errors.read_text(encoding="utf-8").splitlines(keepends=True)
    atomic_write_text(errors, "".join(x for x in lines if x.strip() and _source_of(x.encode()) not in sources))


def _predict_records(records: Iterator[Record], clf, job: Job, out, err, done: _Done, rank: int, world: int) -> dict:
    counts = {"predicted": 0, "skipped_done": 0, "errors": 0}
    started = time.time()
    bar = _bar(job.progress)
    pending: list[Record] = []
    for position, rec in enumerate(records):
        if position % world != rank:
            continue
        rec.position = position if world > 1 else None
        if done.skip(rec):
            counts["skipped_done"] += 1
            continue
        if rec.error:
            err.write(json_line(_error_row(rec)) + "\n")
            err.flush()
            counts["errors"] += 1
            continue
        pending.append(rec)
        if len(pending) >= job.chunk_docs:
            _flush(clf, pending, out, job, counts, bar)
    _flush(clf, pending, out, job, counts, bar)
    bar.close()
    counts["seconds"] = round(time.time() - started, 2)
    counts["docs_per_second"] = round(counts["predicted"] / max(counts["seconds"], 1e-9), 1)
    return counts


def _error_row(rec: Record) -> dict:
    row = {"source": rec.source, "id": rec.id, "error": rec.error}
    if rec.position is not None:
        row["position"] = rec.position
    return row


def _flush(clf, pending: list[Record], out, job: Job, counts: dict, bar) -> None:
    if not pending:
        return
    results = clf.predict(
        [r.document() for r in pending],
        batch_size=job.batch_size,
        top_k=job.top_k,
        long_doc=job.long_doc,
        return_evidence=job.evidence,
        progress=False,
    )
    lines = []
    for rec, res in zip(pending, results):
        row = {"source": rec.source, "id": rec.id, **res}
        if rec.position is not None:
            row["position"] = rec.position
        lines.append(json_line(row))
    # One write per chunk, then flush: a crash loses at most the chunk in flight, never a finished one.
    out.write("\n".join(lines) + "\n")
    out.flush()
    os.fsync(out.fileno())
    counts["predicted"] += len(pending)
    bar.update(len(pending))
    pending.clear()


def _bar(show: bool):
    from tqdm.auto import tqdm

    return tqdm(unit="doc", desc="govtopic predict", disable=not show, dynamic_ncols=True)
