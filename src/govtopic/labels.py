"""Topic labels: parsing the ways portals write them, and checking them against the official taxonomy.

Full labels are stored as ``一级\\二级`` (the gov.cn form); a first-level class may stand alone (``其他``).
Shanghai writes ``一级-二级`` and Beijing ``一级/二级``: all three are read.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

SEP = "\\"
# Separators seen on portals, tried in this order. No official class name contains any of them.
_SEPARATORS = ("\\", "/", "-", "－", "／")
_SPLIT = re.compile("|".join(re.escape(s) for s in _SEPARATORS))


def l1(label: str) -> str:
    """First level of a full label."""
    return label.split(SEP, 1)[0]


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


def hierarchical_decode(probs, labels: list[str]):
    """Decode top-down so the two levels always agree.

    The first level is the one with the largest summed probability of its children; the full label is
    that level's most probable child. Returns (full-label indices, first-level names, first-level probs).
    """
    import numpy as np

    names = list(dict.fromkeys(l1(x) for x in labels))
    owner = np.array([names.index(l1(x)) for x in labels])
    l1_probs = np.zeros((probs.shape[0], len(names)), dtype=probs.dtype)
    np.add.at(l1_probs.T, owner, probs.T)
    best_l1 = l1_probs.argmax(axis=1)
    masked = np.where(owner[None, :] == best_l1[:, None], probs, -np.inf)
    return masked.argmax(axis=1), names, l1_probs
