"""Typed configuration: every default in one place, strict YAML loading, dotted overrides.

An experiment config lists only what differs from the defaults below. Unknown keys and values of the
wrong type are errors, reported all at once with their dotted paths, e.g.
``train.learning_rate: expected a float, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from govtopic.normalize import NormalizeConfig
from govtopic.schedule import check_validation
from govtopic.strategies import strategy_names

# The long-document strategies a config may name: the registry's (govtopic.strategies).
_STRATEGIES = strategy_names()


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
    # Fit a character n-gram channel (TF-IDF + linear SVM at the first level) beside the transformer and add
    # its scores with a weight chosen on the validation split (govtopic/ngram.py). Kept in the model folder as
    # tensors; it helps most where labelled rows are few and short (titles, summaries).
    ngram_channel: bool = False


@dataclass
class SourceConfig:
    """One training source: a file with its own columns, label spellings and weight."""

    # Name used in reports (per-source figures); defaults to the file name.
    name: str | None = None
    # JSONL, CSV, TSV or Parquet (optionally .gz).
    file: str | None = None
    # null for a title-only source; a row may have a title, a body or both.
    text_column: str | None = "text"
    # null when the source has no titles.
    title_column: str | None = "title"
    label_column: str = "label"
    split_column: str | None = "split"
    # Multiplies this source's share of the training loss (e.g. 2.0 for the portal you tag for).
    weight: float = 1.0
    # Extra published spellings of this source (file or mapping), applied before data.label_map.
    label_map: str | dict[str, Any] | None = None


@dataclass
class DataConfig:
    # One source: JSONL, CSV, TSV or Parquet (optionally .gz). Either this or data.sources is required for training.
    train_file: str | None = None
    # Several sources trained together (each with its columns, label spellings and weight); replaces
    # train_file. Splits are taken per source, and reports give every figure per source and overall.
    sources: list[SourceConfig] = field(default_factory=list)
    # Optional separate evaluation file; otherwise the test split of the training sources is used.
    test_file: str | None = None
    # Set to null for titles alone (a portal's archive of titles); title_column must then name one.
    text_column: str | None = "text"
    # Set to null when the data has no title column.
    title_column: str | None = "title"
    label_column: str = "label"
    # Rows with this column set to train/validation/test keep their split; otherwise a seeded stratified split.
    split_column: str | None = "split"
    # YAML file of the official taxonomy; labels outside it are an error naming every unknown spelling.
    taxonomy: str | None = None
    # Published spellings mapped to taxonomy labels: a YAML file ({version, labels}) or an inline mapping.
    label_map: str | dict[str, Any] | None = None
    # Labels outside the taxonomy after mapping: "error" lists them all; "drop" leaves the rows out (counted).
    unknown_labels: Literal["error", "drop"] = "error"
    # "full" keeps 一级\二级 labels (first-level-only rows train their level as a whole); "l1" cuts all to 一级.
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
    # A registered strategy (govtopic.strategies): head: first max_length tokens; head_tail: first head_tokens
    # + last tokens; chunks: overlapping windows over the whole document, logits pooled.
    strategy: Literal[_STRATEGIES] = "chunks"
    # Tokens per window including [CLS] and [SEP].
    max_length: int = 512
    # head_tail: tokens kept from the start; the rest of the window comes from the end.
    head_tokens: int = 128
    # chunks: tokens shared by consecutive windows.
    stride: int = 64
    pooling: Literal["mean", "max"] = "mean"
    # chunks: at most this many windows per document at prediction time, spread evenly from the first to the last
    # (a document with more says truncated: true). 8 instead of 64: 4.1-4.5x the documents/s on regulation bodies
    # (~45 windows of 128 tokens), the same first-level macro-F1 on their test split (model_card.md, Speed).
    max_windows: int = 8
    # chunks: at most this many windows per document during training (spread evenly).
    train_max_windows: int = 4
    # How a document's title is read. "window": the title is a window of its own, weighted title_weight
    # in the document's pooled logits, so it keeps its weight on a body of sixty windows; "prepend": the
    # title starts the body (it is then only in the first window); "none": titles are ignored.
    title: Literal["window", "prepend", "none"] = "window"
    # "window": the title window's share of the document's logits when it has a body too.
    title_weight: float = 0.5
    # A document given without a title (a .txt file, a plain string) gets the title its text opens with,
    # when it opens with one (govtopic.titles.guess_title); false reads such documents as bodies alone.
    title_from_text: bool = True


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
    # Continue from the last checkpoint in output_dir when one exists (only a run of the same config and data).
    resume: bool = True
    # Start the run folder over: its checkpoints, model and eval reports are deleted first. Needed to reuse an
    # output_dir whose earlier run had another config or data (`govtopic train --overwrite`).
    overwrite: bool = False
    # Evaluate the saved model on the test split after training.
    evaluate_after: bool = True
    dataloader_num_workers: int = 0
    # Label smoothing helps with noisy distant labels.
    label_smoothing: float = 0.0
    # Score the validation split (document level, both taxonomy levels) during training; the best evaluation's
    # checkpoint becomes the model. Off, or without validation rows, the last step's weights are the model.
    validate: bool = True
    # Evaluate (and checkpoint) every this many steps; 0: train.save_steps when set, else once per epoch.
    eval_steps: int = 0
    # The validation figure that picks the best checkpoint (govtopic.schedule.METRICS lists the names).
    best_metric: str = "l1_macro_f1"
    # The model is the latest checkpoint whose best_metric is within this much of the best value so far (0: the
    # best checkpoint itself). On a small validation split the highest of several close figures is partly luck,
    # and a later checkpoint within the tolerance has trained longer (CPU recipe, 201 validation documents: the
    # strict best, epoch 6, scored 0.804 test macro-F1; within 0.01, epoch 9, 0.831; all 10 epochs 0.826).
    best_tolerance: float = 0.01
    # Stop after this many evaluations without a new best value of best_metric; null: train every step.
    early_stopping_patience: int | None = None
    # "balanced": each class's loss weighted by n / (classes x its documents), first-level-only rows by their
    # level's; multiplies the source weights.
    class_weights: Literal["none", "balanced"] = "none"
    # "balanced": training windows drawn with replacement so that every class is drawn about equally often.
    sampler: Literal["random", "balanced"] = "random"
    # Offline trackers: "tensorboard" (event files in RUN/tensorboard), "mlflow" (file store in RUN/mlruns).
    report_to: list[Literal["tensorboard", "mlflow"]] = field(default_factory=list)


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
# Values are echoed in messages at most this long: a config value can be any size.
_SHORT_CHARS = 80
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 3, 8, 8
_REPR.maxstring = _REPR.maxother = _SHORT_CHARS


def _short(value: Any) -> str:
    """repr() of ``value`` cut to about 80 characters; large nested values are never expanded in full."""
    text = _REPR.repr(value)
    return text if len(text) <= _SHORT_CHARS else text[: _SHORT_CHARS - 3] + "..."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is dict:
        return "a mapping"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    names = {int: "an integer", float: "a float", bool: "true or false", str: "a string"}
    return names.get(tp, "null" if tp is type(None) else getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Convert a YAML value to the declared type, appending a problem if it cannot be."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping of settings, got {_short(value)}")
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
        problems.append(f"{path}: expected {_type_name(tp)}, got {_short(value)}")
        return None
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        problems.append(f"{path}: expected {_type_name(tp)}, got {_short(value)}{extra}")
        return choices[0]
    if origin is dict:
        # Only free-form mappings (label maps) are declared as dicts; their content is checked by their owner.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        problems.append(f"{path}: expected a mapping, got {_short(value)}")
        return None
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
    problems.append(f"{path}: expected {_type_name(tp)}, got {_short(value)}")
    return None


def _build(cls: type, values: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        name = key if isinstance(key, str) and len(key) <= _SHORT_CHARS else _short(key)
        path = f"{prefix}.{name}" if prefix else str(name)
        if key not in names:
            hint = difflib.get_close_matches(str(name), names, n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else "valid keys: " + ", ".join(names)
            problems.append(f"{path}: unknown key ({fix})")
            continue
        kwargs[key] = _convert(value, hints[key], path, problems)
    return cls(**kwargs)


def check_long_doc(ld: LongDocConfig, prefix: str, problems: list[str]) -> None:
    """Window settings that would fail or read nothing; shared by configs and model folders (``prefix``)."""
    if not 16 <= ld.max_length <= 8192:
        problems.append(f"{prefix}.max_length: expected 16..8192 tokens, got {ld.max_length}")
    if not 0 <= ld.stride < ld.max_length - 2:
        problems.append(
            f"{prefix}.stride: must be at least 0 and below max_length - 2 ({ld.max_length - 2}), got {ld.stride}"
        )
    if ld.strategy == "head_tail" and not 0 <= ld.head_tokens <= ld.max_length - 2:
        problems.append(f"{prefix}.head_tokens: must be 0..{ld.max_length - 2}, got {ld.head_tokens}")
    for name in ("max_windows", "train_max_windows"):
        if getattr(ld, name) < 1:
            problems.append(f"{prefix}.{name}: must be at least 1, got {getattr(ld, name)}")
    if not 0 <= ld.title_weight <= 1:  # also false for NaN
        problems.append(f"{prefix}.title_weight: expected a share in [0, 1], got {ld.title_weight}")


def check_sources(d: DataConfig, problems: list[str]) -> None:
    """One way of naming the training data, and sensible source settings."""
    if d.sources and d.train_file:
        problems.append("data.train_file and data.sources are both set: list the file as one of data.sources")
    names = []
    for i, src in enumerate(d.sources):
        if not src.file:
            problems.append(f"data.sources[{i}].file: required (a JSONL, CSV, TSV or Parquet file)")
        if not 0 < src.weight < 1e6:  # also false for NaN
            problems.append(f"data.sources[{i}].weight: expected a positive number, got {src.weight}")
        names.append(src.name or (src.file and src.file.rsplit("/", 1)[-1].split(".")[0]))
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        problems.append(f"data.sources: names {dupes} are used twice; give each source a distinct name")


def _check_values(cfg: Config, problems: list[str]) -> None:
    """Cross-field checks that a type alone cannot express."""
    check_long_doc(cfg.long_doc, "long_doc", problems)
    check_sources(cfg.data, problems)
    if not cfg.model.from_scratch:
        # Pretrained weights fix the widths: a width given here was ignored (pre-training) or failed deep inside
        # transformers with a size mismatch (training). Fewer layers is fine: the first ones are loaded.
        for name in ("hidden_size", "num_attention_heads", "intermediate_size"):
            if getattr(cfg.model, name) is not None:
                problems.append(
                    f"model.{name}: applies only to a model built from a config (model.from_scratch: true); the "
                    f"weights of {cfg.model.name_or_path} fix it. Remove model.{name}, or set model.from_scratch: "
                    "true to train a new model of that size"
                )
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
    if not (math.isfinite(tr.epochs) and tr.epochs > 0):
        problems.append(f"train.epochs: expected a finite number above 0, got {tr.epochs}")
    if not (math.isfinite(tr.weight_decay) and tr.weight_decay >= 0):
        problems.append(f"train.weight_decay: expected a finite value of 0 or more, got {tr.weight_decay}")
    if not 0 <= tr.label_smoothing < 1:
        problems.append(f"train.label_smoothing: expected a fraction in [0, 1) (e.g. 0.1), got {tr.label_smoothing}")
    if tr.logging_steps < 1:
        problems.append(f"train.logging_steps: must be at least 1, got {tr.logging_steps}")
    if tr.save_steps < 0:
        problems.append(f"train.save_steps: must be 0 (a checkpoint per epoch) or more, got {tr.save_steps}")
    if tr.save_total_limit < 1:
        problems.append(
            f"train.save_total_limit: must be at least 1 (a run resumes from its last), got {tr.save_total_limit}"
        )
    if not 0 <= tr.seed < 2**32:
        problems.append(f"train.seed: expected 0..{2**32 - 1}, got {tr.seed}")
    if tr.dataloader_num_workers < 0:
        problems.append(f"train.dataloader_num_workers: must be 0 or more, got {tr.dataloader_num_workers}")
    if d.max_train_samples is not None and d.max_train_samples < 1:
        problems.append(
            f"data.max_train_samples: must be at least 1 (or null for every row), got {d.max_train_samples}"
        )
    if d.min_class_count < 1:
        problems.append(f"data.min_class_count: must be at least 1 (1 keeps every class), got {d.min_class_count}")
    if tr.max_steps is not None and tr.max_steps < 1:
        problems.append(f"train.max_steps: must be at least 1 (or null to use train.epochs), got {tr.max_steps}")
    _check_training_checks(cfg, problems)
    if cfg.eval.batch_size < 1:
        problems.append(f"eval.batch_size: must be at least 1, got {cfg.eval.batch_size}")
    pt = cfg.pretrain
    if not 0 < pt.mlm_probability < 1:
        problems.append(f"pretrain.mlm_probability: expected a fraction in (0, 1), got {pt.mlm_probability}")
    if not 32 <= pt.max_length <= 8192:
        problems.append(f"pretrain.max_length: expected 32..8192 tokens, got {pt.max_length}")
    if any(k < 1 for k in cfg.eval.top_k if isinstance(k, int)):
        problems.append(f"eval.top_k: values must be at least 1, got {cfg.eval.top_k}")


def _check_training_checks(cfg: Config, problems: list[str]) -> None:
    """Validation, early stopping and tracker settings (govtopic.schedule and govtopic.tracking own them)."""
    from govtopic.tracking import check_trackers

    check_validation(cfg, problems)
    check_trackers(cfg.train.report_to, problems)


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


# A config is a few hundred values. Far larger files, or aliases that expand far beyond that (a YAML "billion
# laughs": 90 aliases expand to 10^9 values), are refused before their values are built or echoed.
_MAX_CONFIG_BYTES = 1 << 20
_MAX_CONFIG_VALUES = 100_000


class _TooLarge(yaml.YAMLError):
    """A YAML document that would expand beyond what any config needs."""


class _DuplicateKey(yaml.YAMLError):
    """A key written twice in one mapping: YAML keeps the last silently, so half of the user's settings would go."""


class _ConfigLoader(yaml.SafeLoader):
    """The safe loader (no code tags), refusing documents whose aliases expand beyond _MAX_CONFIG_VALUES and
    mappings that give a key twice."""

    def compose_document(self):
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: overriding is its purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, str | int | float | bool) and key in seen:
                    raise _DuplicateKey(
                        f"{key!r} is given twice in one section (lines {seen[key]} and {line}); YAML would keep "
                        "only the second. Keep one (two sections of one name: merge them into one)"
                    )
                seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_nodes: set[int]) -> int:
    """Values in ``node`` with every alias written out; raises _TooLarge past _MAX_CONFIG_VALUES or on a cycle."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_nodes:
        raise _TooLarge("an alias is used inside its own anchor (a recursive alias); write the value out instead")
    open_nodes.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1
    for child in children:
        total += _expanded_size(child, memo, open_nodes)
        if total > _MAX_CONFIG_VALUES:
            raise _TooLarge(
                f"its aliases expand to more than {_MAX_CONFIG_VALUES:,} values (a config has a few hundred); "
                "write the values out instead of nesting aliases"
            )
    open_nodes.discard(key)
    memo[key] = total
    return total


def _read_yaml(p: Path, source: str) -> Any:
    size = p.stat().st_size
    if size > _MAX_CONFIG_BYTES:
        raise ConfigError(
            [f"the file is larger than 1 MB ({size:,} bytes); a config is a few kB. Is {p} really a config?"], source
        )
    try:
        return yaml.load(p.read_text(encoding="utf-8"), Loader=_ConfigLoader)
    except _TooLarge as err:
        raise ConfigError([f"refused: {err}"], source) from None
    except _DuplicateKey as err:
        raise ConfigError([str(err)], source) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}"], source) from err
    except RecursionError:
        raise ConfigError(["refused: values nested too deeply for a config"], source) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    values: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist; see configs/ for examples")
        values = _read_yaml(p, source) or {}
        if not isinstance(values, dict):
            raise ConfigError([f"expected a mapping of sections at the top level, got {_short(values)}"], source)
    values = apply_overrides(values, overrides or [])
    return from_dict(values, source)
