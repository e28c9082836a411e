"""Prediction over files: reads documents (``govtopic.inputs``) in bounded memory, writes results as it goes,
resumes an interrupted run, and reports unreadable documents instead of stopping.

A run writes only files it may own (see ``govtopic.fsutil.claim_output``): never an input, never a file
another program wrote, never one another run is writing, never a device or pipe. Under several processes
(``accelerate launch``) the documents are sharded and merged back in input order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from govtopic.fsutil import (
    FileSafetyError,
    atomic_write_text,
    check_claimable,
    claim_output,
    release_output,
    same_file,
)
from govtopic.inputs import Columns, InputError, Record, check_inputs, iter_records, reads
from govtopic.resume import (
    Done,
    check_settings,
    check_settings_file,
    fingerprint,
    kept_after_interrupt,
    run_settings,
    settings_file,
    verify_results,
)

# Names that callers of earlier releases imported from here.
__all__ = [
    "Columns",
    "InputError",
    "Job",
    "Record",
    "check_inputs",
    "check_not_an_input",
    "iter_records",
    "kept_after_interrupt",
    "predict_files",
]

logger = logging.getLogger(__name__)

# How messages name the two files a run writes, and the option that chooses each.
OUTPUT = ("output file", "--output")
ERRORS = ("errors file", "--errors")


_SURROGATE = re.compile("[\ud800-\udfff]")
# Names that promise another format than the JSON lines govtopic writes: (suffix, what readers would expect).
_OTHER_FORMATS = {
    ".gz": "gzip",
    ".bz2": "bzip2",
    ".xz": "xz",
    ".zst": "zstandard",
    ".zip": "zip",
    ".csv": "CSV",
    ".tsv": "TSV",
    ".parquet": "Parquet",
    ".json": "JSON (one value)",
    ".xlsx": "Excel",
    ".xls": "Excel",
}


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
    check_settings_file(output)


def check_not_an_input(inputs: list[str], path: Path, what: str, option: str) -> None:
    """Refuse to write ``path`` when reading ``inputs`` reads it (links and hard links count), before any work.

    Example:
        >>> check_not_an_input(["inbox/"], Path("inbox/a.txt"), "output file", "--output")
        Traceback (most recent call last):
        FileSafetyError: output file inbox/a.txt is also an input (read from inbox/): ...
    """
    for item in inputs:
        if reads(item, path):
            raise FileSafetyError(
                f"{what} {path} is also an input (read from {item}): writing it would destroy the documents "
                f"being read; choose a path outside the inputs ({option})"
            )


def _file_path(path: str | Path, what: str, option: str) -> Path:
    if str(path).endswith(("/", os.sep)):  # Path() would drop the slash and write a file named like the folder
        raise FileSafetyError(f"{what} {path} names a folder; expected a file path ({option}), e.g. {path}out.jsonl")
    path = Path(path)
    fmt = _OTHER_FORMATS.get(path.suffix.lower())
    if fmt:
        stem = path.name
        while Path(stem).suffix.lower() in (*_OTHER_FORMATS, ".jsonl"):
            stem = Path(stem).stem
        raise ValueError(
            f"{what} {path} is named as a {fmt} file, but govtopic writes results as plain JSON lines; "
            f"name it .jsonl ({option}), e.g. {path.with_name(stem + '.jsonl')}"
        )
    return path


def _default_errors(output: Path) -> Path:
    return output.with_name(output.stem + ".errors.jsonl")


def json_line(row: dict) -> str:
    """``row`` as one JSON line that can always be written as UTF-8.

    A file name that is not UTF-8 (a GBK name from a Windows zip) reaches Python with lone surrogates, which
    UTF-8 cannot hold; they are written as ``\\udcXX`` escapes, which read back as the same name on resume.
    """
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(row, ensure_ascii=False))


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
            held.enter_context(claim_output(output, *OUTPUT, verify=verify_results))
            held.enter_context(claim_output(errors, *ERRORS, verify=verify_results))
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
        settings_file(part).unlink(missing_ok=True)
        release_output(part)


def _predict_shard(inputs: list[str], job: Job, output: Path, errors: Path, rank: int, world: int) -> dict:
    """This process's share (every ``world``-th document from ``rank``), appended to ``output``."""
    from govtopic.predict import get_classifier

    settings = run_settings(job)
    with (
        claim_output(output, *OUTPUT, verify=verify_results),
        claim_output(errors, *ERRORS, verify=verify_results),
    ):
        if not job.resume:  # both are govtopic's own files, held by this run: start them over
            os.truncate(output, 0)
            os.truncate(errors, 0)
        check_settings(output, settings)
        done = Done.of(output, errors)
        atomic_write_text(settings_file(output), json.dumps(settings, ensure_ascii=False, indent=1))
        with open(output, "a", encoding="utf-8") as out, open(errors, "a", encoding="utf-8") as err:
            clf = get_classifier(job.model)
            columns = Columns.from_options(job.text_column, job.id_column, job.title_column, clf.record)
            counts = _predict_records(iter_records(inputs, columns), clf, job, out, err, done, rank, world)
        done.tidy(output, errors)
    if done.changed:
        logger.warning(
            "%d document(s) changed since %s was written (an input was edited): predicted again, their old "
            "results removed",
            len(done.changed),
            output,
        )
    counts["output"], counts["errors_file"] = str(output), str(errors)
    return counts


def _predict_records(records: Iterator[Record], clf, job: Job, out, err, done: Done, rank: int, world: int) -> dict:
    counts = {"predicted": 0, "skipped_done": 0, "errors": 0}
    started = time.time()
    bar = _bar(job.progress)
    pending: list[Record] = []
    for position, rec in enumerate(records):
        key = done.key(rec)
        if position % world != rank:
            continue
        rec.position = position if world > 1 else None
        if done.skip(rec, key):
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
    counts["changed"] = len(done.changed)
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
        row = {"source": rec.source, "id": rec.id, **res, "fingerprint": fingerprint(rec)}
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
