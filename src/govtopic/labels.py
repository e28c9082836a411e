"""Topic labels: parsing the ways portals write them, and checking them against the official taxonomy.

Full labels are stored as ``一级\\二级`` (the gov.cn form); a first-level class may stand alone (``其他``).
Shanghai writes ``一级-二级`` and Beijing ``一级/二级``: all three are read.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SEP = "\\"
# Separators seen on portals, tried in this order. No official class name contains any of them.
_SEPARATORS = ("\\", "/", "-", "－", "／")
_SPLIT = re.compile("|".join(re.escape(s) for s in _SEPARATORS))


def l1(label: str) -> str:
    """First level of a full label."""
    return label.split(SEP, 1)[0]


def is_full_label(label: str, model_labels) -> bool:
    """Whether a gold label is scored at the full level: a two-level label, or a first-level class the model
    has as a class of its own (其他, which has no second level). Other first-level-only labels count at the
    first level only."""
    return SEP in label or label in model_labels


def parse_label(raw: object) -> str | None:
    """Canonical ``一级\\二级`` (or ``一级``) from any accepted spelling; None for a missing label."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raw = str(raw)
    text = raw.strip()
    if not text or text.lower() in {"none", "null", "nan"}:
        return None
    parts = [p.strip() for p in _SPLIT.split(text, maxsplit=1)]
    parts = [p for p in parts if p]
    return SEP.join(parts)


class Taxonomy:
    """The two-level 主题分类: first-level classes mapped to their second-level classes."""

    def __init__(self, classes: dict[str, list[str]]):
        self.classes = {k: list(v or []) for k, v in classes.items()}

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(
                f"taxonomy file {p} does not exist; set data.taxonomy to a YAML file of "
                "first-level classes mapped to lists of second-level classes, or to null"
            )
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{p}: expected a mapping of first-level classes to lists, got {type(data).__name__}")
        return cls({str(k): [str(x) for x in (v or [])] for k, v in data.items()})

    def problem(self, label: str) -> str | None:
        """Why ``label`` is not in the taxonomy, or None when it is."""
        first, _, second = label.partition(SEP)
        if first not in self.classes:
            return f"first-level class {first!r} is not in the taxonomy"
        if second and second not in self.classes[first]:
            return f"second-level class {second!r} is not under {first!r} in the taxonomy"
        return None

    @property
    def n_first(self) -> int:
        return len(self.classes)

    @property
    def n_second(self) -> int:
        return sum(len(v) for v in self.classes.values())


class LabelError(ValueError):
    """Labels that cannot be read as the taxonomy's; the message lists each spelling and the fix."""


@dataclass
class LabelMap:
    r"""Published spellings mapped to taxonomy labels, with a version so a model records which map it learnt.

    Written in the config (``data.label_map: {version: ..., labels: {published: canonical}}``) or in a YAML
    file of the same shape beside the taxonomy (``data.label_map: data/label_map.yaml``). Keys are matched
    after the separators are read, so ``其他-其他`` and ``其他\\其他`` are one key.

    Example:
        >>> m = LabelMap({"其他\\其他": "其他", "公路": "工业、交通\\公路"}, version="2026-11")
        >>> m.apply("其他/其他"), m.apply("公路"), m.apply("卫生、体育")
        ('其他', '工业、交通\\公路', '卫生、体育')
    """

    labels: dict[str, str] = field(default_factory=dict)
    version: str = "none"

    def __post_init__(self) -> None:
        self.labels = {parse_label(k) or k: parse_label(v) or v for k, v in self.labels.items()}

    @classmethod
    def load(cls, value: str | dict | None, base: Path | None = None) -> LabelMap:
        """From a YAML file path, an inline mapping (``{version, labels}`` or plain pairs), or None."""
        if value is None:
            return cls()
        if isinstance(value, str):
            path = Path(value)
            if not path.is_absolute() and base is not None and not path.exists():
                path = base / path
            if not path.is_file():
                raise LabelError(f"label map {value} does not exist; set data.label_map to a YAML file or mapping")
            try:
                value = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as err:
                where = f" ({err.problem_mark})" if getattr(err, "problem_mark", None) else ""
                raise LabelError(
                    f"data.label_map: {value} is not a UTF-8 YAML file{where}: write it as version: and labels: "
                    "with one `published: 一级\\二级` pair a line, as data/label_map.yaml does"
                ) from err
        if not isinstance(value, dict):
            raise LabelError(f"data.label_map: expected a mapping, got {type(value).__name__}")
        if "labels" in value:
            extra = set(value) - {"labels", "version"}
            if extra:
                raise LabelError(f"data.label_map: unknown key(s) {sorted(extra)}; expected version and labels")
            pairs, version = value.get("labels") or {}, str(value.get("version", "unversioned"))
            if not isinstance(pairs, dict):
                raise LabelError(
                    f"data.label_map: labels: expected a mapping of published spelling to label, got "
                    f"{type(pairs).__name__}"
                )
        else:
            pairs, version = value, "unversioned"
        bad = [k for k, v in pairs.items() if not isinstance(v, str) or not str(v).strip()]
        if bad:
            raise LabelError(f"data.label_map: {bad[0]!r} maps to {pairs[bad[0]]!r}; expected a label string")
        return cls({str(k): str(v) for k, v in pairs.items()}, version)

    def apply(self, label: str) -> str:
        """The taxonomy label for a published one (unmapped labels are returned as read)."""
        label = parse_label(label) or label
        return self.labels.get(label, label)


# What to do about labels outside the taxonomy: in a training config, and in a file scored against a model.
TRAINING_FIX = (
    "Add each to data.label_map (published spelling: taxonomy label), or set data.unknown_labels: drop to leave "
    "those rows out (their count is reported)."
)
EVALUATION_FIX = (
    "Correct them in the file to labels of the model's taxonomy (the model reads published spellings through "
    "the label map it was trained with), map the file's own spellings to them with --label-map FILE (a YAML "
    "file like data/label_map.yaml), or leave those rows out of the file."
)


class LabelScheme:
    r"""The two-level label scheme in one place: reading published labels, the taxonomy, the model's label
    set, training targets for rows of either depth, and top-down decoding.

    Args:
        taxonomy: the official taxonomy (labels outside it are unknown), or None to accept any label.
        label_map: published spellings mapped to taxonomy labels.
        unknown: ``"error"`` (default) stops with every unknown spelling and its count; ``"drop"`` leaves
            those rows out and reports how many.
        level: ``"full"`` keeps two-level labels, ``"l1"`` cuts every label to its first level.

    Example:
        >>> scheme = LabelScheme(Taxonomy({"工业、交通": ["公路", "其他"], "其他": []}),
        ...                      LabelMap({"公路": "工业、交通\\公路"}))
        >>> scheme.read(["工业、交通-其他", "公路", "其他", None])
        ['工业、交通\\其他', '工业、交通\\公路', '其他', None]
        >>> scheme.model_labels(["工业、交通\\公路", "工业、交通", "其他"])
        ['其他', '工业、交通\\公路']
    """

    def __init__(
        self,
        taxonomy: Taxonomy | None = None,
        label_map: LabelMap | None = None,
        unknown: str = "error",
        level: str = "full",
    ):
        if unknown not in ("error", "drop"):
            raise ValueError(f"unknown label policy must be 'error' or 'drop', got {unknown!r}")
        self.taxonomy = taxonomy
        self.label_map = label_map or LabelMap()
        self.unknown = unknown
        self.level = level
        if taxonomy is not None:
            wrong = {k: v for k, v in self.label_map.labels.items() if taxonomy.problem(v)}
            if wrong:
                k, v = next(iter(wrong.items()))
                raise LabelError(
                    f"data.label_map maps {k!r} to {v!r}: {taxonomy.problem(v)}. Map it to a taxonomy label."
                )

    # ------------------------------------------------------------ reading labels
    def canonical(self, raw: object) -> str | None:
        """The taxonomy label for one published label (None for a missing one); unknown ones are returned
        as parsed, see ``problem``."""
        label = parse_label(raw)
        if label is None:
            return None
        label = self.label_map.apply(label)
        return l1(label) if self.level == "l1" else label

    def problem(self, label: str) -> str | None:
        return self.taxonomy.problem(label) if self.taxonomy is not None else None

    def read(
        self,
        raws: list[object],
        where: str = "labels",
        counts: dict | None = None,
        ids: list | None = None,
        fix: str = TRAINING_FIX,
    ) -> list[str | None]:
        """Canonical labels for a column of published ones.

        Unknown spellings raise a ``LabelError`` listing each with its count and ``fix`` (what the reader of the
        file can do: a training config's settings by default); with ``unknown="drop"`` they become None and
        their number is added to ``counts["unknown_labels"]``.
        """
        out: list[str | None] = []
        unknown: Counter = Counter()
        first: dict[str, str] = {}
        for number, raw in enumerate(raws, 1):
            ident = f" (id {ids[number - 1]})" if ids is not None and ids[number - 1] is not None else ""
            if raw is not None and not isinstance(raw, str):
                raise LabelError(
                    f"{where}: row {number}{ident}: label {raw!r} is {type(raw).__name__}, expected text such as "
                    "'一级\\二级'; point the label column at the topic names, not at numeric ids"
                )
            label = self.canonical(raw)
            if label is not None and self.problem(label):
                unknown[label] += 1
                first.setdefault(label, f"row {number}{ident}")
                label = None
            out.append(label)
        if unknown and self.unknown == "error":
            listed = "\n  ".join(
                f"{first[lab]}: label {lab!r} ({n} row(s)): {self.problem(lab)}" for lab, n in unknown.most_common()
            )
            raise LabelError(
                f"{where}: {sum(unknown.values())} label(s) outside the taxonomy, {len(unknown)} spelling(s):\n  "
                f"{listed}\n{fix}"
            )
        if unknown and counts is not None:
            counts["unknown_labels"] = counts.get("unknown_labels", 0) + sum(unknown.values())
        return out

    # ------------------------------------------------------------ the model's labels
    def model_labels(self, labels: list[str | None]) -> list[str]:
        """The classes a model trained on ``labels`` predicts: every full label, plus each first-level label
        whose level has no full label among them (such as 其他, which has no children). A first-level-only
        row of a level with children trains those children through their summed probability."""
        present = {y for y in labels if y}
        full = {y for y in present if SEP in y}
        levels_with_children = {l1(y) for y in full}
        alone = {y for y in present if SEP not in y and y not in levels_with_children}
        return sorted(full | alone)

    def targets(self, label: str, model_labels: list[str]) -> list[int]:
        """Indices of ``model_labels`` a row labelled ``label`` may be: itself, or all of its level's
        classes for a first-level-only label. Empty when the model cannot express the label."""
        if label in model_labels:
            return [model_labels.index(label)]
        if SEP not in label:
            return [i for i, y in enumerate(model_labels) if l1(y) == label]
        return []

    # ------------------------------------------------------------ decoding and the model record
    @staticmethod
    def decode(probs, labels: list[str]):
        """Top-down decoding (see ``hierarchical_decode``)."""
        return hierarchical_decode(probs, labels)

    def to_dict(self) -> dict:
        """What a model folder keeps of the scheme (config.json ``govtopic.label_scheme``): the label map, the
        level and the taxonomy itself, so that gold labels are checked wherever the folder is evaluated."""
        return {
            "label_map": dict(self.label_map.labels),
            "label_map_version": self.label_map.version,
            "level": self.level,
            "taxonomy": dict(self.taxonomy.classes) if self.taxonomy is not None else None,
        }


def hierarchical_decode(probs, labels: list[str]):
    """Decode top-down so the two levels always agree.

    The first level is the one with the largest summed probability of its children; the full label is
    that level's most probable child. Returns (full-label indices, first-level names, first-level probs).
    """
    import numpy as np

    names, owner = _levels(labels)
    l1_probs = np.zeros((probs.shape[0], len(names)), dtype=probs.dtype)
    np.add.at(l1_probs.T, owner, probs.T)
    best_l1 = l1_probs.argmax(axis=1)
    masked = np.where(owner[None, :] == best_l1[:, None], probs, -np.inf)
    return masked.argmax(axis=1), names, l1_probs


def split_levels(scores, labels: list[str]):
    """Scores per label read as logits, split by the first level: (log p(level), documents × first levels;
    log p(label | its level), documents × labels; each label's level index).

    ``log p(level)[:, owner] + log p(label | level)`` is the log-softmax of ``scores``. Calibration tempers the two
    parts apart (``calibration.level_softmax``), and the n-gram channel takes each from other scores
    (``ngram.mix``).

    Example:
        >>> level, within, owner = split_levels(np.array([[0.0, 0.0, np.log(2)]]), ["甲\\a", "甲\\b", "乙\\c"])
        >>> np.exp(level).round(2), np.exp(within).round(2), owner
        (array([[0.5, 0.5]]), array([[0.5, 0.5, 1. ]]), array([0, 0, 1]))
    """
    import numpy as np

    names, owner = _levels(labels)
    z = np.asarray(scores, dtype=np.float64)
    level_lse = np.empty((z.shape[0], len(names)))
    for g in range(len(names)):
        part = z[:, owner == g]
        top = part.max(axis=1, keepdims=True)
        level_lse[:, g] = top[:, 0] + np.log(np.exp(part - top).sum(axis=1))
    top = level_lse.max(axis=1, keepdims=True)
    total = top + np.log(np.exp(level_lse - top).sum(axis=1, keepdims=True))
    return level_lse - total, z - level_lse[:, owner], owner


def _levels(labels: list[str]):
    """The first levels in order of first appearance, and each label's index among them."""
    import numpy as np

    names = list(dict.fromkeys(l1(x) for x in labels))
    return names, np.array([names.index(l1(x)) for x in labels])
