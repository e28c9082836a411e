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

# Names that callers of earlier releases imported from here.
__all__ = [
    "Columns",
    "InputError",
    "Job",
    "Record",
    "check_inputs",
    "check_not_an_input",
    "iter_records",
    "predict_files",
]

logger = logging.getLogger(__name__)

# How messages name the two files a run writes, and the option that chooses each.
OUTPUT = ("output file", "--output")
ERRORS = ("errors file", "--errors")


_SURROGATE = re.compile("[\ud800-\udfff]")


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
        if reads(item, path):
            raise FileSafetyError(
                f"{what} {path} is also an input (read from {item}): writing it would destroy the documents "
                f"being read; choose a path outside the inputs ({option})"
            )


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


def source_key(source: str) -> str:
    """``source`` with its path made absolute and resolved, so that a rerun naming the inputs another way
    (``inbox``, ``./inbox/``, ``/home/me/inbox``, a link to it) recognises the documents already done.

    Example:
        >>> source_key("inbox/a.jsonl:3") == source_key(os.path.abspath("inbox/a.jsonl") + ":3")
        True
    """
    path, sep, tail = source.rpartition(":")
    if not (sep and tail.isdigit()):  # a .txt file: the source is its path
        path, tail = source, None
    key = os.path.realpath(path)
    return key if tail is None else f"{key}:{tail}"


def _done_sources(output: Path) -> set[str]:
    """Sources already in a govtopic output (as ``source_key``s); a last line cut short by a crash is removed
    first."""
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
            done.add(source_key(source))
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
        key = source_key(rec.source)
        if key in self.predicted:
            return True
        if key in self.failed:
            if rec.error:
                return True
            self.retried.add(key)
        return False


def _drop_errors(errors: Path, sources: set[str]) -> None:
    """Remove the lines of ``sources`` (``source_key``s) from a govtopic errors file (held by this run)."""
    lines = errors.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [x for x in lines if x.strip() and source_key(_source_of(x.encode()) or "") not in sources]
    atomic_write_text(errors, "".join(kept))


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
