"""Building a classifier for training and loading a model folder safely for inference.

Only safetensors weights are loaded unless pickle is explicitly allowed, and remote code is never run.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
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
            "loaded; govtopic's commands read safetensors only. If you trust the folder, convert it once: "
            f'python -c "from transformers import AutoModelForSequenceClassification as M; '
            f"M.from_pretrained('{path}', use_safetensors=False).save_pretrained('{path}', "
            'safe_serialization=True)" (or, in Python, TopicClassifier(folder, allow_pickle=True); in a training '
            "config, model.allow_pickle: true)."
        )
    if not has_safe and not has_pickle:
        raise ModelLoadError(f"{path} has no weights file (model.safetensors); the folder is incomplete")


def check_model_path(name_or_path: str, allow_pickle: bool = False) -> None:
    """Before loading: a local model folder must exist, be a folder, and hold config.json and weights this
    loader may read; a Hub id (``name`` or ``org/name``) is left to the download. Raises ``ModelLoadError``.

    Example:
        >>> check_model_path("runs/quickstart/model")  # nothing: the folder can be loaded
    """
    if Path(name_or_path).exists() or looks_local(name_or_path):
        check_model_folder(name_or_path, allow_pickle)


def check_model_folder(path: str | Path, allow_pickle: bool = False, need_weights: bool = True) -> None:
    """A local model folder must exist, be a folder and hold config.json (and, with ``need_weights``, weights
    this loader may read). Raises ``ModelLoadError`` naming the problem.

    Example:
        >>> check_model_folder("runs/quickstart/model", need_weights=False)  # nothing: config.json is there
    """
    local = Path(path)
    if not local.exists():
        raise ModelLoadError(f"model folder {path} does not exist")
    if not local.is_dir():
        raise ModelLoadError(f"{local} is a file; pass the model folder that holds config.json")
    _check_local_folder(local, allow_pickle, need_weights)


def looks_local(name_or_path: str) -> bool:
    """A path rather than a Hub id (``name`` or ``org/name``): it starts with ``.``, ``/`` or ``~``, or has more
    than one ``/``."""
    return name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1


def check_model_sources(cfg: ModelConfig) -> None:
    """Before any work: ``model.name_or_path`` and ``model.tokenizer``, when they are paths, must be folders.

    Raises ``ModelLoadError`` naming the setting; a Hub id is left to the download (offline: a clear error then).
    """
    for setting, value in (("model.name_or_path", cfg.name_or_path), ("model.tokenizer", cfg.tokenizer)):
        if value and looks_local(value) and not Path(value).expanduser().is_dir():
            state = "is a file, not a folder" if Path(value).expanduser().exists() else "does not exist"
            raise ModelLoadError(
                f"{setting}: {value} {state} (paths are read from {Path.cwd()}); point it at a model or tokenizer "
                "folder, or give a Hub id such as bert-base-chinese"
            )


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


def _key_list(keys: list[str], shown: int = 4) -> str:
    """A few tensor names, and for long lists how many there are under each top-level module."""
    names = ", ".join(keys[:shown])
    if len(keys) <= shown:
        return names
    modules = Counter(k.split(".", 1)[0] for k in keys)
    spread = ", ".join(f"{n} under {m}." for m, n in modules.most_common())
    return f"{names} and {len(keys) - shown} more; {spread}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _check_loading_info(model, info: dict, source: str) -> None:
    """Refuse weights that do not fill the architecture exactly. transformers would fill a missing tensor with
    random values (a different answer on every load) and drop an unexpected one without a word."""
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or ())
    problems = [
        f"{_count(len(keys), 'tensor')} {what} ({_key_list(keys)})"
        for keys, what in (
            (missing, "that the architecture needs are missing"),
            (unexpected, "in the weights are unexpected (the architecture has no place for them)"),
            (mismatched, "have another shape than config.json says"),
        )
        if keys
    ]
    problems += [str(m) for m in info.get("error_msgs") or ()]
    if problems:
        raise ModelLoadError(
            f"{source}: the weights do not match config.json ({model.config.model_type}, "
            f"{type(model).__name__}): " + "; ".join(problems) + ". The folder is incomplete, or its "
            "config.json belongs to another model; copy it again or train it again with `govtopic train`."
        )


def _check_finite(model, source: str) -> None:
    """NaN or infinite weights give NaN scores for every document: refuse them at load time."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    bad = [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelLoadError(
            f"{source}: {_count(len(bad), 'weight tensor')} hold values that are not finite (NaN or infinite): "
            f"{_key_list(bad)}. Training diverged or the file is damaged; train again (a lower "
            "train.learning_rate, or train.precision: fp32) or copy the folder again."
        )


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
    check_model_path(name_or_path, allow_pickle)
    _refuse_language_model(local)
    device = resolve_device(device)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            revision=revision,
            use_safetensors=not allow_pickle,
            trust_remote_code=False,
            attn_implementation="sdpa",
            output_loading_info=True,
        )
    except ModelLoadError:
        raise
    except Exception as err:  # safetensors/transformers raise many types for a damaged file
        if local.is_dir():
            _explain_damaged_folder(local)
        raise ModelLoadError(
            f"could not load weights from {name_or_path}: {type(err).__name__}: {err}. The weights file "
            "may be truncated or from another architecture; copy or train the model again."
        ) from err
    _check_loading_info(model, info, name_or_path)
    _check_finite(model, name_or_path)
    _check_labels(model, name_or_path)
    tokenizer = load_tokenizer(name_or_path, revision)
    _check_vocabulary(tokenizer, model, name_or_path)
    model.to(device).eval()
    return model, tokenizer


def _refuse_language_model(folder: Path) -> None:
    """A folder ``govtopic pretrain`` wrote (a masked-language model) has no classifier: say to fine-tune it,
    rather than that its weights do not match."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a Hub id, or a damaged file: the loader's own checks name it
    kinds = [
        a
        for a in config.get("architectures") or []
        if isinstance(a, str) and a.endswith(("ForMaskedLM", "ForPreTraining"))
    ]
    if kinds and not config.get("govtopic"):
        raise ModelLoadError(
            f"{folder} is a pre-trained language model ({kinds[0]}), not a topic classifier: fine-tune it first "
            f"(govtopic train CONFIG model.name_or_path={folder} model.from_scratch=false) and use the model folder "
            "that training writes"
        )


def resolve_device(device: str | torch.device | None, option: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` this machine can run on (None: CUDA when available, else the CPU).

    Raises ``ValueError`` naming ``option`` (``--device`` on the command line) and the fix for a name torch does
    not know, the meta device, or CUDA/MPS that this torch or machine lacks.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None or device == "":
        return default_device()
    fix = f"use {option} cpu, or leave {option} out (CUDA when available, else the CPU)"
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"{option} {device!r} is not a device torch knows: expected cpu, cuda, cuda:N or mps"
        ) from None
    if chosen.type == "meta":  # tensors without data: every prediction would fail
        raise ValueError(f"{option} {device}: the meta device holds no weights; {fix}")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{option} {device}: {why}; {fix}")
        count = torch.cuda.device_count()
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(f"{option} {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return chosen
    backend = torch.backends.mps if chosen.type == "mps" else getattr(torch, chosen.type, None)
    if hasattr(backend, "is_available") and not backend.is_available():
        raise ValueError(f"{option} {device}: {chosen.type} is not available on this machine; {fix}")
    return chosen


def _explain_damaged_folder(folder: Path) -> None:
    """Raise a ModelLoadError naming what is wrong in ``folder`` when it can be told: a config.json that is not
    JSON, or weights whose shapes disagree with config.json (a label or a layer size edited by hand)."""
    import json

    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(
            f"{config_file} is not a readable JSON file ({err}); the folder is damaged: copy it again, or train "
            "the model again"
        ) from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelLoadError(
            f"{folder}: its config.json is not a model's configuration (no model_type); pass the model folder "
            "`govtopic train` wrote (RUN/model)"
        )
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        with safe_open(str(weights), framework="pt") as fh:
            stored = {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}
        with torch.device("meta"):
            expected = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(folder))
    except Exception:  # the weights themselves are damaged: the caller's message says so
        return
    differ = []
    for name, param in expected.state_dict().items():
        for key in (name, name.split(".", 1)[-1]):
            if key in stored and stored[key] != tuple(param.shape):
                differ.append(f"{key}: weights {list(stored[key])}, config.json {list(param.shape)}")
                break
    if differ:
        labels = len(config.get("id2label") or {})
        raise ModelLoadError(
            f"the weights in {weights} do not fit {config_file} ({_count(len(differ), 'tensor')}: "
            f"{'; '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}). config.json names {labels} labels; "
            "was it edited by hand, or copied from another model? Restore the folder's own config.json"
        )


def _check_vocabulary(tokenizer, model, source: str) -> None:
    """The tokenizer must cover the model's embeddings: a folder missing tokenizer.json (or vocab.txt) loads
    an empty vocabulary in transformers 5, and every document would then read as unknown characters."""
    size, embeddings = len(tokenizer), model.config.vocab_size
    if size > embeddings or size < 0.9 * embeddings:
        raise ModelLoadError(
            f"the tokenizer in {source} has {size:,} tokens but the model's embeddings {embeddings:,}: its "
            "tokenizer.json / vocab.txt is missing, damaged or from another model. Copy the whole model folder "
            "again (the files written beside model.safetensors belong together)"
        )


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
