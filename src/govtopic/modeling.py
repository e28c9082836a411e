"""Building a classifier for training and loading a model folder safely for inference.

Only safetensors weights are loaded unless pickle is explicitly allowed, and remote code is never run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from govtopic import pooling
from govtopic.config import ModelConfig

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


class ModelLoadError(RuntimeError):
    """A model folder or Hub id that cannot be used; the message says what is wrong and what to do."""


def _check_local_folder(path: Path, allow_pickle: bool, need_weights: bool = True) -> None:
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} has no config.json, so it is not a model folder. Train one with "
            "`govtopic train configs/quickstart.yaml`, or pass a Hub id such as bert-base-chinese."
        )
    if not need_weights:
        return
    has_safe = any((path / f).is_file() for f in SAFE_WEIGHTS)
    has_pickle = any((path / f).is_file() for f in PICKLE_WEIGHTS)
    if not has_safe and has_pickle and not allow_pickle:
        raise ModelLoadError(
            f"{path} holds only pickle weights (pytorch_model.bin), which can run arbitrary code when "
            "loaded. Convert them to safetensors, or, if you trust the folder, set model.allow_pickle: true "
            "(predict(..., allow_pickle=True))."
        )
    if not has_safe and not has_pickle:
        raise ModelLoadError(f"{path} has no weights file (model.safetensors); the folder is incomplete")


def load_tokenizer(name_or_path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not load a tokenizer from {name_or_path!r}: {err}. Offline, point model.tokenizer at a "
            "folder holding vocab.txt / tokenizer.json (e.g. ../shared/tokenizers/bert-base-chinese)."
        ) from err


def build_for_training(cfg: ModelConfig, label_names: list[str], max_length: int | None = None):
    """A sequence classifier with one output per label: pretrained weights, or random from a config."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    id2label = dict(enumerate(label_names))
    label2id = {v: k for k, v in id2label.items()}
    local = Path(cfg.name_or_path)
    if local.is_dir():
        _check_local_folder(local, cfg.allow_pickle, need_weights=not cfg.from_scratch)
    try:
        config = AutoConfig.from_pretrained(cfg.name_or_path, revision=cfg.revision, trust_remote_code=False)
    except OSError as err:
        raise ModelLoadError(
            f"could not load {cfg.name_or_path!r}: {err}. Without network access use a local folder "
            "(model.name_or_path) or model.from_scratch: true with a local config."
        ) from err
    config.num_labels = len(label_names)
    config.id2label, config.label2id = id2label, label2id
    config.problem_type = "single_label_classification"
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"):
        if getattr(cfg, name) is not None:
            setattr(config, name, getattr(cfg, name))
    config._attn_implementation = cfg.attn_implementation
    if cfg.from_scratch:
        # A govtopic classifier's config counts its pooling layer; a model built from it adds its own.
        pooling.drop_from_config(config, keep_layer_count=cfg.num_hidden_layers is not None)
    positions = getattr(config, "max_position_embeddings", None)
    if max_length and positions and max_length > positions:
        raise ValueError(
            f"long_doc.max_length {max_length} is more than the model's {positions} positions; "
            f"set long_doc.max_length to {positions} or less (longer documents are read in windows anyway)"
        )
    if cfg.from_scratch:
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=cfg.attn_implementation)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            cfg.name_or_path,
            config=config,
            revision=cfg.revision,
            use_safetensors=not cfg.allow_pickle,
            trust_remote_code=False,
            attn_implementation=cfg.attn_implementation,
        )
    if cfg.from_scratch and cfg.pooling == "cls":
        logger.warning(
            "training from scratch with [CLS] pooling: small models learn far faster with model.pooling: mean"
        )
    mean = cfg.pooling == "mean" or pooling.has_pooling_layer(model)
    if mean:
        try:
            pooling.add_pooling_layer(model)
        except pooling.PoolingError as err:
            raise ModelLoadError(str(err)) from err
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "model: %s, %.1fM parameters, %d labels, %s pooling",
        config.model_type,
        n_params / 1e6,
        len(label_names),
        "mean" if mean else "cls",
    )
    return model


def _check_labels(model, source: str) -> None:
    id2label = model.config.id2label
    n_out = model.config.num_labels
    head = getattr(model, "classifier", None)
    out_features = getattr(head, "out_features", n_out)
    if len(id2label) != out_features:
        raise ModelLoadError(
            f"{source}: config.json's id2label has {len(id2label)} labels but the classifier head has "
            f"{out_features} outputs; the folder is inconsistent. Retrain or fix id2label."
        )
    if all(str(v).startswith("LABEL_") for v in id2label.values()):
        raise ModelLoadError(
            f"{source} has no topic labels (id2label is {{0: 'LABEL_0', ...}}): it is a base model, not a "
            "govtopic classifier. Fine-tune it first with `govtopic train`."
        )


def load_for_inference(
    name_or_path: str, device: str | torch.device | None = None, allow_pickle: bool = False, revision: str | None = None
):
    """(model, tokenizer) from a model folder or Hub id, checked, in eval mode on ``device``."""
    from transformers import AutoModelForSequenceClassification

    local = Path(name_or_path)
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(f"{local} is a file; pass the model folder that holds config.json")
        _check_local_folder(local, allow_pickle)
    elif name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(f"model folder {name_or_path} does not exist")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            revision=revision,
            use_safetensors=not allow_pickle,
            trust_remote_code=False,
            attn_implementation="sdpa",
        )
    except ModelLoadError:
        raise
    except Exception as err:  # safetensors/transformers raise many types for a damaged file
        raise ModelLoadError(
            f"could not load weights from {name_or_path}: {type(err).__name__}: {err}. The weights file "
            "may be truncated or from another architecture; copy or train the model again."
        ) from err
    _check_labels(model, name_or_path)
    tokenizer = load_tokenizer(name_or_path, revision)
    device = torch.device(device) if device else default_device()
    model.to(device).eval()
    return model, tokenizer


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Half precision only where the hardware has it: this project's CPUs compute bf16 ~500x slower."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision in ("bf16", "auto") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if precision == "auto" else None
