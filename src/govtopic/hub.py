"""Publishing a model folder on the Hugging Face Hub (``govtopic push MODEL REPO_ID [--private]``).

The folder is checked first (its config.json, its govtopic record, its weights and its model card), so a
half-written or hand-edited folder is never published. Only the model's own files are uploaded (``MODEL_FILES``):
predictions, an ONNX export or notes a user kept in the folder stay on this machine, and the log names them.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import logging
from pathlib import Path
from types import SimpleNamespace

from govtopic.modeling import ModelLoadError
from govtopic.record import MODEL_FILES

logger = logging.getLogger(__name__)

# Uploaded: the model's own files at the folder's top level (record.MODEL_FILES). Anything else a user put
# there (predictions, an ONNX export) is not part of the model and is not published.
# Never mentioned as left out: hidden files (govtopic's markers), half-written files, caches.
_UNREMARKABLE = (".*", "*.partial", "__pycache__")


def model_files(folder: str | Path) -> tuple[list[str], list[str]]:
    """(files that are the model, other entries) at the top level of ``folder``, each sorted by name; a folder
    in the second list ends in ``/``. Hidden files and ``*.partial`` leftovers are in neither."""
    kept, left_out = [], []
    for path in sorted(Path(folder).iterdir()):
        if any(fnmatch.fnmatchcase(path.name, pattern) for pattern in _UNREMARKABLE):
            continue
        if path.is_file() and any(fnmatch.fnmatchcase(path.name, pattern) for pattern in MODEL_FILES):
            kept.append(path.name)
        else:
            left_out.append(path.name + ("/" if path.is_dir() else ""))
    return kept, left_out


def check_model_folder(folder: str | Path) -> dict:
    """The checked govtopic record of a model folder (config.json's ``govtopic`` mapping, as a dict).

    Raises ModelLoadError naming the missing file or each invalid key and the fix.

    Example:
        >>> check_model_folder("runs/quickstart/model")["version"]
        '0.1.0'
    """
    from govtopic.record import ModelRecord

    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(
            f"{folder}: no config.json; expected a model folder written by `govtopic train` (RUN/model)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ModelLoadError(
            f"{config_path}: not valid JSON ({err}); train the model again with `govtopic train`"
        ) from err
    if not isinstance(config.get("govtopic"), dict):
        raise ModelLoadError(
            f"{config_path}: govtopic: the record is missing (config.json has no govtopic settings); this folder "
            "was not written by `govtopic train`. Train it with govtopic, or push it with huggingface_hub directly."
        )
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items() if str(k).isdigit()}
    record = ModelRecord.from_config(SimpleNamespace(govtopic=config["govtopic"], id2label=id2label), str(folder))
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"{folder}: no *.safetensors weights; the folder is incomplete, train it again")
    return record.to_dict()


def push(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create ``repo_id`` on the Hub (if needed) and upload the checked model folder's own files (``MODEL_FILES``;
    anything else in the folder is left out and named in the log); returns the commit URL.

    Raises ConnectionError when the Hub cannot be reached and PermissionError when it refuses the token, each
    saying what to check.

    Args:
        folder: a model folder written by ``govtopic train``.
        repo_id: ``user/name`` or ``organisation/name``.
        private: create the repository as private (an existing repository keeps its visibility).
        token: a Hub token (default: the one ``hf auth login`` stored, or ``HF_TOKEN``).

    Example:
        >>> push("runs/quickstart/model", "me/govtopic-small", private=True)
        'https://huggingface.co/me/govtopic-small/commit/...'
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    check_model_folder(folder)
    if not (folder / "README.md").is_file():
        logger.warning("%s has no README.md (model card): train with train.evaluate_after=true to write one", folder)
    files, left_out = model_files(folder)
    if left_out:
        logger.warning(
            "%s: not uploading %s (not part of the model; keep predictions and exports outside the model folder)",
            folder,
            ", ".join(left_out),
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"Upload govtopic model from {folder.name}",
            # Exact top-level names: a pattern such as *.safetensors would also match files in subfolders.
            allow_patterns=[glob.escape(name) for name in files],
        )
    except Exception as err:
        clear = _hub_error(err, api.endpoint, repo_id)
        if clear is None:
            raise
        raise clear from err
    logger.info("uploaded %s", ", ".join(files))
    return str(getattr(info, "commit_url", info))


def _hub_error(err: Exception, endpoint: str, repo_id: str) -> OSError | None:
    """A clear error for a Hub that cannot be reached or refuses the token; None for any other error."""
    # HTTPError: the base error of the HTTP library huggingface_hub uses (httpx or httpx2), raised for a refused
    # connection, a name that does not resolve or a timeout.
    from huggingface_hub.errors import HfHubHTTPError, HTTPError, LocalTokenNotFoundError

    login = "log in with `hf auth login` (or set HF_TOKEN) using a token with write access"
    if isinstance(err, LocalTokenNotFoundError):
        return PermissionError(f"pushing to {repo_id} needs a Hub token: {login}")
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            return PermissionError(f"the Hub at {endpoint} did not accept the token (401 Unauthorized): {login}")
        if status == 403:
            return PermissionError(
                f"the Hub at {endpoint} refused to let this token write to {repo_id} (403 Forbidden): check that "
                f"the namespace {repo_id.split('/')[0]!r} is yours or your organisation's, or {login}"
            )
        return None  # already an OSError with the server's message (a bad repository name, a conflict)
    if type(err).__name__ == "OfflineModeIsEnabled":
        return ConnectionError(f"cannot push to {endpoint}: offline mode is on (HF_HUB_OFFLINE); unset HF_HUB_OFFLINE")
    if isinstance(err, (HTTPError, ConnectionError, TimeoutError)):
        return ConnectionError(
            f"cannot reach the Hub at {endpoint} ({type(err).__name__}: {err}): check the network, HF_ENDPOINT, "
            "or `hf auth login`"
        )
    return None
