"""Prediction over files: streams documents from .txt files, folders, JSONL, CSV or Parquet in bounded memory,
writes results as it goes, resumes an interrupted run, and reports unreadable documents instead of stopping.

Every document has a stable ``source`` key (``path`` for a .txt file, ``path:line`` or ``path:row`` for a
table), which is how a resumed run knows what is already done.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
ENCODINGS = ("utf-8-sig", "gb18030")


_UNDECODED = re.compile("[\udc80-\udcff]")


@dataclass
class Columns:
    text: str = "text"
    id: str = "id"
    # When the model was trained with the title before the body, the same column is read here.
    title: str | None = None


@dataclass
class Record:
    source: str
    id: str | None = None
    text: str | None = None
    error: str | None = None
    position: int | None = None  # input position, kept only while several processes share the work


def decode_bytes(raw: bytes) -> str:
    """UTF-8 (with or without BOM), else GB18030, the encodings Chinese portals publish in."""
    for enc in ENCODINGS:
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise UnicodeDecodeError("utf-8/gb18030", raw[:1], 0, 1, "neither UTF-8 nor GB18030")


def _read_txt(path: Path) -> Record:
    try:
        return Record(str(path), path.stem, decode_bytes(path.read_bytes()))
    except (OSError, UnicodeDecodeError) as err:
        return Record(str(path), path.stem, error=f"unreadable: {err}")


def _open_text(path: Path):
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    head = raw.peek(65536)[:65536] if hasattr(raw, "peek") else b""
    encoding = "utf-8-sig"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut at the end of the sample
            encoding = "gb18030"
    import io

    # Undecodable bytes become lone surrogates, reported per row (see _UNDECODED), not a stop.
    return io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline="")


def _table_kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return suffixes[-1] if suffixes else ""


def _read_jsonl(path: Path, cols: Columns) -> Iterator[Record]:
    # Lines are decoded one by one, so one undecodable line is reported and the rest still read.
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            source = f"{path}:{number}"
            try:
                line = decode_bytes(raw)
            except UnicodeDecodeError:
                yield Record(source, error=f"line {number}: neither UTF-8 nor GB18030")
                continue
            if line.strip():
                yield _json_record(line, source, cols)


def _json_record(line: str, source: str, cols: Columns) -> Record:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return Record(source, error=f"malformed JSON ({err.msg} at column {err.colno})")
    if not isinstance(row, dict):
        return Record(source, error="expected a JSON object")
    return _row_record(row, source, cols)


def _row_record(row: dict, source: str, cols: Columns) -> Record:
    ident = row.get(cols.id)
    ident = None if ident is None else str(ident)
    if cols.text not in row:
        return Record(source, ident, error=f"no {cols.text!r} column (use --text-column)")
    text = row[cols.text]
    if not isinstance(text, str):
        return Record(source, ident, error=f"{cols.text!r} is {type(text).__name__}, not text")
    if _UNDECODED.search(text):
        return Record(source, ident, error="undecodable bytes (neither UTF-8 nor GB18030)")
    title = row.get(cols.title) if cols.title else None
    if isinstance(title, str) and title.strip():
        text = f"{title}\n{text}"  # the model was trained with the title before the body
    return Record(source, ident, text)


def _read_csv(path: Path, cols: Columns) -> Iterator[Record]:
    csv.field_size_limit(sys.maxsize)
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or cols.text not in reader.fieldnames:
            yield Record(
                str(path), error=f"no {cols.text!r} column in the header {reader.fieldnames} (use --text-column)"
            )
            return
        for number, row in enumerate(reader, 2):
            yield _row_record(row, f"{path}:{number}", cols)


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
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".txt")
        if not files:
            yield Record(str(path), error="folder holds no .txt files")
        yield from (_read_txt(p) for p in files)
    elif not path.is_file():
        yield Record(str(path), error="no such file or folder")
    elif kind in (".jsonl", ".json"):
        yield from _read_jsonl(path, cols)
    elif kind == ".csv":
        yield from _read_csv(path, cols)
    elif kind == ".parquet":
        yield from _read_parquet(path, cols)
    else:
        yield _read_txt(path)


def _done_sources(output: Path) -> set[str]:
    """Sources already in an output file; a last line cut short by a crash is removed first."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(output, "r+b") as fh:
            fh.truncate(keep)
    done = set()
    for line in data[:keep].splitlines():
        try:
            done.add(json.loads(line)["source"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
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
    evidence: bool = False
    progress: bool = True


def predict_files(
    inputs: list[str], model: str, output: str | Path, errors: str | Path | None = None, **settings
) -> dict:
    """Predict every document of ``inputs`` into JSONL ``output``; unreadable ones go to ``errors``.

    ``settings`` are the fields of ``Job`` (batch_size, top_k, long_doc, resume, text_column, ...). Under
    ``accelerate launch`` (WORLD_SIZE > 1) each process takes every n-th document and writes its own part;
    the first process then merges the parts into ``output`` in input order.
    """
    job = Job(model=model, **settings)
    output = Path(output)
    errors = Path(errors) if errors else output.with_name(output.stem + ".errors.jsonl")
    output.parent.mkdir(parents=True, exist_ok=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _predict_shard(inputs, job, output, errors, 0, 1)
    import dataclasses

    import torch
    from accelerate import PartialState

    # Without CUDA the processes run on the CPU and talk over gloo.
    state = PartialState(cpu=not torch.cuda.is_available())
    part = output.with_name(f"{output.name}.part{state.process_index}")
    part_errors = errors.with_name(f"{errors.name}.part{state.process_index}")
    job = dataclasses.replace(job, progress=job.progress and state.is_main_process)
    counts = _predict_shard(inputs, job, part, part_errors, state.process_index, world)
    state.wait_for_everyone()
    if state.is_main_process:
        _merge_parts(output, world)
        _merge_parts(errors, world)
    state.wait_for_everyone()
    return {**counts, "output": str(output), "errors_file": str(errors), "process": state.process_index}


def _merge_parts(target: Path, world: int) -> None:
    """Join the processes' parts in input order (each line carries its input position) and drop them."""
    from govtopic.fsutil import atomic_write_text

    rows = []
    for rank in range(world):
        part = target.with_name(f"{target.name}.part{rank}")
        if part.exists():
            rows += [json.loads(x) for x in part.read_text(encoding="utf-8").splitlines() if x.strip()]
    rows.sort(key=lambda r: r.pop("position"))
    atomic_write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for rank in range(world):
        target.with_name(f"{target.name}.part{rank}").unlink(missing_ok=True)


def _predict_shard(inputs: list[str], job: Job, output: Path, errors: Path, rank: int, world: int) -> dict:
    """This process's share (every ``world``-th document from ``rank``), appended to ``output``."""
    from govtopic.predict import get_classifier

    if not job.resume:
        output.unlink(missing_ok=True)
        errors.unlink(missing_ok=True)
    done = _done_sources(output) | _done_sources(errors)
    clf = get_classifier(job.model)
    counts = {"predicted": 0, "skipped_done": 0, "errors": 0}
    started = time.time()
    bar = _bar(job.progress)
    title = (getattr(clf.model.config, "govtopic", None) or {}).get("title_column")
    columns = Columns(job.text_column, job.id_column, title)
    with open(output, "a", encoding="utf-8") as out, open(errors, "a", encoding="utf-8") as err:
        pending: list[Record] = []
        for position, rec in enumerate(iter_records(inputs, columns)):
            if position % world != rank:
                continue
            rec.position = position if world > 1 else None
            if rec.source in done:
                counts["skipped_done"] += 1
                continue
            if rec.error:
                err.write(json.dumps(_error_row(rec), ensure_ascii=False) + "\n")
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
    counts["output"], counts["errors_file"] = str(output), str(errors)
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
        [r.text for r in pending],
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
        lines.append(json.dumps(row, ensure_ascii=False))
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
