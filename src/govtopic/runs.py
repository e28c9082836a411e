"""Owning a run folder: ``govtopic train`` writes only into a folder it made, and resumes only its own run.

A run folder (``output_dir``) holds ``checkpoints/``, ``model/`` and ``eval/``, and a marker file,
``.govtopic-run.json``, written when govtopic makes the folder. The marker records the run's settings: the
resolved config without the fields that cannot change the trained model (logging, checkpoint keeping,
resuming, reports), with every data file replaced by the sha256 of its bytes. A later ``govtopic train``
into the same folder

- resumes when the settings are the same;
- is refused when they differ and the folder holds results (checkpoints, model, reports), with the choice of a
  new output_dir or ``--overwrite`` (``train.overwrite: true``), which deletes this folder's checkpoints/,
  model/ and eval/ and starts from step 0;
- is refused for an existing, non-empty folder without the marker: govtopic never writes into or deletes a
  folder it did not make.

Every data file is checked to exist before the folder is touched, so a run that fails on a missing file leaves
the folder as it was.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from govtopic import __version__
from govtopic.config import Config
from govtopic.data import DataError
from govtopic.fsutil import atomic_write_text
from govtopic.record import CONFIG_FILE

logger = logging.getLogger(__name__)

MARKER = ".govtopic-run.json"
# What a run writes and --overwrite deletes; nothing else in the folder is touched.
RESULTS = ("checkpoints", "model", "model.partial", "eval")
# Settings that cannot change the trained weights: a rerun that changes only these resumes. Sections end in ".".
IGNORED = (
    "output_dir",
    "train.resume",
    "train.overwrite",
    "train.evaluate_after",
    "train.logging_steps",
    "train.save_steps",
    "train.save_total_limit",
    "train.dataloader_num_workers",
    "train.report_to",
    # Calibration and reports are redone from the final checkpoint by every run; pre-training is another command.
    "eval.",
    "pretrain.",
)
# Settings under data that name a file read in training (at any depth, e.g. data.sources[0].file).
FILE_SETTINGS = ("train_file", "test_file", "file", "taxonomy", "label_map")
# Changed settings named in a refusal.
_SHOWN_CHANGES = 6


class RunFolderError(ValueError):
    """An output_dir that this run may not write into; the message names the folder and the choices."""


def prepare(cfg: Config, main: bool = True, command: str = "train") -> Path:
    """Make ``cfg.output_dir`` this run's folder, or refuse, before anything in it is changed.

    Checks that every data file exists, then creates the folder (with its marker), adopts it when it is empty,
    keeps it when its marker records the same settings, and clears its results first when
    ``cfg.train.overwrite`` is set. Processes other than the main one (``main=False``, after it) only check.

    Args:
        cfg: the run's config.
        main: False in processes other than the first (they only check, after it).
        command: ``train`` or ``pretrain``: which settings decide the run (``fingerprint``), and what the marker
            says made the folder.

    Example:
        >>> run_dir = prepare(load_config("configs/quickstart.yaml"))
        >>> (run_dir / MARKER).is_file()
        True
    """
    run_dir = Path(cfg.output_dir)
    settings = fingerprint(cfg, command)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"output_dir {run_dir} is a file; set output_dir to a folder (e.g. output_dir=runs/new)")
    recorded = _read_marker(run_dir)
    if recorded is None and _is_nonempty(run_dir):
        _refuse_foreign(run_dir, cfg.train.overwrite)
    if recorded is not None and recorded.get("settings") != settings and not cfg.train.overwrite:
        if _has_results(run_dir):
            _refuse_changed(run_dir, recorded.get("settings") or {}, settings)
        logger.info("%s holds no results yet: its settings are replaced by this run's", run_dir)
    if not main:
        return run_dir
    if cfg.train.overwrite and _has_results(run_dir):
        _clear_results(run_dir)
    _write_marker(run_dir, settings, recorded, command)
    return run_dir


# ---------------------------------------------------------------- the run's settings
def data_files(cfg: Config) -> dict[str, Path]:
    """Each file-naming data setting (dotted path) and its file; a DataError lists every one that is missing."""
    found: dict[str, Path] = {}
    missing = []
    base = Path(cfg.data.taxonomy).parent if cfg.data.taxonomy else None
    for path, value in _file_settings(_flatten(cfg.to_dict()["data"], "data")):
        file = Path(value)
        if not file.exists() and not file.is_absolute() and base is not None and path.endswith("label_map"):
            file = base / file  # a label map may be named relative to the taxonomy's folder
        if file.is_file():
            found[path] = file
        else:
            missing.append(f"{path}: {value} " + ("is a folder, not a file" if file.is_dir() else "does not exist"))
    if not getattr(cfg.data, "train_file", None) and not getattr(cfg.data, "sources", None):
        missing.append("data.train_file: not set; point it at a JSONL, CSV or Parquet file of labelled documents")
    if missing:
        raise DataError(
            "data files are missing (nothing was written to the run folder):\n  - " + "\n  - ".join(missing) + "\n"
            "Fix the path in the config or on the command line (e.g. data.train_file=data/docs.jsonl)."
        )
    return found


def fingerprint(cfg: Config, command: str = "train") -> dict[str, Any]:
    """The settings that decide the trained model, flat and dotted, each data file as the sha256 of its bytes.

    For ``pretrain`` these are the pre-training corpus (each of ``pretrain.files``, or ``data.train_file``),
    the columns it is read by, ``pretrain.*``, ``normalize.*``, ``model.*`` and ``train.*``; labels, taxonomy
    and evaluation settings do not enter a masked-language model."""
    flat = _flatten(cfg.to_dict(), "")
    if command == "pretrain":
        files = corpus_files(cfg)
        ignored = tuple(i for i in IGNORED if i != "pretrain.") + ("long_doc.", "data.")
        kept = {f"data.{c}" for c in ("text_column", "title_column", "split_column")}
    else:
        files, ignored, kept = data_files(cfg), IGNORED, set()
    settings = {
        k: v
        for k, v in flat.items()
        if k in kept or not any(k == i or (i.endswith(".") and k.startswith(i)) for i in ignored)
    }
    for path, file in files.items():
        settings[path] = f"sha256:{file_sha256(file)}" if file.is_file() else f"listing:{_listing_hash(file)}"
    return settings


def corpus_files(cfg: Config) -> dict[str, Path]:
    """The files and folders ``govtopic pretrain`` reads, by dotted setting; a DataError lists every missing
    one before the run folder is touched."""
    named = {f"pretrain.files[{i}]": f for i, f in enumerate(cfg.pretrain.files)} or (
        {"data.train_file": cfg.data.train_file} if cfg.data.train_file else {}
    )
    if not named:
        raise DataError(
            "nothing to pre-train on (nothing was written to the run folder): set pretrain.files to .txt files, "
            "folders of them or JSONL/CSV/Parquet tables (or data.train_file)"
        )
    missing = [f"{key}: {value} does not exist" for key, value in named.items() if not Path(value).exists()]
    if missing:
        raise DataError(
            "pre-training files are missing (nothing was written to the run folder):\n  - "
            + "\n  - ".join(missing)
            + "\nFix the path in the config or on the command line (e.g. pretrain.files=[corpus/])."
        )
    return {key: Path(value) for key, value in named.items()}


def _listing_hash(folder: Path) -> str:
    """A folder's files by relative path, size and modification time: cheap for a corpus of many files, and
    changed by any file added, removed or rewritten."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        info = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def data_hashes(cfg: Config) -> dict[str, str]:
    """The sha256 of every data file the config names, by its dotted setting (as the run marker keeps them).

    Example:
        >>> data_hashes(load_config("configs/quickstart.yaml"))
        {'data.train_file': '3f5c...', 'data.taxonomy': '9a01...', 'data.label_map': 'c2d4...'}
    """
    return {path: file_sha256(file) for path, file in data_files(cfg).items()}


def git_commit(folder: str | Path | None = None) -> str | None:
    """The commit checked out in ``folder`` (default: the working directory), with ``-dirty`` when tracked
    files have changes; None outside a git checkout or without git.

    Example:
        >>> git_commit()
        '1c9e2f0a7b...'
    """
    import subprocess

    where = Path(folder or Path.cwd())
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if head and status else head or None


def _flatten(values: Any, prefix: str) -> dict[str, Any]:
    """Nested mappings and lists of mappings as {dotted path: value}; other values are kept whole."""
    if isinstance(values, dict) and values:
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
        out = {}
        for i, value in enumerate(values):
            out.update(_flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: values}


def _file_settings(flat: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (path, value)
        for path, value in flat.items()
        if isinstance(value, str) and path.rsplit(".", 1)[-1] in FILE_SETTINGS
    ]


def file_sha256(path: Path) -> str:
    """The file's sha256; a run asks for it twice (the marker, then the model record), so it is read once for
    as long as the file keeps its size and modification time."""
    info = path.stat()
    return _sha256_of(str(path.resolve()), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- the folder
def _read_marker(run_dir: Path) -> dict | None:
    path = run_dir / MARKER
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # govtopic's folder, but what it held is unknown: treated as other settings
    return recorded if isinstance(recorded, dict) else {}


def _write_marker(run_dir: Path, settings: dict[str, Any], recorded: dict | None, command: str = "train") -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    same_run = bool(recorded) and recorded.get("settings") == settings
    marker = {
        "made_by": f"govtopic {command}",
        "version": __version__,
        # When this run's settings were first recorded here; "updated" is the latest start.
        "created": recorded.get("created", now) if same_run else now,
        "updated": now,
        "settings": settings,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / MARKER, json.dumps(marker, ensure_ascii=False, indent=1, default=str) + "\n")


def _is_nonempty(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(run_dir.iterdir())


def _has_results(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in RESULTS)


def _clear_results(run_dir: Path) -> None:
    for name in RESULTS:
        target = run_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    logger.info("train.overwrite: deleted %s of %s", ", ".join(f"{n}/" for n in RESULTS), run_dir)


def _listing(run_dir: Path, shown: int = 5) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir())
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _refuse_foreign(run_dir: Path, overwrite: bool) -> None:
    """A non-empty folder without the marker: refused, unless it is an older govtopic run and overwrite is set."""
    older_run = (run_dir / CONFIG_FILE).is_file() and not (run_dir / "config.json").is_file()
    if older_run and overwrite:
        return
    if older_run:
        raise RunFolderError(
            f"output_dir {run_dir} looks like a run folder of an older govtopic (it has govtopic_config.yaml but "
            f"no {MARKER}), so whether its checkpoints belong to this config is unknown. Choose a new output_dir "
            f"(e.g. output_dir={run_dir}-2), or rerun with --overwrite (train.overwrite=true) to delete its "
            "checkpoints/, model/ and eval/ and train from the start."
        )
    raise RunFolderError(
        f"output_dir {run_dir} already exists and holds files govtopic did not make ({_listing(run_dir)}; "
        f"no {MARKER}). govtopic never writes into or deletes such a folder, even with --overwrite. Choose a new "
        f"or empty output_dir (e.g. output_dir={run_dir}-govtopic), or move the folder away."
    )


def _refuse_changed(run_dir: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    changes = [_change(key, old.get(key, "(not set)"), new.get(key, "(not set)")) for key in _changed(old, new)]
    shown = "; ".join(changes[:_SHOWN_CHANGES]) if old else f"its {MARKER} cannot be read"
    if old and len(changes) > _SHOWN_CHANGES:
        shown += f"; and {len(changes) - _SHOWN_CHANGES} more"
    raise RunFolderError(
        f"output_dir {run_dir} holds a run with other settings or data ({shown}). "
        "Resuming it would continue that run and describe the result as this one. Choose a new output_dir "
        f"(e.g. output_dir={run_dir}-2), or rerun with --overwrite (train.overwrite=true) to delete its "
        "checkpoints/, model/ and eval/ and train from the start."
    )


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [key for key in sorted(set(old) | set(new)) if old.get(key, "(not set)") != new.get(key, "(not set)")]


def _change(key: str, old: Any, new: Any) -> str:
    if str(old).startswith("sha256:") or str(new).startswith("sha256:"):
        return f"{key}: its contents changed"
    return f"{key}: {_brief(old)} -> {_brief(new)}"


def _brief(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
