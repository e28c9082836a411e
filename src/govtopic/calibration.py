"""Temperature scaling: one scalar T that turns logits into probabilities that mean what they say.

The temperature is fitted by minimising the negative log-likelihood of ``softmax(logits / T)`` on held-out
documents. The NLL is convex in ``1 / T``, hence unimodal in ``log T``, so a golden-section search on
``log T`` finds the optimum without scipy or torch (and without importing torch just for one scalar).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from govtopic.labels import split_levels

logger = logging.getLogger(__name__)

# Search range for T. Below 0.05 a model is made absurdly sure of itself, above 20 nearly uniform; an optimum
# at either end means the fitting set cannot tell (e.g. every prediction right), and the end is returned.
T_MIN, T_MAX = 0.05, 20.0
_ITERATIONS = 80  # golden-section steps: the bracket shrinks by 0.618 each, far below any useful precision
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (numerically stable; float64 out)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def level_softmax(logits: np.ndarray, temperature: float, labels: list[str]) -> np.ndarray:
    """Probabilities of ``logits`` tempered level by level: each first level's probability and each class's
    share within its level are raised to ``1 / temperature`` and normalised apart.

    Top-down decoding (``govtopic.labels.hierarchical_decode``) sums a level's classes: under a plain
    ``softmax(logits / T)`` with T > 1 a level with many unsure classes gains on one with a single sure class, so
    calibration would change which label wins. Tempered level by level it cannot: the first level and the class
    chosen within it are those of the untempered logits, and only how sure the scores are changes. With T = 1,
    or labels that are all first levels, it is ``softmax(logits / T)``.

    Args:
        logits: scores (documents × labels).
        temperature: T > 0.
        labels: the label of each column (``一级\\二级`` or ``一级``).

    Example:
        >>> level_softmax(np.array([[2.0, 1.0, 1.0]]), 2.0, ["甲\\a", "乙\\b", "乙\\c"]).round(3)
        array([[0.538, 0.231, 0.231]])

        Untempered, 甲 has 0.576 and wins; ``softmax(logits / 2)`` would give 乙 0.548 and flip the decision.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    level, _, owner = split_levels(logits, labels)
    _, within, _ = split_levels(np.asarray(logits, dtype=np.float64) / temperature, labels)
    return np.exp(np.log(softmax(level, temperature))[:, owner] + within)


def _nll(logits: np.ndarray, y_idx: np.ndarray, temperature: float, labels: list[str] | None = None) -> float:
    if labels is not None:
        probs = level_softmax(logits, temperature, labels)[np.arange(len(y_idx)), y_idx]
        return float(-np.mean(np.log(np.maximum(probs, 1e-300))))
    z = logits / temperature
    zmax = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(y_idx)), y_idx]))


def fit_temperature(logits: np.ndarray, y_idx: np.ndarray, labels: list[str] | None = None) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(logits / T)`` against ``y_idx`` (with
    ``labels``: of ``level_softmax(logits, T, labels)``, as the model's predictions are tempered).

    Rows whose gold index is negative (a gold label the model does not have) are left out: they carry no
    likelihood. Returns 1.0 (leave the model as it is) when fewer than 2 usable rows remain or all of them
    share one gold class, since such a set says nothing about how confusable the classes are. The result
    is clipped to [T_MIN, T_MAX]; a warning is logged when it lands on a bound.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y_idx = np.asarray(y_idx, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(y_idx):
        raise ValueError(f"expected logits (n, C) and y_idx (n,), got {logits.shape} and {y_idx.shape}")
    keep = y_idx >= 0
    logits, y_idx = logits[keep], y_idx[keep]
    if len(y_idx) < 2 or len(np.unique(y_idx)) < 2:
        logger.warning(
            "temperature left at 1.0: %d usable example(s) in %d class(es) is too few to fit it",
            len(y_idx),
            len(np.unique(y_idx)),
        )
        return 1.0
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = _nll(logits, y_idx, math.exp(a), labels), _nll(logits, y_idx, math.exp(b), labels)
    for _ in range(_ITERATIONS):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = _nll(logits, y_idx, math.exp(a), labels)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = _nll(logits, y_idx, math.exp(b), labels)
    temperature = float(math.exp((lo + hi) / 2))
    if temperature < T_MIN * 1.01 or temperature > T_MAX * 0.99:
        logger.warning(
            "fitted temperature %.3f is at the edge of [%.2f, %.1f]: the fitting set cannot pin it "
            "down (are all its predictions right?); use a larger validation split",
            temperature,
            T_MIN,
            T_MAX,
        )
    return temperature
