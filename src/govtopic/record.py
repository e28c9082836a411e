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
from govtopic.modeling import ModelLoadError
from govtopic.normalize import NormalizeConfig

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
        for key, digest in (self.data_sha256 or {}).items():
            if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
                problems.append(
                    f"{PREFIX}.data_sha256.{key}: expected a sha256 (64 hex digits), got {_short(digest)}; "
                    "set it to null if the data file is unknown"
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
