"""Reading a labelled table file into rows: one ``dict`` per document, column name to value.

What it reads, chosen by the file's suffix (``file_format``; a ``.gz``, ``.bz2``, ``.xz`` or ``.zst`` suffix is
looked through):

- ``.jsonl``: one JSON object per line, through ``datasets``' json builder;
- ``.json``: a JSON array of objects (or JSON Lines), through the same builder;
- ``.csv`` and ``.tsv`` (tab-separated, as spreadsheets export it): read here (``read_csv_rows``), every field
  as text, so an id ``007`` stays ``007``; UTF-8 with or without a BOM, or GB18030 as Excel saves it
  (``govtopic.encodings``);
- ``.parquet``: through ``datasets``' parquet builder.

Any other suffix is a ``DataError`` naming the types it takes (the same as ``govtopic predict`` reads through
``govtopic.inputs``). Every error is a ``DataError`` that names the file
and, where there is one, the line and the fix: a missing, empty or blank file; a JSONL line that is not valid
JSON or not an object (``datasets``' own error names no line, so the file is read again to find it); bytes that
are not UTF-8; a CSV quote never closed, a row with more or fewer fields than the header, a header naming a
column twice, or bytes neither UTF-8 nor GB18030. Rows are never silently merged, shifted or filled in.

What the rows mean (labels, splits, corrections) is ``govtopic.data``'s job; this module only reads them.

Example:
    >>> file_format("data/official.jsonl.gz")
    'json'
    >>> rows = read_table("data/official.jsonl.gz")
    >>> len(rows), rows[0]["id"], rows[0]["label"]
    (2023, 'govcn-7078001', '工业、交通\\其他')
    >>> read_csv_rows(Path("bad.csv"))  # id,title,label then "008,医院,卫生,x" on line 3
    DataError: bad.csv: line 3: 4 field(s), but the header has 3; put text that holds commas in quotes, ...
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from govtopic.errors import DataError

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def file_format(path: str | Path) -> str:
    """The datasets builder name for a file, looking through a .gz suffix."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in {".gz", ".bz2", ".xz", ".zst"}:
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in _FORMATS:
        raise DataError(f"{path}: unsupported file type; use .jsonl, .json, .csv, .tsv or .parquet (optionally .gz)")
    return _FORMATS[suffixes[-1]]


def _find_bad_json_line(path: Path) -> str | None:
    """Name the first line of a JSONL file that does not parse (datasets' own error does not)."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    return f"line {number}: not valid JSON ({err.msg}: column {err.colno})"
                if not isinstance(value, dict):
                    return f"line {number}: expected a JSON object per line, got {type(value).__name__}"
    except UnicodeDecodeError as err:
        return f"not UTF-8 ({err}); convert it, e.g. iconv -f GB18030 -t UTF-8"
    return None


def _only_blank(path: Path, limit: int = 1 << 20) -> bool:
    """A small plain file of blank lines only (a larger or compressed one is left to its reader)."""
    if path.stat().st_size > limit or path.suffix.lower() in (".gz", ".parquet"):
        return False
    return not path.read_bytes().strip()


def read_table(path: str | Path) -> list[dict]:
    """Rows of a JSONL/JSON/CSV/TSV/Parquet file (JSONL and Parquet through ``datasets``), with errors that name
    the file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"data file {p} does not exist (a relative path is read from the folder govtopic runs in, {Path.cwd()}); "
            "check the path given on the command line or in the config"
        )
    if p.stat().st_size == 0 or _only_blank(p):
        raise DataError(f"{p}: the file is empty; it needs one document per row")
    fmt = file_format(p)
    if fmt in ("csv", "tsv"):
        rows = read_csv_rows(p, delimiter="\t" if fmt == "tsv" else ",")
    else:
        rows = _read_with_datasets(p, fmt)
    if not rows:
        raise DataError(f"{p}: no rows found; it needs one document per row")
    return rows


def read_csv_rows(path: Path, delimiter: str = ",") -> list[dict]:
    """Rows of a labelled CSV file (``delimiter="\\t"``: TSV), every field as text (an id ``007`` stays ``007``),
    empty fields as None.

    Read as ``govtopic predict`` reads a CSV: UTF-8 (with or without BOM) or GB18030 as Excel saves it, quoting
    strict. A quote never closed, a row with more or fewer fields than the header, or undecodable bytes is a
    ``DataError`` naming the line and the fix, never rows silently merged, shifted or filled in.
    """
    from govtopic.encodings import UNDECODED, open_text

    csv.field_size_limit(sys.maxsize)
    rows: list[dict] = []
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty; it needs a header line, then one document per row")
            repeated = sorted({name for name in header if name and header.count(name) > 1})
            if repeated:
                raise DataError(f"{path}: the header names column(s) {repeated} more than once; rename one of them")
            start = reader.line_num + 1
            for row in reader:
                if row:  # blank lines are skipped
                    rows.append(_csv_row(row, header, path, start, delimiter))
                start = reader.line_num + 1
        except csv.Error as err:
            raise DataError(
                f"{path}: line {start}: malformed CSV ({err}, found on line {reader.line_num}); most often a quote "
                'opened in this row is never closed: close it, or write a quote inside quoted text as ""'
            ) from err
    for row, number in rows:
        if any(isinstance(v, str) and UNDECODED.search(v) for v in row.values()):
            raise DataError(
                f"{path}: line {number}: bytes that are not UTF-8 or GB18030 text; save the file as UTF-8 "
                "(Excel: CSV UTF-8), e.g. iconv -f GB18030 -t UTF-8"
            )
    return [row for row, _ in rows]


def _csv_row(row: list[str], header: list[str], path: Path, line: int, delimiter: str = ",") -> tuple[dict, int]:
    if len(row) != len(header):
        held = "tabs" if delimiter == "\t" else "commas"
        raise DataError(
            f"{path}: line {line}: {len(row)} field(s), but the header has {len(header)}; put text that holds "
            f"{held} in quotes, and give every row a value (possibly empty) for every column"
        )
    return {name: value if value != "" else None for name, value in zip(header, row)}, line


def _read_with_datasets(p: Path, fmt: str) -> list[dict]:
    from datasets import load_dataset

    try:
        return load_dataset(fmt, data_files=str(p), split="train").to_list()
    except Exception as err:  # datasets and pyarrow raise several types (bad UTF-8 shows only in to_list)
        where = _find_bad_json_line(p) if fmt == "json" else None
        if where is None and isinstance(err, UnicodeDecodeError):
            where = "not UTF-8; convert it, e.g. iconv -f GB18030 -t UTF-8"
        raise DataError(f"{p}: could not be read as {fmt}: {where or err}") from err
