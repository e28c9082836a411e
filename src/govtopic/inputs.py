"""Documents out of files: .txt files (``.txt.gz`` too), folders of them, and JSONL, JSON array, CSV, TSV and
Parquet tables (optionally gzipped), streamed as ``Record``s in bounded memory.

Every document has a stable ``source`` key (``path`` for a .txt file, ``path:line`` for JSONL, CSV and TSV, the
line a row starts on, ``path:N`` for the N-th object of a JSON array, ``path:row`` for Parquet), which is how a
resumed run knows what is already done. A document that cannot be read is a ``Record`` with an ``error`` that
names the problem and the fix; a file in a folder that is not read (a .docx, a .pdf) is reported, never
skipped in silence. Encodings: ``govtopic.encodings``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from govtopic.encodings import ENCODING_SAMPLE, UNDECODED, UNREADABLE, bom_encoding, decode_bytes, open_text
from govtopic.fsutil import identity, same_file, written_by_govtopic

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
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


class InputError(ValueError):
    """An input of a prediction run cannot be read at all (it does not exist, or is a device or pipe)."""


@dataclass
class Columns:
    text: str = "text"
    id: str = "id"
    # The title column (the model's own by default); titles are read by the model's title rule.
    title: str | None = None
    # Columns the user named (--id-column, --title-column): a table without one is an error, as for the text
    # column. A default (``id``, the model's title column) may be absent: ids are then null, titles empty.
    named_id: bool = False
    named_title: bool = False

    @classmethod
    def from_options(cls, text: str, id: str, title: str | None, record) -> Columns:
        """The columns a command's options name, read by the model ``record``'s title rule: ``title`` None takes
        the model's own title column (which a table may lack), anything else was named by the user (and must be
        there), ``""`` for none; an ``id`` other than the default ``id`` was named too.

        Example:
            >>> Columns.from_options("text", "id", "标题", clf.record)
            Columns(text='text', id='id', title='标题', named_id=False, named_title=True)
        """
        return cls(text, id, record.read_title_column(title), named_id=id != cls.id, named_title=title is not None)

    def missing(self, names, text_optional: bool = False) -> str | None:
        """What a table with columns ``names`` lacks of the columns it must have, as an error message; None
        when it has them all.

        Example:
            >>> Columns(title="标题", named_title=True).missing(["id", "text"])
            "no '标题' column (use --title-column)"
        """
        wanted = [] if text_optional else [(self.text, "--text-column")]
        wanted += [(self.id, "--id-column")] if self.named_id else []
        wanted += [(self.title, "--title-column")] if self.named_title and self.title else []
        absent = [f"no {name!r} column (use {option})" for name, option in wanted if name not in names]
        return "; ".join(absent) or None


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


def is_txt(path: Path) -> bool:
    """Whether a file in a folder is read as a document: ``.txt`` or ``.txt.gz``, in any case."""
    name = path.name.lower()
    return name.endswith(".txt") or name.endswith(".txt.gz")


def _read_folder(folder: Path, seen: _Seen) -> Iterator[Record]:
    """The .txt files of a folder (sorted), and an error record for every other file a person put there.

    Hidden files (``.name``, and so macOS's ``._name`` and ``__MACOSX/._name`` copies), system files
    (Thumbs.db, Office lock files) and govtopic's own outputs are passed over, whatever their name ends with.
    A file already read through an earlier input is not read again.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not _passed_over(p, folder))
    if not any(is_txt(p) for p in files):
        yield Record(str(folder), error="folder holds no .txt files")
    for path in files:
        if not seen.first(path, folder):
            continue
        if is_txt(path):
            yield _read_txt(path)
        else:
            kind = "".join(path.suffixes[-2:]) or "no extension"
            yield Record(
                str(path),
                _doc_id(path),
                error=f"not a .txt file ({kind}): only .txt files are read from a folder; save the document as "
                ".txt (UTF-8), or pass a .jsonl/.csv/.tsv/.parquet table as an input of its own",
            )


class _Seen:
    """The files read so far in one pass over the inputs, so that inputs that overlap (a file and the folder
    that holds it, a folder named twice) read each file once."""

    def __init__(self):
        self.files: set = set()
        self.repeated: dict[str, int] = {}  # input -> files of it read already through an earlier input

    def first(self, path: Path, item: str | Path) -> bool:
        """Whether ``path`` (reached through input ``item``) is read for the first time."""
        key = identity(path) or os.path.realpath(path)
        if key not in self.files:
            self.files.add(key)
            return True
        self.repeated[str(item)] = self.repeated.get(str(item), 0) + 1
        return False

    def report(self) -> None:
        for item, count in self.repeated.items():
            logger.warning(
                "%d file(s) of input %s were already read through an earlier input: each file is read once",
                count,
                item,
            )


def hidden_or_system(path: Path, folder: Path) -> bool:
    """Whether a file found in ``folder`` is hidden (a dot name on its path under the folder, so also macOS's
    ``._name`` and ``__MACOSX`` copies) or a system file (Thumbs.db, desktop.ini, an Office ``~$`` lock file)."""
    name = path.name.lower()
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return hidden or name in _SYSTEM_FILES or name.startswith("~$")


def _passed_over(path: Path, folder: Path) -> bool:
    return hidden_or_system(path, folder) or written_by_govtopic(path)


def _table_kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return suffixes[-1] if suffixes else ""


def _read_jsonl(path: Path, cols: Columns) -> Iterator[Record]:
    """JSON lines; a file that is one JSON array of objects (``[{...}, {...}]``) is read as its objects.

    A file with no documents (empty, blank lines only, ``[]``) is an error record, as an empty CSV is; so is
    one where no row has a column the user named (a row may lack it: a document without a title).
    """
    problem = _never_named(path, cols)
    if problem:
        yield Record(str(path), error=problem)
        return
    empty = True
    for source, row in _json_rows(path):
        empty = False
        yield row if isinstance(row, Record) else _row_record(row, source, cols)
    if empty:
        yield Record(
            str(path), error="the file is empty: expected one JSON object per line (or a JSON array of objects)"
        )


def _never_named(path: Path, cols: Columns) -> str | None:
    """Which of the columns the user named (``--id-column``, ``--title-column``) no object of the file has.

    Read until every one is found, which for a file that has them is its first object.
    """
    named = [(cols.id, "--id-column", cols.named_id), (cols.title, "--title-column", cols.named_title)]
    wanted = {name: option for name, option, on in named if on and name}
    found_an_object = False
    for _, row in _json_rows(path) if wanted else ():
        if isinstance(row, dict):
            found_an_object = True
            wanted = {name: option for name, option in wanted.items() if name not in row}
            if not wanted:
                return None
    if not (wanted and found_an_object):  # a file without objects has other problems, reported per line
        return None
    return "; ".join(f"no object of the file has a {name!r} column (use {option})" for name, option in wanted.items())


def _json_rows(path: Path) -> Iterator[tuple[str, dict | Record]]:
    """(source, object) of every JSON line or array item; an error ``Record`` for one that is not an object."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as fh:
        head = fh.peek(ENCODING_SAMPLE)[:ENCODING_SAMPLE]
        start = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")[:1]
        if start == "[":
            yield from _json_array_rows(path, fh.read())
            return
        if bom_encoding(head):  # UTF-16 lines cannot be cut at b"\n": read them as text
            text = io.TextIOWrapper(fh, encoding=bom_encoding(head), errors="surrogateescape")
            for number, line in enumerate(text, 1):
                if line.strip():
                    yield f"{path}:{number}", _json_row(line, f"{path}:{number}")
            return
        # Lines are decoded one by one, so one undecodable line is reported and the rest still read.
        for number, raw in enumerate(fh, 1):
            source = f"{path}:{number}"
            try:
                line = decode_bytes(raw)
            except UnicodeDecodeError:
                yield source, Record(source, error=f"line {number}: {UNREADABLE}")
                continue
            if line.strip():
                yield source, _json_row(line, source)


def _json_array_rows(path: Path, raw: bytes) -> Iterator[tuple[str, dict | Record]]:
    try:
        items = json.loads(decode_bytes(raw))
    except UnicodeDecodeError:
        yield str(path), Record(str(path), error=f"a JSON array in {UNREADABLE}; save it as UTF-8")
        return
    except json.JSONDecodeError as err:
        problem = (
            f"malformed JSON array ({err.msg}: line {err.lineno}, column {err.colno}), so none of its documents "
            "were read; fix the file, or write one JSON object per line (JSONL)"
        )
        yield str(path), Record(str(path), error=problem)
        return
    if not isinstance(items, list):
        yield str(path), Record(str(path), error="expected JSON lines or an array of JSON objects")
        return
    for number, item in enumerate(items, 1):
        source = f"{path}:{number}"
        if isinstance(item, dict):
            yield source, item
        else:
            problem = f"item {number} of the JSON array is {type(item).__name__}, not an object"
            yield source, Record(source, error=problem)


def _json_row(line: str, source: str) -> dict | Record:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return Record(source, error=f"malformed JSON ({err.msg}: column {err.colno})")
    if not isinstance(row, dict):
        return Record(source, error="expected a JSON object")
    return row


def _row_record(row: dict, source: str, cols: Columns) -> Record:
    ident = row.get(cols.id)
    ident = None if ident is None else str(ident)
    has_title = bool(cols.title) and cols.title in row
    if cols.text not in row and not has_title:  # a row with a title and no body is a document
        return Record(source, ident, error=f"no {cols.text!r} column (use --text-column)")
    text, title = row.get(cols.text), row.get(cols.title) if has_title else None
    for name, value in ((cols.text, text), (cols.title, title)):
        if value is not None and not isinstance(value, str):
            return Record(source, ident, error=f"{name!r} is {type(value).__name__}, not text")
        if value and UNDECODED.search(value):
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
    with open_text(path) as fh:
        lines = _Lines(fh)
        reader = csv.reader(lines, strict=True, delimiter=delimiter)
        try:
            header = next(reader, None)
        except csv.Error as err:
            header, problem = None, f"unreadable header ({err})"
        else:
            problem = cols.missing(header or [])
            problem = problem and f"{problem}; the header names {header}"
        if header is None and not problem.startswith("unreadable"):
            problem = "the file is empty: expected a header line naming the columns, then one row per document"
        if problem:
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
    problem = cols.missing(pf.schema_arrow.names)
    if problem:
        yield Record(str(path), error=f"{problem}; the columns are {pf.schema_arrow.names}")
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
    seen = _Seen()
    for item in inputs:
        try:
            yield from _records_of(item, cols, seen)
        except Exception as err:  # noqa: BLE001 - any reader failure becomes a reported record, not a stop
            yield Record(str(item), error=f"could not be read further: {type(err).__name__}: {err}")
    seen.report()


def _records_of(item: str, cols: Columns, seen: _Seen) -> Iterator[Record]:
    path = Path(item)
    kind = _table_kind(path)
    if path.is_dir():
        yield from _read_folder(path, seen)
    elif path.is_file() and not seen.first(path, item):
        return
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


def reads(item: str, path: Path) -> bool:
    """Whether reading input ``item`` reads the file at ``path``, as it is or once it is created."""
    source = Path(item)
    if not source.is_dir():
        return same_file(source, path)
    real = Path(os.path.realpath(path))
    if is_txt(real) and real.is_relative_to(os.path.realpath(source)):
        return True
    ident = identity(path)
    for entry in source.rglob("*"):  # links inside the folder may point at the path from anywhere
        if not is_txt(entry):
            continue
        if entry.is_symlink() and Path(os.path.realpath(entry)) == real:
            return True
        if ident is not None and identity(entry) == ident:
            return True
    return False
