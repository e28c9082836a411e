"""Typed configuration: every default in one place, strict YAML loading, dotted overrides.

An experiment config lists only what differs from the defaults below. Unknown keys and values of the
wrong type are errors, reported all at once with their dotted paths, e.g.
``train.learning_rate: expected a float, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from govtopic.normalize import NormalizeConfig


class ConfigError(ValueError):
    """Raised with every problem found in a config, one per line."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s){where}:\n{lines}")


@dataclass
class ModelConfig:
    # Hub id or local folder. With from_scratch the folder/Hub id only supplies the architecture config.
    name_or_path: str = "bert-base-chinese"
    # Tokenizer folder or Hub id; None means the same as name_or_path.
    tokenizer: str | None = None
    # Initialise random weights from the config instead of loading pretrained weights.
    from_scratch: bool = False
    # Architecture overrides applied to the config (used with from_scratch; None keeps the config's value).
    num_hidden_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    # Hub revision (branch, tag or commit) to pin.
    revision: str | None = None
    # Pickle (.bin) weights can run arbitrary code when loaded: refused unless set.
    allow_pickle: bool = False
    # "sdpa" uses torch's fused attention kernels; "eager" is the reference implementation.
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # How the classifier reads a window. "cls": the [CLS] vector, as pretrained BERTs are fine-tuned.
    # "mean": the average of all token states, built from one fixed extra encoder layer so the folder stays a
    # plain BertForSequenceClassification (see govtopic/pooling.py); it learns far faster than "cls" from
    # random or lightly pre-trained weights (all the small CPU configs use it).
    pooling: Literal["cls", "mean"] = "cls"


@dataclass
class DataConfig:
    # JSONL, CSV or Parquet (optionally .gz). Required for training.
    train_file: str | None = None
    # Optional separate evaluation file; otherwise the test split of train_file is used.
    test_file: str | None = None
    text_column: str = "text"
    # Set to null when the data has no title column.
    title_column: str | None = "title"
    label_column: str = "label"
    # Rows with this column set to train/validation/test keep their split; otherwise a seeded stratified split.
    split_column: str | None = "split"
    prepend_title: bool = False
    # YAML file of the official taxonomy; labels outside it are an error naming the row.
    taxonomy: str | None = None
    # "full" keeps 一级\二级 labels; "l1" trains on the first level only.
    label_level: Literal["full", "l1"] = "full"
    # Fraction of the labelled rows held out for testing when there is no split column.
    test_fraction: float = 0.2
    # Fraction of the train split held out for validation when the split column has no validation rows.
    validation_from_train: float = 0.1
    # Classes with fewer training rows are dropped (with a count in the log), 1 keeps everything.
    min_class_count: int = 1
    # Cap on training rows (for smoke runs); None uses all.
    max_train_samples: int | None = None


@dataclass
class LongDocConfig:
    # head: first max_length tokens; head_tail: first head_tokens + last tokens;
    # chunks: overlapping windows over the whole document, logits pooled.
    strategy: Literal["head", "head_tail", "chunks"] = "chunks"
    # Tokens per window including [CLS] and [SEP].
    max_length: int = 512
    # head_tail: tokens kept from the start; the rest of the window comes from the end.
    head_tokens: int = 128
    # chunks: tokens shared by consecutive windows.
    stride: int = 64
    pooling: Literal["mean", "max"] = "mean"
    # chunks: at most this many windows per document at prediction time (spread evenly; reported when hit).
    max_windows: int = 64
    # chunks: at most this many windows per document during training (spread evenly).
    train_max_windows: int = 4


@dataclass
class TrainConfig:
    epochs: float = 3.0
    # Steps override epochs when set.
    max_steps: int | None = None
    learning_rate: float = 2.0e-5
    batch_size: int = 16
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    seed: int = 42
    # auto: bf16 on GPUs that support it, else fp16 on CUDA, fp32 on CPU (no bf16 hardware there).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Batches of similar length waste less compute on padding.
    group_by_length: bool = True
    logging_steps: int = 50
    # Checkpoints every this many steps (0: once per epoch).
    save_steps: int = 0
    save_total_limit: int = 2
    # Continue from the last checkpoint in output_dir when one exists.
    resume: bool = True
    # Evaluate the saved model on the test split after training.
    evaluate_after: bool = True
    dataloader_num_workers: int = 0
    # Label smoothing helps with noisy distant labels.
    label_smoothing: float = 0.0


@dataclass
class EvalConfig:
    # Train a TF-IDF + linear baseline on the same training split and print it beside the model.
    baseline: bool = True
    top_k: list[int] = field(default_factory=lambda: [1, 3, 5])
    batch_size: int = 64
    # Fit a temperature on the validation split and store it in the model folder.
    calibrate: bool = True


@dataclass
class PretrainConfig:
    # Unlabelled text for masked-language-model pre-training: .txt files, folders of them, or JSONL/CSV/
    # Parquet tables (their data.text_column). Empty means data.train_file, labelled and unlabelled rows alike.
    files: list[str] = field(default_factory=list)
    # Rows whose data.split_column holds one of these are left out, so test figures stay clean.
    exclude_splits: list[str] = field(default_factory=lambda: ["test"])
    # Tokens per training sequence (documents are cut into consecutive pieces of this length).
    max_length: int = 256
    mlm_probability: float = 0.15
    # Mask whole jieba words instead of single characters (Chinese whole-word masking).
    whole_word_mask: bool = False


@dataclass
class Config:
    # Where the model folder (and its checkpoints and reports) is written.
    output_dir: str = "runs/model"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    long_doc: LongDocConfig = field(default_factory=LongDocConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), allow_unicode=True, sort_keys=False), encoding="utf-8")


# ---------------------------------------------------------------- conversion
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    names = {int: "an integer", float: "a float", bool: "true or false", str: "a string"}
    return names.get(tp, "null" if tp is type(None) else getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Convert a YAML value to the declared type, appending a problem if it cannot be."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping of settings, got {value!r}")
            return tp()
        return _build(tp, value, path, problems)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            trial: list[str] = []
            out = _convert(value, arg, path, trial)
            if not trial:
                return out
        problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return None
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}{extra}")
        return choices[0]
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            value = [value]
        return [_convert(v, item_tp, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}:
            return value.lower() in {"true", "yes", "on", "1"}
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
    elif tp is float:
        # YAML 1.1 reads 2e-5 (no dot) as a string: accept it as the float it means.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return None


def _build(cls: type, values: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else "valid keys: " + ", ".join(names)
            problems.append(f"{path}: unknown key ({fix})")
            continue
        kwargs[key] = _convert(value, hints[key], path, problems)
    return cls(**kwargs)


def _check_values(cfg: Config, problems: list[str]) -> None:
    """Cross-field checks that a type alone cannot express."""
    ld = cfg.long_doc
    if not 16 <= ld.max_length <= 8192:
        problems.append(f"long_doc.max_length: expected 16..8192 tokens, got {ld.max_length}")
    if not 0 <= ld.stride < ld.max_length - 2:
        problems.append(
            f"long_doc.stride: must be at least 0 and below max_length - 2 ({ld.max_length - 2}), got {ld.stride}"
        )
    if ld.strategy == "head_tail" and not 0 <= ld.head_tokens <= ld.max_length - 2:
        problems.append(f"long_doc.head_tokens: must be 0..{ld.max_length - 2}, got {ld.head_tokens}")
    for name in ("max_windows", "train_max_windows"):
        if getattr(ld, name) < 1:
            problems.append(f"long_doc.{name}: must be at least 1, got {getattr(ld, name)}")
    tr = cfg.train
    if tr.learning_rate is not None and not 0 < tr.learning_rate < 1:
        problems.append(f"train.learning_rate: expected a value in (0, 1), got {tr.learning_rate}")
    for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps"):
        if getattr(tr, name) is not None and getattr(tr, name) < 1:
            problems.append(f"train.{name}: must be at least 1, got {getattr(tr, name)}")
    d = cfg.data
    for name in ("test_fraction", "validation_from_train"):
        if getattr(d, name) is not None and not 0 <= getattr(d, name) < 1:
            problems.append(f"data.{name}: expected a fraction in [0, 1), got {getattr(d, name)}")
    if not 0 <= tr.warmup_ratio < 1:
        problems.append(f"train.warmup_ratio: expected a fraction of the steps in [0, 1), got {tr.warmup_ratio}")
    if tr.epochs <= 0:
        problems.append(f"train.epochs: must be above 0, got {tr.epochs}")
    if tr.max_steps is not None and tr.max_steps < 1:
        problems.append(f"train.max_steps: must be at least 1 (or null to use train.epochs), got {tr.max_steps}")
    if cfg.eval.batch_size < 1:
        problems.append(f"eval.batch_size: must be at least 1, got {cfg.eval.batch_size}")
    pt = cfg.pretrain
    if not 0 < pt.mlm_probability < 1:
        problems.append(f"pretrain.mlm_probability: expected a fraction in (0, 1), got {pt.mlm_probability}")
    if not 32 <= pt.max_length <= 8192:
        problems.append(f"pretrain.max_length: expected 32..8192 tokens, got {pt.max_length}")
    if any(k < 1 for k in cfg.eval.top_k if isinstance(k, int)):
        problems.append(f"eval.top_k: values must be at least 1, got {cfg.eval.top_k}")


def from_dict(values: dict[str, Any] | None, source: str | None = None) -> Config:
    """Build a validated Config from nested mappings; raises ConfigError listing every problem."""
    problems: list[str] = []
    cfg = _build(Config, values or {}, "", problems)
    if not problems:
        _check_values(cfg, problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings; values are parsed as YAML scalars (``3``, ``true``, ``null``)."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{item!r}: overrides are written key.path=value, e.g. train.epochs=3")
            continue
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"{key}: {part!r} is a value, not a section")
                break
        else:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    if problems:
        raise ConfigError(problems, "command-line overrides")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    values: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist; see configs/ for examples")
        try:
            values = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError([f"not valid YAML: {err}"], source) from err
        if not isinstance(values, dict):
            raise ConfigError([f"expected a mapping of sections at the top level, got {values!r}"], source)
    values = apply_overrides(values, overrides or [])
    return from_dict(values, source)
