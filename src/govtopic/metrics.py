"""Figures for a topic model: accuracy and F1 at both taxonomy levels, top-k, calibration, confusions.

Every function takes probabilities in the column order of the model's labels (its ``id2label``) and gold
labels as strings, and returns plain Python values so the results go straight into ``metrics.json``.

Predictions are decoded the way ``govtopic.predict`` decodes them: the first level is the class with the
largest summed probability of its children, the full label that class's most probable child. Top-k and ECE
rank the raw full-label probabilities (top-1 is therefore the plain argmax accuracy).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from govtopic.labels import SEP, is_full_label
from govtopic.labels import l1 as _l1


def first_level_probs(probs: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Sum full-label probabilities over each first-level class's children.

    Returns the (n, L1) matrix and the first-level names in order of first appearance in ``labels``.
    """
    names = list(dict.fromkeys(_l1(x) for x in labels))
    owner = np.array([names.index(_l1(x)) for x in labels], dtype=np.int64)
    out = np.zeros((probs.shape[0], len(names)), dtype=np.float64)
    np.add.at(out.T, owner, np.asarray(probs, dtype=np.float64).T)
    return out, names


def _decode(probs: np.ndarray, labels: Sequence[str]) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """(full predictions, first-level predictions, first-level probs, first-level names), top-down."""
    l1_probs, names = first_level_probs(probs, labels)
    owner = np.array([names.index(_l1(x)) for x in labels])
    best = l1_probs.argmax(axis=1)
    masked = np.where(owner[None, :] == best[:, None], probs, -np.inf)
    full = [labels[i] for i in masked.argmax(axis=1)]
    return full, [names[i] for i in best], l1_probs, names


def _gold_index(y_true: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Column of each gold label, -1 for a label the model does not have."""
    index = {x: i for i, x in enumerate(labels)}
    return np.array([index.get(y, -1) for y in y_true], dtype=np.int64)


def _top_k(probs: np.ndarray, y_idx: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    order = np.argsort(-probs, axis=1, kind="stable")
    out = {}
    for k in ks:
        hit = (order[:, : min(int(k), probs.shape[1])] == y_idx[:, None]).any(axis=1)
        out[str(int(k))] = float(hit.mean()) if len(hit) else 0.0
    return out


def _level_figures(gold: list[str], pred: list[str]) -> dict:
    """Accuracy, F1 averages and per-class figures over every class seen in gold or predictions."""
    classes = sorted(set(gold) | set(pred))
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=classes, zero_division=0)
    avg = {
        a: float(f1_score(gold, pred, labels=classes, average=a, zero_division=0))
        for a in ("macro", "micro", "weighted")
    }
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": avg["macro"],
        "micro_f1": avg["micro"],
        "weighted_f1": avg["weighted"],
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
    }


def is_two_level(gold: Sequence[str | None], labels: Sequence[str]) -> bool:
    """Whether a gold set has full-label figures: some gold label is two-level, or the model's labels are all
    first-level. A set written at the first level throughout, scored by a two-level model, has none."""
    return any(y and SEP in y for y in gold) or not any(SEP in x for x in labels)


def compute_metrics(
    y_true: Sequence[str | None],
    probs: np.ndarray,
    labels: Sequence[str],
    top_k: Sequence[int] = (1, 3, 5),
    two_level: bool | None = None,
) -> dict:
    """All headline figures for one labelled set; a JSON-serialisable dict (see the module docstring).

    Rows whose gold label is missing (None or empty) are left out and counted in ``notes``. A gold label
    the model does not have counts as wrong at the full level (its first level may still be right).
    When every gold label is first-level only and the model's are two-level, the full-level figures are
    None and only the ``l1`` ones mean anything. ``two_level`` makes that choice for a part of a larger set
    (one source of it), so that its full-label rows are the ones the whole set counts (``is_two_level``).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(labels)
    if probs.ndim != 2 or probs.shape != (len(y_true), len(labels)):
        raise ValueError(
            f"expected probs of shape ({len(y_true)}, {len(labels)}) (documents, labels), got {probs.shape}"
        )
    notes: list[str] = []
    keep = [i for i, y in enumerate(y_true) if y]
    if len(keep) < len(y_true):
        notes.append(f"{len(y_true) - len(keep)} document(s) without a gold label were left out")
    gold, probs = [str(y_true[i]) for i in keep], probs[keep]
    if not gold:
        raise ValueError("no document has a gold label: nothing to score")
    full_pred, l1_pred, l1_probs, names = _decode(probs, labels)
    gold_l1 = [_l1(y) for y in gold]
    y_idx = _gold_index(gold, labels)

    l1_part = _level_figures(gold_l1, l1_pred)
    l1_part["top_k_accuracy"] = _top_k(l1_probs, _gold_index(gold_l1, names), top_k)
    l1_part["ece"] = expected_calibration_error(l1_probs, _gold_index(gold_l1, names))
    out: dict = {"n": len(gold), "decode": "hierarchical"}
    # Each row is scored at the depth it has: a first-level-only gold label (a portal that publishes 一级
    # alone) counts at the first level only. 其他, a first-level class without children, is a full label, but
    # a gold set written at the first level throughout has no full-label figures at all.
    known = set(labels)
    two_level = is_two_level(gold, labels) if two_level is None else two_level
    deep = [i for i, y in enumerate(gold) if is_full_label(y, known)] if two_level else []
    out["n_full"] = len(deep)
    if not deep:
        notes.append(
            "gold labels are first-level only while the model predicts two-level labels: "
            "full-label figures are None, read the l1 figures"
        )
        out.update(
            {k: None for k in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "per_class", "top_k_accuracy", "ece")}
        )
    else:
        if len(deep) < len(gold):
            notes.append(
                f"{len(gold) - len(deep)} document(s) with a first-level-only gold label are scored at the first "
                f"level only; full-label figures are over the other {len(deep)}"
            )
        gold_deep = [gold[i] for i in deep]
        out.update(_level_figures(gold_deep, [full_pred[i] for i in deep]))
        out["top_k_accuracy"] = _top_k(probs[deep], y_idx[deep], top_k)
        # Calibration of the model's own classes: a gold label it does not have is wrong whatever the score, so
        # it is left out here, as in the report's calibration table.
        own = [i for i in deep if y_idx[i] >= 0]
        out["ece"] = expected_calibration_error(probs[own], y_idx[own])
        unknown = Counter(y for y, i in zip(gold_deep, y_idx[deep]) if i < 0)
        if unknown:
            notes.append(
                f"{sum(unknown.values())} gold label(s) are not among the model's labels and count as "
                f"wrong at the full level: {', '.join(sorted(unknown))}"
            )
    flat_l1 = np.array([_l1(labels[i]) for i in probs.argmax(axis=1)])
    out.update(
        {
            "l1": l1_part,
            "l1_accuracy": l1_part["accuracy"],
            "l1_macro_f1": l1_part["macro_f1"],
            "level_disagreement": float(np.mean(flat_l1 != np.array(l1_pred))),
            "notes": notes,
        }
    )
    return out


def _confidence_and_hits(probs: np.ndarray, y_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    y_idx = np.asarray(y_idx)
    return probs.max(axis=1), probs.argmax(axis=1) == y_idx


def reliability_bins(probs: np.ndarray, y_idx: np.ndarray, n_bins: int = 15) -> list[dict]:
    """Equal-width confidence bins of the top probability: edges, mean confidence, accuracy and count.

    Empty bins are kept (with ``confidence`` and ``accuracy`` None) so every diagram has the same x axis.
    A gold index of -1 (label unknown to the model) counts as a miss.
    """
    conf, hit = _confidence_and_hits(probs, y_idx)
    # Right-closed bins: a confidence of exactly 1/n_bins belongs to the first bin, 1.0 to the last.
    which = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        m = which == b
        count = int(m.sum())
        bins.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": count,
                "confidence": float(conf[m].mean()) if count else None,
                "accuracy": float(hit[m].mean()) if count else None,
            }
        )
    return bins


def expected_calibration_error(probs: np.ndarray, y_idx: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top probability: the count-weighted mean |accuracy - confidence| over equal-width bins."""
    n = len(np.asarray(y_idx))
    if n == 0:
        return 0.0
    bins = reliability_bins(probs, y_idx, n_bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / n)


def _alternatives(row: np.ndarray, names: Sequence[str], k: int) -> list[dict]:
    top = np.argsort(-row, kind="stable")[:k]
    return [{"label": names[j], "score": round(float(row[j]), 4)} for j in top]


def worst_confusions(
    y_true: Sequence[str | None],
    probs: np.ndarray,
    labels: Sequence[str],
    titles: Sequence[str] | None,
    level: str = "l1",
    n: int = 10,
    examples: int = 3,
    alternatives: int = 3,
) -> list[dict]:
    """The ``n`` most frequent (gold -> predicted) mistakes at ``level`` ("l1" or "full").

    Each pair has ``count``, ``share`` (of that gold class's documents) and up to ``examples`` documents,
    the most confidently wrong first (those show systematic errors or wrong gold labels best), each with its
    title, the score given to the gold class and the model's top ``alternatives`` labels with scores.
    """
    if level not in ("l1", "full"):
        raise ValueError(f"level must be 'l1' or 'full', got {level!r}")
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(labels)
    full_pred, l1_pred, l1_probs, names = _decode(probs, labels)
    if level == "l1":
        pred, scores, columns = l1_pred, l1_probs, names
    else:
        pred, scores, columns = full_pred, probs, labels
    col = {c: i for i, c in enumerate(columns)}
    gold = [None if not y else (_l1(y) if level == "l1" else y) for y in y_true]
    support = Counter(g for g in gold if g)
    pairs: dict[tuple[str, str], list[int]] = {}
    for i, (g, p) in enumerate(zip(gold, pred)):
        if g and g != p:
            pairs.setdefault((g, p), []).append(i)
    ranked = sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:n]
    out = []
    for (g, p), docs in ranked:
        docs = sorted(docs, key=lambda i: -scores[i, col[p]])[:examples]
        out.append(
            {
                "gold": g,
                "predicted": p,
                "count": len(pairs[(g, p)]),
                "share": round(len(pairs[(g, p)]) / support[g], 4),
                "examples": [
                    {
                        "title": titles[i] if titles is not None else f"#{i}",
                        "gold_score": round(float(scores[i, col[g]]), 4) if g in col else 0.0,
                        "alternatives": _alternatives(scores[i], columns, alternatives),
                    }
                    for i in docs
                ],
            }
        )
    return out
