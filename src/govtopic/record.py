"""What a model folder keeps besides its weights: the govtopic settings in config.json, checked on load.

Training writes them under ``govtopic`` in config.json, beside ``id2label`` (the label names). A folder edited by
hand, written by another tool or damaged fails here with every problem named by its dotted path, the way a
config does, instead of giving quietly different predictions. A new setting is one new field of ModelRecord:
reading, type checks, the unknown-key check and ``to_dict`` follow from the field.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from govtopic.config import ConfigError, LongDocConfig, _build, _short, check_long_doc
from govtopic.labels import l1
from govtopic.modeling import ModelLoadError
from govtopic.ngram import VOCAB_FILE as NGRAM_VOCAB_FILE
from govtopic.ngram import WEIGHTS_FILE as NGRAM_WEIGHTS_FILE
from govtopic.normalize import NormalizeConfig

# The files of a model folder, named in one place. The training config kept beside the weights:
CONFIG_FILE = "govtopic_config.yaml"
# What a reader of the weights needs beside them: the label map and settings, the tokenizer, the n-gram channel.
BESIDE_WEIGHTS = (
    "config.json",
    CONFIG_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    NGRAM_WEIGHTS_FILE,
    NGRAM_VOCAB_FILE,
)
# Everything that is the model (name patterns): the weights (sharded too), the files beside them and its card.
MODEL_FILES = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "generation_config.json",
    *BESIDE_WEIGHTS,
    "README.md",
)
# Problems are named from here: "config.json govtopic.long_doc.stride: ...".
PREFIX = "config.json govtopic"
# Fields read from config.json's id2label rather than from its govtopic settings.
_FROM_ID2LABEL = ("labels",)


@dataclass
class ModelRecord:
    """The settings a govtopic model folder keeps in its config.json, with their types and ranges checked.

    Example:
        >>> model, _ = load_for_inference("runs/quickstart/model")
        >>> record = ModelRecord.from_config(model.config, "runs/quickstart/model")
        >>> record.long_doc.strategy, record.labels[:1]
        ('chunks', ['城乡建设、环境保护'])
    """

    # Version of govtopic that wrote the folder.
    version: str | None = None
    # How documents were cut into windows and pooled in training; prediction does the same.
    long_doc: LongDocConfig = field(default_factory=LongDocConfig)
    # The cleaning steps applied before tokenizing in training; prediction does the same.
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    # Logits are divided by it before the softmax; fitted on the validation split (1.0: not calibrated).
    temperature: float = 1.0
    # Inference precision on a GPU (see govtopic.modeling.autocast_dtype).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Weight of the n-gram channel's scores added to the logits (govtopic/ngram.py); 0: transformer alone.
    ngram_weight: float = 0.0
    # Weight of the channel's full-label block (scores per class of the model); 0: the transformer alone picks
    # the second level (and folders written before the block).
    ngram_full_weight: float = 0.0
    # Table column read as the title, as in training; None when titles were not used.
    title_column: str | None = None
    # How training read the published labels (govtopic.labels.LabelScheme.to_dict()); None in older folders.
    label_scheme: dict[str, Any] | None = None
    # sha256 of each data file training read, by its config setting (e.g. data.train_file); None in older folders.
    data_sha256: dict[str, Any] | None = None
    # The git commit of the working directory training ran in ("-dirty" with uncommitted changes); None outside
    # a git checkout.
    git_commit: str | None = None
    # Per-class score thresholds for a target precision (govtopic.review.fit_thresholds: precision, margin, l1,
    # full); predict() then adds needs_review and review_reason. None: results carry no review flag.
    thresholds: dict[str, Any] | None = None
    # Label names by output index: config.json's id2label, not a govtopic setting.
    labels: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: Any, source: str) -> ModelRecord:
        """The checked record of a loaded model's ``config`` (a transformers PretrainedConfig); ``source`` names
        the folder in messages. Raises ModelLoadError listing every problem.

        Example:
            >>> ModelRecord.from_config(model.config, "runs/quickstart/model").temperature
            1.0
        """
        problems: list[str] = []
        settings = _settings(config, problems)
        _check_written_settings(settings, source, problems)
        mappings = {name: settings.pop(name) for name in _mapping_fields(cls) if name in settings}
        record = _build(cls, settings, PREFIX, problems)
        for name, value in mappings.items():
            if value is None or isinstance(value, dict):
                setattr(record, name, value)
            else:
                problems.append(f"{PREFIX}.{name}: expected a mapping or null, got {_short(value)}")
        record.labels = _labels(config, problems)
        if not problems:
            record._check_values(problems)
        if problems:
            raise ModelLoadError(
                f"{ConfigError(problems, f'{source}/config.json')}\nThe folder was edited by hand, written by "
                "another tool or damaged: fix these values in its config.json, or train the model again with "
                "`govtopic train`."
            )
        return record

    def read_title_column(self, asked: str | None) -> str | None:
        """The table column to read titles from: ``asked`` (``""`` for none), or the one training read when
        ``asked`` is None, so prediction reads titles as training did.

        Example:
            >>> record.read_title_column(None), record.read_title_column(""), record.read_title_column("标题")
            ('title', None, '标题')
        """
        return self.title_column if asked is None else (asked or None)

    def to_dict(self) -> dict[str, Any]:
        """The settings as config.json's ``govtopic`` mapping (the labels live in id2label)."""
        values = dataclasses.asdict(self)
        for name in _FROM_ID2LABEL:
            values.pop(name)
        return values

    def _check_values(self, problems: list[str]) -> None:
        check_long_doc(self.long_doc, f"{PREFIX}.long_doc", problems)
        for name in ("ngram_weight", "ngram_full_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{PREFIX}.{name}: expected a finite value of at least 0, got {value}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            problems.append(f"{PREFIX}.temperature: expected a finite value above 0, got {self.temperature}")
        if self.thresholds is not None:
            _check_thresholds(self.thresholds, self.labels, problems)
        if self.label_scheme is not None:
            _check_label_scheme(self.label_scheme, problems)
        for key, digest in (self.data_sha256 or {}).items():
            if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
                problems.append(
                    f"{PREFIX}.data_sha256.{key}: expected a sha256 (64 hex digits), got {_short(digest)}; "
                    "set it to null if the data file is unknown"
                )


_THRESHOLD_KEYS = ("precision", "margin", "l1", "full")


def _check_thresholds(thresholds: dict[str, Any], labels: list[str], problems: list[str]) -> None:
    """``govtopic.thresholds`` as ``govtopic calibrate-thresholds`` writes it: precision in (0, 1], margin in
    [0, 1], and per-class score thresholds in [0, 1] (null: the class always goes to a person) for classes of
    this model."""
    where = f"{PREFIX}.thresholds"
    fix = "; run `govtopic calibrate-thresholds` again to rewrite them"
    for key in thresholds:
        if key not in _THRESHOLD_KEYS:
            problems.append(f"{where}.{key}: unknown key (expected {', '.join(_THRESHOLD_KEYS)}){fix}")

    def number(value: Any, low: float, low_open: bool) -> bool:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return ok and (value > low if low_open else value >= low) and value <= 1

    if not number(thresholds.get("precision"), 0.0, True):
        problems.append(
            f"{where}.precision: expected a value above 0 and at most 1, got {_short(thresholds.get('precision'))}{fix}"
        )
    margin = thresholds.get("margin", 0.0)
    if margin is not None and not number(margin, 0.0, False):
        problems.append(f"{where}.margin: expected a value from 0 to 1 (or null), got {_short(margin)}{fix}")
    known = {"l1": {l1(label) for label in labels}, "full": set(labels)}
    for level in ("l1", "full"):
        per_class = thresholds.get(level, {})
        if per_class is None:
            continue
        if not isinstance(per_class, dict):
            problems.append(f"{where}.{level}: expected a mapping of class to threshold, got {_short(per_class)}{fix}")
            continue
        for name, value in per_class.items():
            if name not in known[level]:
                problems.append(f"{where}.{level}.{name}: not a class of this model (config.json id2label){fix}")
            elif value is not None and not number(value, 0.0, False):
                problems.append(
                    f"{where}.{level}.{name}: expected a score from 0 to 1 or null, got {_short(value)}{fix}"
                )


def _check_label_scheme(scheme: dict[str, Any], problems: list[str]) -> None:
    """``govtopic.label_scheme`` as ``LabelScheme.to_dict`` writes it."""
    where = f"{PREFIX}.label_scheme"
    if scheme.get("level", "full") not in ("full", "l1"):
        problems.append(f"{where}.level: expected 'full' or 'l1', got {_short(scheme.get('level'))}")
    label_map = scheme.get("label_map") or {}
    if not isinstance(label_map, dict) or not all(isinstance(v, str) for v in label_map.values()):
        problems.append(
            f"{where}.label_map: expected a mapping of published spelling to label, got {_short(label_map)}"
        )
    taxonomy = scheme.get("taxonomy")
    if taxonomy is not None and not (
        isinstance(taxonomy, dict)
        and all(isinstance(k, str) and (v is None or isinstance(v, list)) for k, v in taxonomy.items())
    ):
        problems.append(
            f"{where}.taxonomy: expected a mapping of first-level class to its second-level classes, got "
            f"{_short(taxonomy)}"
        )


def _mapping_fields(cls: type) -> list[str]:
    """Fields typed ``dict[...]`` (or ``dict[...] | None``): kept as the mapping they are; their writer owns
    what is inside."""
    hints = typing.get_type_hints(cls)

    def is_mapping(tp: Any) -> bool:
        return typing.get_origin(tp) is dict or any(typing.get_origin(a) is dict for a in typing.get_args(tp))

    return [f.name for f in dataclasses.fields(cls) if is_mapping(hints[f.name])]


def _settings(config: Any, problems: list[str]) -> dict[str, Any]:
    """config.json's govtopic mapping ({} when absent: a folder fine-tuned elsewhere gets the defaults)."""
    settings = getattr(config, "govtopic", None) or {}
    if not isinstance(settings, dict):
        problems.append(f"{PREFIX}: expected a mapping of settings, got {_short(settings)}")
        return {}
    for name in _FROM_ID2LABEL:
        if name in settings:
            problems.append(f"{PREFIX}.{name}: unknown key (the label names are config.json's id2label)")
    return {k: v for k, v in settings.items() if k not in _FROM_ID2LABEL}


# Settings every govtopic release has written: a record without them was cut by hand, and the defaults (512-token
# windows, say) would predict differently from training.
_ALWAYS_WRITTEN = ("long_doc", "normalize")
# Files only govtopic writes into a model folder.
_GOVTOPIC_FILES = (CONFIG_FILE, NGRAM_WEIGHTS_FILE)


def _check_written_settings(settings: dict[str, Any], source: str, problems: list[str]) -> None:
    """A folder govtopic wrote must still hold its settings; a folder fine-tuned elsewhere has none and gets the
    defaults."""
    from pathlib import Path

    if not settings:
        folder = Path(source)
        written = [name for name in _GOVTOPIC_FILES if (folder / name).is_file()] if folder.is_dir() else []
        if written:
            problems.append(
                f"{PREFIX}: missing, but the folder holds {', '.join(written)}, which govtopic training writes; "
                "without the settings the model would read documents differently from training (window length, "
                "n-gram channel). Restore config.json from the original folder"
            )
        return
    for name in _ALWAYS_WRITTEN:
        if name not in settings:
            problems.append(
                f"{PREFIX}.{name}: missing (every govtopic release writes it); restore config.json from the original "
                "folder"
            )


def _labels(config: Any, problems: list[str]) -> list[str]:
    """Label names in output order; the ids (int keys: transformers converts them) must be 0..n-1, the names
    distinct and non-empty."""
    id2label = dict(getattr(config, "id2label", None) or {})
    ids = sorted(id2label)
    if ids != list(range(len(ids))) or not ids:
        shown = ", ".join(str(i) for i in ids[:20]) + (", ..." if len(ids) > 20 else "")
        problems.append(
            f"config.json id2label: expected ids 0..{len(ids) - 1}, got {shown or 'none'}; each output of the "
            "classifier needs its label"
        )
        return [str(id2label[i]) for i in ids]
    labels = [str(id2label[i]) for i in ids]
    repeated = [label for label, n in Counter(labels).items() if n > 1]
    if repeated:
        problems.append(
            f"config.json id2label: {', '.join(_short(x) for x in repeated[:5])} given more than once; "
            "each output needs its own label"
        )
    if any(not label.strip() for label in labels):
        problems.append("config.json id2label: a label is empty; each output needs a label name")
    return labels
