r"""Risk–coverage: how accuracy rises as the least confident documents are sent to a person.

Every evaluation report has it, for the model and the TF-IDF baseline beside it, at both levels: documents are
kept most confident first (``score_l1`` at the first level, ``score`` at the full label, decoded as
``predict()`` decodes them), and for each share kept (coverage) the accuracy of the kept ones is read. The
report gives the curve (``plots.plot_risk_coverage``), the coverage at which accuracy is still 90%, 95% and
99% (``RC_PRECISIONS``), and the mean error over all coverages (AURC). Thresholds a person can apply come from
``review.fit_thresholds``; this shows what any single cut on the score could give.

Example:
    >>> rc = risk_coverage(probs, gold, labels)
    >>> rc["l1"]["coverage_at_precision"]["0.95"], rc["l1"]["aurc"]
    (0.74, 0.061)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from govtopic.labels import is_full_label, l1
from govtopic.review import scores

RC_PRECISIONS = (0.9, 0.95, 0.99)


def _curve(conf: np.ndarray, hit: np.ndarray, precisions: Sequence[float], points: int) -> dict | None:
    if not len(conf):
        return None
    order = np.argsort(-conf, kind="stable")
    c, h = conf[order], hit[order].astype(float)
    n = len(c)
    acc = np.cumsum(h) / np.arange(1, n + 1)
    # Documents with the same score are kept or left together: cuts only where the score drops.
    cut = np.append(c[1:] < c[:-1], True)
    at = {}
    for p in precisions:
        ok = cut & (acc >= p - 1e-12)
        at[f"{p:g}"] = float((np.flatnonzero(ok).max() + 1) / n) if ok.any() else 0.0
    picks = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int))
    return {
        "documents": n,
        "coverage_at_precision": at,
        # Mean error over all coverages (area under the risk-coverage curve): lower is better.
        "aurc": float(np.mean(1.0 - acc)),
        "curve": [[round((k + 1) / n, 4), round(float(acc[k]), 4)] for k in picks],
    }


def risk_coverage(
    probs: np.ndarray,
    gold: Sequence[str | None],
    labels: Sequence[str],
    precisions: Sequence[float] = RC_PRECISIONS,
    points: int = 101,
) -> dict:
    r"""Accuracy against coverage at both levels, keeping the most confident documents first.

    Args:
        probs: probabilities (rows documents, columns ``labels``).
        gold: gold labels (``一级\二级`` or ``一级``; None rows are left out).
        labels: the model's labels in column order.
        precisions: the precisions whose coverage is reported.
        points: points of the curve kept for the plot and metrics.json.

    Returns:
        ``{"l1": {...}, "full": {...}}``, each with ``coverage_at_precision`` (the largest share of documents
        that can be accepted at that accuracy when the least confident are sent to a person), ``aurc`` and
        ``curve`` ([coverage, accuracy] pairs); ``full`` is None without full-depth gold labels.

    Example:
        >>> risk_coverage(probs, gold, labels)["l1"]["coverage_at_precision"]["0.95"]
        0.74
    """
    keep = [i for i, y in enumerate(gold) if y]
    probs = np.asarray(probs, dtype=np.float64)[keep]
    gold = [str(gold[i]) for i in keep]
    s = scores(probs, labels)
    gold_l1 = np.array([l1(y) for y in gold], dtype=object)
    known = set(labels)
    deep = np.array([is_full_label(y, known) for y in gold], dtype=bool)
    hit_full = s["full"] == np.array(gold, dtype=object)
    return {
        "l1": _curve(s["score_l1"], s["l1"] == gold_l1, precisions, points),
        "full": _curve(s["score"][deep], hit_full[deep], precisions, points) if deep.any() else None,
    }


def add_risk_coverage(metrics: dict, baseline: dict | None, mixed: bool, probs, gold, labels) -> None:
    """Put ``risk_coverage`` into the model's (and the baseline's) metrics; a baseline trained on first-level
    labels gets first-level figures only."""
    metrics["risk_coverage"] = risk_coverage(probs, gold, labels)
    if baseline is not None and baseline.get("_probs") is not None:
        baseline["risk_coverage"] = risk_coverage(baseline["_probs"], gold, labels)
        if mixed:
            baseline["risk_coverage"]["full"] = None
