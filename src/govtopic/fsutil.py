"""Safe file handling: atomic writes, and output files that govtopic claims, locks and recognises as its own.

A crash never leaves a half-written file or folder that looks complete, and govtopic never appends to,
truncates or deletes a file it did not write: each output it writes has a sidecar ``.NAME.govtopic`` beside it,
which marks the file as govtopic's and is locked while a run writes it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: outputs are then not locked
    fcntl = None

logger = logging.getLogger(__name__)

MARKER_FORMAT = "govtopic-jsonl"
MARKER_VERSION = 1


class FileSafetyError(ValueError):
    """A path govtopic was asked to write is unsafe to write; the message says why and what to do instead."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports and configs are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_dir(staging: Path, target: Path) -> Path:
    """Move a finished ``staging`` folder to ``target``, replacing an older one only once the new one is in."""
    staging, target = Path(staging), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{int(time.time() * 1000)}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def sidecar(path: Path) -> Path:
    """The file beside ``path`` that marks it as written by govtopic and is locked while a run writes it."""
    return path.with_name(f".{path.name}.govtopic")


def check_writable_path(path: Path, what: str, option: str = "") -> None:
    """Refuse a path that cannot be a plain output file: a folder, a device, a pipe, or a path under a file.

    ``what`` names the file in messages ("output file"), ``option`` the setting that chooses it ("--output").
    Only metadata is read (``os.stat``): a device or pipe is never opened.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        _check_parent(path, what, option)
        return
    except NotADirectoryError:
        _check_parent(path, what, option)
        raise
    if stat.S_ISDIR(mode):
        example = "out.yaml" if "config" in what else "out.json" if "report" in what else "out.jsonl"
        raise FileSafetyError(f"{what} {path} is a folder; expected a file path{_via(option)}, e.g. {path}/{example}")
    if not stat.S_ISREG(mode):
        raise FileSafetyError(
            f"{what} {path} is not a regular file (it is a device, pipe or socket); govtopic writes only to "
            f"regular files: give a file path instead{_via(option)}"
        )
    if not os.access(path, os.W_OK):
        raise FileSafetyError(f"{what} {path} is read-only; make it writable or choose another path{_via(option)}")


def _via(option: str) -> str:
    return f" ({option})" if option else ""


def _check_parent(path: Path, what: str, option: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileSafetyError(
                    f"{what} {path} cannot be created: {parent} is a file, not a folder; choose another "
                    f"path{_via(option)}"
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise FileSafetyError(
                    f"{what} {path} cannot be created: the folder {parent} is read-only; choose another "
                    f"path{_via(option)}"
                )
            return


def identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` leads to, following links; None when there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths are one file: through links or hard links, or (not yet existing) by their real path."""
    ident = identity(a)
    if ident is not None and ident == identity(b):
        return True
    return os.path.realpath(a) == os.path.realpath(b)


def written_by_govtopic(path: Path) -> bool:
    """Whether ``path`` has the sidecar govtopic writes when it creates an output."""
    try:
        marker = json.loads(sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT and marker.get("file") == path.name


def check_claimable(path: Path, what: str, option: str = "") -> None:
    """Refuse ``path`` unless govtopic may write it: missing, empty, or an output govtopic wrote."""
    check_writable_path(path, what, option)
    if path.exists() and path.stat().st_size > 0 and not written_by_govtopic(path):
        raise FileSafetyError(
            f"{what} {path} exists and was not written by govtopic (there is no {sidecar(path).name} beside it), "
            f"so govtopic will not append to it, cut it or delete it: choose another path{_via(option)}, or "
            "delete the file yourself if you no longer need it"
        )


@contextmanager
def claim_output(
    path: Path, what: str, option: str = "", verify: Callable[[Path], None] | None = None
) -> Iterator[None]:
    """Hold ``path`` as a govtopic output for the duration: lock it, mark it as govtopic's, and create it.

    A second holder (another process) fails at once with a message naming the file. A file govtopic did not
    write is refused (an empty one is adopted). ``verify`` is called on an existing non-empty output before
    anything is changed, to refuse one whose content is no longer govtopic's. When the body fails, a file
    created here and still empty is removed.
    """
    check_claimable(path, what, option)
    path.parent.mkdir(parents=True, exist_ok=True)
    mark = sidecar(path)
    check_writable_path(mark, f"{what} marker", option)
    fd = os.open(mark, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        _lock(fd, path, what, option)
        check_claimable(path, what, option)  # again: another run may have changed it before we held the lock
        if verify is not None and path.exists() and path.stat().st_size > 0:
            verify(path)
        # The mark is in place before the file exists, so a crash never leaves an unmarked govtopic output.
        marker = {"format": MARKER_FORMAT, "version": MARKER_VERSION, "file": path.name, "pid": os.getpid()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(marker).encode("utf-8"), 0)
        os.fsync(fd)
        created = not path.exists()
        path.touch()
        try:
            yield
        except BaseException:
            if created and path.stat().st_size == 0:  # a run that failed before writing leaves nothing behind
                path.unlink(missing_ok=True)
            raise
    finally:
        os.close(fd)  # releases the lock; the sidecar stays, it marks the file as govtopic's


def _lock(fd: int, path: Path, what: str, option: str) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        try:
            holder = f" (process {json.loads(os.pread(fd, 4096, 0))['pid']})"
        except (OSError, ValueError, KeyError, TypeError):
            pass
        raise FileSafetyError(
            f"{what} {path} is being written by another govtopic run{holder}; wait for it to finish, or choose "
            f"another path{_via(option)}"
        ) from None
    except OSError as err:  # a file system without locks (some network mounts): write, but say so
        logger.warning("could not lock %s (%s): make sure no other govtopic run writes it at the same time", path, err)


def release_output(path: Path) -> None:
    """Remove the sidecar of a govtopic output that is gone (a merged part): call only once nobody holds it."""
    sidecar(path).unlink(missing_ok=True)


# A folder govtopic writes whole (a report, a review queue, an export) carries this file, so a later run knows
# the folder is its own and a folder of the user's files is never written into.
FOLDER_MARKER = ".govtopic-output.json"


def owns_folder(path: Path, kind: str) -> bool:
    """Whether ``path`` holds govtopic's marker for a folder of this ``kind``."""
    try:
        marker = json.loads((path / FOLDER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("kind") == kind


def mark_folder(path: Path, kind: str) -> None:
    atomic_write_text(path / FOLDER_MARKER, json.dumps({"kind": kind, "written_by": "govtopic"}) + "\n")


def check_folder_claimable(
    path: str | Path, kind: str, option: str = "", legacy: Callable[[Path], bool] | None = None
) -> None:
    """Raise what ``claim_folder`` would raise for ``path``, writing nothing: for a check before long work. A
    folder that cannot be written (read-only, or to be made under a file or a read-only folder) is refused too.

    Example:
        >>> check_folder_claimable("runs/x/review", "review queue", "--output")  # nothing: it may be claimed
    """
    path = Path(path)
    if not path.exists():  # a new folder: the nearest existing folder above it must take it
        _check_parent(path, f"{kind} folder", option)
        return
    if not path.is_dir():
        raise FileSafetyError(f"{path} is a file, not a folder: choose a folder{_via(option)}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise FileSafetyError(
            f"{kind} folder {path} is read-only; make it writable or choose another folder{_via(option)}"
        )
    if not owns_folder(path, kind):
        entries = sorted(p.name for p in path.iterdir())
        if entries and not (legacy is not None and legacy(path)):
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise FileSafetyError(
                f"folder {path} holds files govtopic did not write ({shown}), so govtopic will not write its "
                f"{kind} there: choose a new or empty folder{_via(option)}"
            )


def claim_folder(path: str | Path, kind: str, option: str = "", legacy: Callable[[Path], bool] | None = None) -> Path:
    """Make ``path`` a folder govtopic may write its ``kind`` of output into, or refuse it.

    A missing or empty folder is created and marked; a folder govtopic marked for the same kind is reused;
    ``legacy`` recognises such a folder written by an older govtopic (it is then marked). Anything else, e.g.
    a folder of the user's own files, is a ``FileSafetyError`` naming it and the fix: nothing in it is touched.

    Example:
        >>> claim_folder("runs/x/eval", "evaluation report", "--output")
        PosixPath('runs/x/eval')
    """
    path = Path(path)
    check_folder_claimable(path, kind, option, legacy)
    path.mkdir(parents=True, exist_ok=True)
    if not owns_folder(path, kind):
        mark_folder(path, kind)
    return path


def write_output_text(path: str | Path, text: str, what: str, option: str = "") -> Path:
    """Write a small govtopic output file (a report, a config) whole, only where ``claim_output`` allows: never
    over a file govtopic did not write. Call ``check_claimable`` first when the work before it is long."""
    path = Path(path)
    with claim_output(path, what, option):
        atomic_write_text(path, text)
    return path
