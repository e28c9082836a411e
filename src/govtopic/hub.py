"""Publishing a model folder on the Hugging Face Hub (``govtopic push MODEL REPO_ID [--private]``).

The folder is checked first (its config.json, its govtopic record, its weights and its model card), so a
half-written or hand-edited folder is never published.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

from govtopic.modeling import ModelLoadError

logger = logging.getLogger(__name__)

# Written by training but not needed to use the model (the n-gram channel's files are needed and kept).
_IGNORED = ["*.partial", ".*", "__pycache__/*"]


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
    """Create ``repo_id`` on the Hub (if needed) and upload the checked model folder; returns the commit URL.

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
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        commit_message=f"Upload govtopic model from {folder.name}",
        ignore_patterns=_IGNORED,
    )
    return str(getattr(info, "commit_url", info))
