"""Resuming a prediction run: which documents of an output file are done, and what changed since.

Each result line keeps its document's ``source`` (file and row) and a ``fingerprint`` of its content; a file
beside the output keeps the settings the results were predicted with. A rerun into the same output skips the
documents done and unchanged, predicts the changed, fixed and new ones, refuses other settings (the results
would be mixed), and at the end drops the lines that no longer hold (``Done.tidy``). Files govtopic did not
write are never cut or rewritten (``verify_results``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from govtopic.fsutil import FileSafetyError, atomic_write_text
from govtopic.inputs import Record

logger = logging.getLogger(__name__)

# The settings a result depends on: a resumed run must use the same ones, or its results would be mixed.
_SETTINGS = ("model", "top_k", "long_doc", "evidence", "text_column", "id_column", "title_column")


def _row_of(line: bytes) -> dict | None:
    """A result or error line govtopic wrote, read; None for anything else."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("source"), str) else None


def _source_of(line: bytes) -> str | None:
    """The ``source`` of a result or error line govtopic wrote; None for anything else."""
    row = _row_of(line)
    return None if row is None else row["source"]


def _not_ours(path: Path, number: int) -> FileSafetyError:
    return FileSafetyError(
        f"line {number} of {path} is not a govtopic result (a JSON object with a 'source'), so the file was "
        "changed after govtopic wrote it; govtopic will not append to it, cut it or delete it: choose another "
        "path, or delete the file yourself if you no longer need it"
    )


def verify_results(path: Path) -> None:
    """Refuse an output whose first line is not a govtopic result (a lone cut-short line is accepted)."""
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20)
    if first.endswith(b"\n") and first.strip() and _source_of(first) is None:
        raise _not_ours(path, 1)


def source_key(source: str, resolved: dict[str, str] | None = None) -> str:
    """``source`` with its path made absolute and resolved, so that a rerun naming the inputs another way
    (``inbox``, ``./inbox/``, ``/home/me/inbox``, a link to it) recognises the documents already done.

    Example:
        >>> source_key("inbox/a.jsonl:3") == source_key(os.path.abspath("inbox/a.jsonl") + ":3")
        True

    ``resolved`` caches the real paths of one run (every row of a table has the same file).
    """
    path, tail = split_source(source)
    if resolved is None:
        key = os.path.realpath(path)
    elif path in resolved:
        key = resolved[path]
    else:
        key = resolved[path] = os.path.realpath(path)
    return key if tail is None else f"{key}:{tail}"


def split_source(source: str) -> tuple[str, str | None]:
    """(file, row number) of a source; the number is None for a .txt file or a whole file."""
    path, sep, tail = source.rpartition(":")
    return (path, tail) if sep and tail.isdigit() else (source, None)


def fingerprint(rec: Record) -> str:
    """What a result line keeps of its document's content (title and text), so that a resumed run notices a
    document that changed since it was predicted."""
    content = f"{rec.title or ''}\0{rec.text or ''}".encode("utf-8", errors="surrogatepass")
    return hashlib.sha256(content).hexdigest()[:16]


def _done_rows(output: Path, resolved: dict[str, str] | None = None) -> list[tuple[str, str | None]]:
    """(``source_key``, content fingerprint or None) of every line of a govtopic output or errors file; a last
    line cut short by a crash is removed first."""
    if not output.exists():
        return []
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    rows = []
    for number, line in enumerate(data[:keep].splitlines(), 1):
        if line.strip():
            row = _row_of(line)
            if row is None:
                raise _not_ours(output, number)
            mark = row.get("fingerprint")
            rows.append((source_key(row["source"], resolved), mark if isinstance(mark, str) else None))
    if keep < len(data):
        with open(output, "r+b") as fh:
            fh.truncate(keep)
    return rows


def kept_after_interrupt(output: str | Path) -> str:
    """What an interrupted run kept in ``output`` and how to go on, for the command line's last message."""
    path = Path(output)
    if path.is_file() and path.stat().st_size > 0:
        return (
            f"the results finished so far are kept in {output}: run the same command again to predict the rest "
            "(documents already there are skipped)"
        )
    return f"no document was finished yet, so {output} was not written: run the same command again to start over"


def settings_file(output: Path) -> Path:
    """Where the settings that ``output``'s results were predicted with are kept, beside it."""
    return output.with_name(f".{output.name}.settings.json")


def check_settings_file(output: Path) -> None:
    """Before any work: the file beside ``output`` that will keep its settings is absent or govtopic's (a JSON
    object of the settings results depend on); a file of the user's of that name is never overwritten."""
    path = settings_file(output)
    if not path.exists():
        return
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = None
    if not (isinstance(kept, dict) and set(kept) <= {*_SETTINGS, "model_config"}):
        raise FileSafetyError(
            f"{path} exists and is not the record of settings govtopic keeps beside {output}, so govtopic will not "
            "overwrite it: move that file, or choose another --output"
        )


def run_settings(job) -> dict:
    """The settings the results of ``job`` (a ``govtopic.batch.Job``) depend on; a model folder is named by its
    real path and its config.json (which changes when the model is trained again)."""
    settings = {name: getattr(job, name) for name in _SETTINGS}
    model = Path(job.model)
    if model.is_dir():
        settings["model"] = os.path.realpath(model)
        config = model / "config.json"
        settings["model_config"] = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    return settings


def check_settings(output: Path, settings: dict) -> None:
    """Refuse to resume ``output`` with other settings than its results were predicted with, naming them."""
    if not output.exists() or output.stat().st_size == 0:
        return
    path = settings_file(output)
    if not path.exists():  # written by a release that kept no settings: resumed as it was then
        logger.warning(
            "%s was written by an earlier govtopic that kept no record of its settings: resuming it as before; "
            "if the model or options changed since, pass --no-resume to predict everything again",
            output,
        )
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    if not isinstance(before, dict):
        raise FileSafetyError(
            f"{path} (the settings {output} was predicted with) is unreadable, so a resumed run could mix results "
            f"of other settings; pass --no-resume to predict everything again into {output}, or choose another "
            "--output"
        )
    differ = settings_differences(before, settings)
    if differ:
        raise ValueError(
            f"{output} holds results predicted with other settings ({'; '.join(differ)}), and resuming would mix "
            f"them: run with the earlier settings to finish it, pass --no-resume to predict everything again into "
            f"{output}, or choose another --output"
        )


def settings_differences(before: dict, now: dict) -> list[str]:
    """How the settings results were made with (``before``) differ from ``now``, in words; empty: the same.

    Example:
        >>> settings_differences({"top_k": 1}, {"top_k": 3})
        ['top_k was 1, now 3']
    """
    out = []
    for name in sorted({*before, *now}):
        if before.get(name) == now.get(name):
            continue
        if name == "model_config":
            out.append("the model folder's config.json changed since (the model was trained again?)")
        else:
            out.append(f"{name} was {before.get(name)!r}, now {now.get(name)!r}")
    return out


@dataclass
class Done:
    """What earlier runs into the same output did, and what this run found changed since."""

    # Documents predicted (``source_key``s), each with its content's fingerprint (None: a line written by a
    # release that kept none, taken as current).
    predicted: dict[str, str | None]
    failed: set[str]  # documents reported unreadable
    repeated: bool = False  # a document has two result lines (a run that redid it was stopped): keep the last
    resolved: dict[str, str] = dataclasses.field(default_factory=dict)  # real paths, once per file
    seen: set[str] = dataclasses.field(default_factory=set)  # every document of this run's inputs
    broken: set[str] = dataclasses.field(default_factory=set)  # files that failed whole: their lines stay
    changed: set[str] = dataclasses.field(default_factory=set)  # predicted, but changed since: old line goes
    unreadable: set[str] = dataclasses.field(default_factory=set)  # predicted, but unreadable now: line goes
    retried: set[str] = dataclasses.field(default_factory=set)  # unreadable before, read now: error goes

    @classmethod
    def of(cls, output: Path, errors: Path) -> Done:
        resolved: dict[str, str] = {}
        predicted, repeated = {}, False
        for key, mark in _done_rows(output, resolved):
            repeated = repeated or key in predicted
            predicted[key] = mark
        failed = {key for key, _ in _done_rows(errors, resolved)}
        return cls(predicted, failed, repeated, resolved)

    def key(self, rec: Record) -> str:
        """``rec``'s ``source_key``, noted as read by this run."""
        key = source_key(rec.source, self.resolved)
        self.seen.add(key)
        if rec.error and split_source(key)[1] is None:  # a whole file (or folder) could not be read
            self.broken.add(key)
        return key

    def skip(self, rec: Record, key: str) -> bool:
        """Whether ``rec`` is done: predicted before and unchanged since, or still unreadable and reported.

        A document reported unreadable before that now reads (the user fixed the file) is predicted again, and
        so is one whose content changed since it was predicted (an edited input).
        """
        if key in self.predicted:
            before = self.predicted[key]
            if key in self.failed and not rec.error:  # fixed, then predicted by a run that was stopped
                self.retried.add(key)
            if before is None or (not rec.error and before == fingerprint(rec)):
                return True
            self.changed.add(key)
            if rec.error:
                self.unreadable.add(key)
                return key in self.failed
            return False
        if key in self.failed:
            if rec.error:
                return True
            self.retried.add(key)
        return False

    def tidy(self, output: Path, errors: Path) -> None:
        """After a finished run, remove the lines that no longer hold: results of documents that changed or
        are gone from a file read whole, and errors of documents and files that read now."""
        read = {split_source(key)[0] for key in self.seen} - self.broken
        folders = {
            str(parent) for path in {os.path.dirname(x) for x in read} for parent in (Path(path), *Path(path).parents)
        }

        def gone(key: str) -> bool:
            return key not in self.seen and (split_source(key)[0] in read or key in folders)

        stale = self.unreadable | {key for key in self.predicted if gone(key)}
        if stale or self.changed or self.repeated:
            _rewrite(output, stale, self.resolved)
        stale = self.retried | {key for key in self.failed if gone(key)}
        if stale:
            _rewrite(errors, stale, self.resolved)


def _rewrite(path: Path, stale: set[str], resolved: dict[str, str]) -> None:
    """Keep the last line of each document in a govtopic file held by this run, and none of ``stale``'s."""
    lines = [x for x in path.read_text(encoding="utf-8").splitlines(keepends=True) if x.strip()]
    keys = [source_key(_source_of(x.encode()) or "", resolved) for x in lines]
    last = {key: number for number, key in enumerate(keys)}
    kept = [x for number, (x, key) in enumerate(zip(lines, keys)) if key not in stale and last[key] == number]
    atomic_write_text(path, "".join(kept))
