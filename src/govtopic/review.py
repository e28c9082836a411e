r"""Knowing when to ask a person: per-class thresholds for a target precision, and the review flag on results.

``fit_thresholds`` chooses, on labelled documents (the validation split), the lowest calibrated score each
predicted class needs so that the documents it lets through are right at least ``precision`` of the time
(a class's precision shrunk toward the whole model's at the same score, ``PRIOR_DOCS``, so that a class seen a
few times is not trusted on a handful):
first on the first level (``score_l1``), then, among the documents whose first level passed, on the full label
(``score``). One margin between the two most probable classes (each level's own) is chosen with them from a
small grid, the one that lets most documents through. A class whose documents never reach the precision (or
that has fewer than ``min_docs`` predictions to judge it by) gets no threshold: its documents always go to a
person, and the fit reports it.

``flag`` is applied to every ``predict()`` result of a model whose record holds thresholds; it adds
``needs_review`` and ``review_reason``:

- ``low_score``: the first level's score is below its class's threshold;
- ``close_second``: the two most probable classes are closer than the margin;
- ``class_never_reaches_precision``: the class has no threshold;
- ``second_level_unsure``: the first level passed, the full label did not; ``label`` becomes the first level
  alone (``score`` its ``score_l1``) and the model's full label is kept as ``label_suggested``;
- ``unlike_training``: fewer than ``UNFAMILIAR_SHARE`` of the document's character n-grams are known to the
  model's n-gram channel (a recipe, a novel, English: nothing like a government document). This one is flagged
  with or without thresholds, so a document unlike any in training is never silently forced into a class.

Without thresholds results are unchanged (no ``needs_review`` key). Documents the model cannot read (label None)
carry their ``reason`` instead.

Example:
    >>> th, report = fit_thresholds(probs, gold, labels, precision=0.95)
    >>> decide(probs, labels, th)["automatic"].mean()  # share of documents no person needs to see
    0.71
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence

import numpy as np

from govtopic.labels import SEP, hierarchical_decode, is_full_label, l1
from govtopic.ngram import UNFAMILIAR_SHARE

# A class's precision is judged as if this many documents of the model as a whole (any class, scored at or
# above the same cut) were added to its own: with a few hundred validation documents over twenty classes, a
# class's own handful overstates what it will do on new documents. Chosen by 5-fold cross-validation within
# the validation split (scripts/threshold_experiments.py): at precision 0.95 the held-out precision was
# 0.939 with none, 0.956 with 30; at 0.9, coverage 0.745 -> 0.781 at the same precision.
PRIOR_DOCS = 30.0
# Margins tried when none is given: 0 turns the close-second rule off.
MARGIN_GRID = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
# Thresholds are stored rounded down to this many decimals (config.json stays readable; float32 scores at
# prediction compare the same way as the float64 ones they were fitted on).
_DECIMALS = 6
REASONS = ("low_score", "close_second", "class_never_reaches_precision", "second_level_unsure", "unlike_training")


def _floor(x: float) -> float:
    return math.floor(x * 10**_DECIMALS) / 10**_DECIMALS


def _top_two_margin(p: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Probability of the chosen class minus the largest other one, per row."""
    rows = np.arange(len(p))
    other = p.copy()
    other[rows, chosen] = -np.inf
    rest = other.max(axis=1) if p.shape[1] > 1 else np.zeros(len(p))
    return p[rows, chosen] - np.where(np.isfinite(rest), rest, 0.0)


def scores(probs: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Predictions, scores and margins at both levels, decoded the way ``predict()`` decodes them."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(labels)
    full_idx, names, l1_probs = hierarchical_decode(probs, labels)
    l1_idx = l1_probs.argmax(axis=1)
    rows = np.arange(len(probs))
    return {
        "full": np.array([labels[i] for i in full_idx], dtype=object),
        "l1": np.array([names[i] for i in l1_idx], dtype=object),
        "score": probs[rows, full_idx],
        "score_l1": l1_probs[rows, l1_idx],
        "margin": _top_two_margin(probs, full_idx),
        "margin_l1": _top_two_margin(l1_probs, l1_idx),
    }


def _class_threshold(
    score: np.ndarray, hit: np.ndarray, precision: float, min_docs: int, pooled: tuple | None = None, prior: float = 0.0
) -> tuple[float | None, str]:
    """Lowest score at which the documents at or above it are right at least ``precision`` of the time.

    With ``prior`` > 0 the class's precision above a cut is shrunk toward the precision of every class's
    documents above the same cut (``pooled``: their scores in descending order and the running count of right
    ones), as if ``prior`` such documents were
    added to the class's own: a class seen a few times is judged mostly by the model as a whole, one seen often
    by its own documents.
    """
    if len(score) < min_docs:
        return None, f"too few documents ({len(score)} < {min_docs})"
    order = np.argsort(-score, kind="stable")
    s, h = score[order], hit[order].astype(float)
    n = np.arange(1, len(s) + 1)
    cum = np.cumsum(h) / n
    if prior > 0 and pooled is not None:
        descending, right = pooled
        # Documents of any class at or above each cut, and how many of them are right.
        above = np.searchsorted(-descending, -s, side="right")
        pooled_precision = np.where(above > 0, right[np.maximum(above - 1, 0)] / np.maximum(above, 1), 1.0)
        cum = (np.cumsum(h) + prior * pooled_precision) / (n + prior)
    # A cut after position k keeps rows 0..k; it is valid only where the next score is clearly lower, so that
    # "score >= rounded threshold" keeps exactly those rows.
    nxt = np.append(s[1:], -np.inf)
    floors = np.floor(s * 10**_DECIMALS) / 10**_DECIMALS
    ok = (cum >= precision - 1e-12) & (nxt < floors)
    if not ok.any():
        return None, f"no score reaches precision {precision:g} (best {cum.max():.3f})"
    k = int(np.flatnonzero(ok).max())
    return _floor(float(s[k])), ""


def _fit_level(pred, score, hit, margin, m, precision, min_docs, classes, keep, prior) -> tuple[dict, dict]:
    out, why = {}, {}
    considered = keep & (margin >= m)
    order = np.argsort(-score[considered], kind="stable")
    pooled = (score[considered][order], np.cumsum(hit[considered][order].astype(float)))
    for c in classes:
        rows = keep & (pred == c) & (margin >= m)
        t, reason = _class_threshold(score[rows], hit[rows], precision, min_docs, pooled, prior)
        out[c] = t
        if t is None:
            why[c] = reason
    return out, why


def _fit(s: dict, gold_l1, gold_full, full_rows, labels, precision, m, min_docs, prior) -> tuple[dict, dict]:
    names = list(dict.fromkeys(l1(x) for x in labels))
    everyone = np.ones(len(gold_l1), dtype=bool)
    t_l1, why_l1 = _fit_level(
        s["l1"], s["score_l1"], s["l1"] == gold_l1, s["margin_l1"], m, precision, min_docs, names, everyone, prior
    )
    th = {"precision": precision, "margin": m, "l1": t_l1, "full": {}}
    passed = decide_arrays(s, th)["l1_ok"]
    t_full, why_full = _fit_level(
        s["full"],
        s["score"],
        s["full"] == gold_full,
        s["margin"],
        m,
        precision,
        min_docs,
        labels,
        passed & full_rows,
        prior,
    )
    th["full"] = t_full
    return th, {"l1": why_l1, "full": why_full}


def decide_arrays(s: dict, thresholds: dict) -> dict[str, np.ndarray]:
    """Which documents pass each level (``l1_ok``, ``full_ok``) and which need no person (``automatic``)."""
    m = float(thresholds.get("margin") or 0.0)

    def passes(pred, score, margin, table):
        t = np.array([np.nan if table.get(c) is None else table[c] for c in pred], dtype=float)
        return np.isfinite(t) & (score >= np.nan_to_num(t, nan=np.inf)) & (margin >= m)

    l1_ok = passes(s["l1"], s["score_l1"], s["margin_l1"], thresholds.get("l1") or {})
    full_ok = l1_ok & passes(s["full"], s["score"], s["margin"], thresholds.get("full") or {})
    return {"l1_ok": l1_ok, "full_ok": full_ok, "automatic": full_ok}


def decide(probs: np.ndarray, labels: Sequence[str], thresholds: dict) -> dict[str, np.ndarray]:
    """``decide_arrays`` on probabilities (rows: documents, columns: the model's labels)."""
    return decide_arrays(scores(probs, labels), thresholds)


def _coverage(s, ok, hit, pred, rows) -> dict:
    """Coverage and precision overall and per predicted class, over ``rows``."""
    per_class = {}
    for c in sorted(set(pred[rows])):
        r = rows & (pred == c)
        n, kept = int(r.sum()), int((r & ok).sum())
        per_class[c] = {
            "predicted": n,
            "automatic": kept,
            "coverage": kept / n if n else 0.0,
            "precision": float(hit[r & ok].mean()) if kept else None,
        }
    n, kept = int(rows.sum()), int((rows & ok).sum())
    overall = {
        "documents": n,
        "automatic": kept,
        "coverage": kept / n if n else 0.0,
        "precision": float(hit[rows & ok].mean()) if kept else None,
    }
    return {"overall": overall, "per_class": per_class}


def _labelled(probs, gold: Sequence[str], labels: Sequence[str]) -> tuple:
    """The documents with a gold label: (which rows they are, their ``scores``, gold first level, gold label, and
    whether the gold label is one of the model's classes, so that the full label can be judged)."""
    keep = np.array([bool(y) for y in gold], dtype=bool)
    gold = [str(y) for y, k in zip(gold, keep) if k]
    s = scores(np.asarray(probs, dtype=np.float64)[keep], labels)
    known = set(labels)
    full_rows = np.array([is_full_label(y, known) for y in gold], dtype=bool)
    return keep, s, np.array([l1(y) for y in gold], dtype=object), np.array(gold, dtype=object), full_rows


def _levels(s: dict, l1_ok, full_ok, gold_l1, gold_full, full_rows) -> dict:
    """Coverage and precision at both levels: every document at the first, those with a full gold label at the
    full label."""
    everyone = np.ones(len(gold_l1), dtype=bool)
    return {
        "l1": _coverage(s, l1_ok, s["l1"] == gold_l1, s["l1"], everyone),
        "full": _coverage(s, full_ok, s["full"] == gold_full, s["full"], full_rows),
    }


def check_fit_args(precision: float, margin: float | None, prior_docs: float, min_docs: int = 1) -> None:
    """A ValueError naming the argument and its range for ``fit_thresholds``' settings (checked before any work)."""
    if not (isinstance(precision, (int, float)) and 0 < precision <= 1):
        raise ValueError(f"precision must be a number in (0, 1], e.g. 0.95; got {precision!r}")
    if margin is not None and not (0 <= margin < 1):
        raise ValueError(f"margin must be in [0, 1), e.g. 0.1; got {margin!r}")
    if (
        isinstance(prior_docs, bool)
        or not isinstance(prior_docs, (int, float))
        or not (prior_docs >= 0 and np.isfinite(prior_docs))
    ):
        raise ValueError(
            f"prior_docs must be a number of documents, 0 or more, and finite (e.g. 30); got {prior_docs!r}"
        )
    if isinstance(min_docs, bool) or not isinstance(min_docs, (int, np.integer)) or min_docs < 1:
        raise ValueError(f"min_docs must be a whole number of documents, at least 1 (e.g. 5); got {min_docs!r}")


def fit_thresholds(
    probs: np.ndarray,
    gold: Sequence[str],
    labels: Sequence[str],
    precision: float = 0.95,
    margin: float | None = None,
    min_docs: int = 5,
    prior_docs: float = PRIOR_DOCS,
) -> tuple[dict, dict]:
    r"""Per-class thresholds reaching ``precision`` on labelled documents, and a report of the coverage reached.

    Args:
        probs: calibrated probabilities, rows documents, columns the model's labels (temperature applied).
        gold: each document's gold label, ``一级\二级`` or ``一级`` (first-level rows count at the first level).
        labels: the model's labels in column order (its ``id2label``).
        precision: the precision wanted among documents no person sees, between 0 and 1.
        margin: the smallest gap between the two most probable classes; None chooses it from ``MARGIN_GRID``.
        min_docs: a class predicted fewer times than this gets no threshold (its documents always go to review).
        prior_docs: how many documents of the model as a whole a class's own are pooled with when its precision
            above a cut is judged (0: its own documents alone); see ``PRIOR_DOCS``.

    Returns:
        (thresholds, report): thresholds as stored in the model record (``precision``, ``margin``, ``l1``,
        ``full``; a class mapped to None always goes to review), and per level the coverage and precision
        reached, overall and per class, with ``never_automatic`` naming each class without a threshold and why.

    Example:
        >>> th, report = fit_thresholds(probs, ["卫生、体育\\卫生", "其他"], labels, precision=0.95)
        >>> report["full"]["overall"]["coverage"]
        0.5
    """
    check_fit_args(precision, margin, prior_docs, min_docs)
    probs, labels = np.asarray(probs, dtype=np.float64), list(labels)
    if probs.shape != (len(gold), len(labels)):
        raise ValueError(f"expected probs of shape ({len(gold)}, {len(labels)}), got {probs.shape}")
    keep, s, gold_l1, gold_full, full_rows = _labelled(probs, gold, labels)
    if not keep.any():
        raise ValueError("no document has a gold label: thresholds need labelled documents (the validation split)")
    best = None
    for m in [margin] if margin is not None else MARGIN_GRID:
        th, why = _fit(s, gold_l1, gold_full, full_rows, labels, float(precision), m, min_docs, prior_docs)
        ok = decide_arrays(s, th)
        covered = ok["l1_ok"].mean() + ok["full_ok"][full_rows].mean() if full_rows.any() else ok["l1_ok"].mean()
        if best is None or covered > best[0] + 1e-12:
            best = (covered, th, why, ok)
    _, th, why, ok = best
    report = {
        "precision": float(precision),
        "margin": th["margin"],
        "prior_docs": float(prior_docs),
        **_levels(s, ok["l1_ok"], ok["full_ok"], gold_l1, gold_full, full_rows),
    }
    for level in ("l1", "full"):
        report[level]["never_automatic"] = why[level]
    return th, report


def held_out(
    probs: np.ndarray,
    gold: Sequence[str],
    labels: Sequence[str],
    thresholds: dict,
    known_share: Sequence[float] | None = None,
) -> dict:
    r"""What stored thresholds do on labelled documents they were not fitted on: per level, the share of
    documents tagged without a person (coverage) and how often those are right (precision), overall and per
    predicted class, next to the precision they were fitted for.

    Args:
        probs: calibrated probabilities, rows documents, columns the model's labels.
        gold: each document's gold label (first-level rows count at the first level only; '' rows are skipped).
        labels: the model's labels in column order.
        thresholds: the model record's thresholds (``fit_thresholds``).
        known_share: each document's ``known_ngrams`` (the n-gram channel's share of known n-grams), when the
            model has a channel: documents below ``UNFAMILIAR_SHARE`` go to a person whatever their score, as
            ``predict()`` sends them.

    Returns:
        ``{"precision_target", "margin", "unlike_training", "l1": {...}, "full": {...}}``; each level has
        ``overall`` (``documents``, ``automatic``, ``coverage``, ``precision``) and ``per_class``.

    Example:
        >>> held_out(probs, ["卫生、体育\卫生", "其他"], labels, clf.record.thresholds)["l1"]["overall"]
        {'documents': 2, 'automatic': 1, 'coverage': 0.5, 'precision': 1.0}
    """
    keep, s, gold_l1, gold_full, full_rows = _labelled(probs, gold, labels)
    ok = decide_arrays(s, thresholds)
    unlike = np.zeros(len(gold_l1), dtype=bool)
    if known_share is not None:
        unlike = np.asarray(known_share, dtype=float)[keep] < UNFAMILIAR_SHARE
    return {
        "precision_target": thresholds.get("precision"),
        "margin": thresholds.get("margin"),
        "unlike_training": int(unlike.sum()),
        **_levels(s, ok["l1_ok"] & ~unlike, ok["full_ok"] & ~unlike, gold_l1, gold_full, full_rows),
    }


def thresholds_by_source(
    probs: np.ndarray,
    gold: Sequence[str],
    sources: Sequence[str],
    labels: Sequence[str],
    thresholds: dict,
    known: Sequence[float] | None = None,
) -> dict:
    """What review thresholds do on each source's documents (empty when there is one source): per source,
    ``held_out``'s overall figures at both levels.

    Args:
        probs: calibrated probabilities, rows documents, columns ``labels``.
        gold: each document's gold label (as ``held_out`` reads them).
        sources: each document's source (a split's ``sources``: the training source or ``--group-by`` value).
        labels: the model's labels in column order.
        thresholds: the model record's thresholds.
        known: each document's share of known n-grams (see ``held_out``), or None.

    Example:
        >>> by_source = thresholds_by_source(probs, split.labels, split.sources, clf.labels, clf.record.thresholds)
        >>> by_source["official"]["l1"]
        {'documents': 159, 'automatic': 119, 'coverage': 0.748, 'precision': 0.882}
    """
    from govtopic.data import source_groups

    out = {}
    for name, rows in source_groups(list(sources)).items():
        share = None if known is None else [known[i] for i in rows]
        got = held_out(probs[rows], [gold[i] for i in rows], labels, thresholds, share)
        out[name] = {level: got[level]["overall"] for level in ("l1", "full")}
    return out


# ---------------------------------------------------------------- the flag on predict() results
def _reason(score: float, margin: float, t: float | None, m: float) -> str | None:
    if t is None:
        return "class_never_reaches_precision"
    if score < t:
        return "low_score"
    if margin < m:
        return "close_second"
    return None


def flag(result: dict, probs: np.ndarray, labels: Sequence[str], thresholds: dict | None) -> dict:
    """Add ``needs_review`` and ``review_reason`` to one ``predict()`` result (unchanged without thresholds,
    unless the document is unlike training: ``known_ngrams`` below ``UNFAMILIAR_SHARE``).

    Args:
        result: the result of one document (``label``, ``label_l1``, ``score``, ``score_l1``, ...).
        probs: that document's calibrated probabilities over ``labels``.
        labels: the model's labels in column order.
        thresholds: the model record's ``thresholds`` (see ``fit_thresholds``), or None.

    Example:
        >>> flag({"label": "卫生、体育\\卫生", "label_l1": "卫生、体育", ...}, probs, labels, th)["needs_review"]
        False
    """
    if result.get("known_ngrams", 1.0) < UNFAMILIAR_SHARE:
        result["needs_review"], result["review_reason"] = True, "unlike_training"
        return result
    if not thresholds:
        return result
    s = scores(np.asarray(probs)[None, :], labels)
    m = float(thresholds.get("margin") or 0.0)
    first = str(s["l1"][0])
    why = _reason(s["score_l1"][0], s["margin_l1"][0], (thresholds.get("l1") or {}).get(first), m)
    if why is None:
        label = str(s["full"][0])
        why = _reason(s["score"][0], s["margin"][0], (thresholds.get("full") or {}).get(label), m)
        if why is not None and SEP in label and result.get("label") == label:
            # The first level is sure, the second is not: give the first level alone and ask about the second.
            result.update(label=first, score=result["score_l1"], label_suggested=label)
            why = "second_level_unsure"
    result["needs_review"] = why is not None
    result["review_reason"] = why
    return result


def describe(result: dict, thresholds: dict | None = None) -> str:
    """Why a result is in the review queue, in a sentence a reviewer reads."""
    why = result.get("review_reason")
    if result.get("label") is None and result.get("reason"):
        return f"not read: {result['reason']}"
    th = thresholds or {}
    target = f"{th['precision']:.0%} precision" if th.get("precision") else "the target precision"
    first, label = result.get("label_l1"), result.get("label_suggested") or result.get("label")
    if why == "second_level_unsure":
        t = (th.get("full") or {}).get(label)
        needed = f"needs {t:.2f}" if t is not None else "never reaches it"
        return f"first level {first} is sure; second level {label} is not (for {target} it {needed})"
    if why == "low_score":
        t = (th.get("l1") or {}).get(first)
        return f"score {result.get('score_l1', 0):.2f} for {first} is below its threshold {t:.2f} for {target}"
    if why == "close_second":
        alts = result.get("top_k_l1") or result.get("top_k") or []
        second = alts[1]["label"] if len(alts) > 1 else "another class"
        return f"close second: {second} is within {th.get('margin', 0):.2f} of {first}"
    if why == "class_never_reaches_precision":
        return f"{first}: no score reaches {target} for this class on the validation split, so a person decides"
    if why == "unlike_training":
        known = result.get("known_ngrams", 0.0)
        return (
            f"unlike the training documents: only {known:.0%} of its character n-grams are known to the model "
            f"(government documents have {UNFAMILIAR_SHARE:.0%} or more); is it a government document at all?"
        )
    return "no review needed"


def format_report(report: dict) -> str:
    """The coverage report as text for the terminal: overall, then each class, then those never automatic."""
    lines = [
        f"thresholds for precision {report['precision']:g} fitted on {report.get('documents', '?')} documents "
        f"({report.get('data', 'labelled data')}); margin {report['margin']:g}; each class's precision judged "
        f"with {report.get('prior_docs', 0):g} documents of the whole model pooled in"
    ]
    for level, name in (("l1", "first level"), ("full", "full label")):
        o = report[level]["overall"]
        prec = "n/a" if o["precision"] is None else f"{o['precision']:.3f}"
        lines.append(
            f"{name}: {o['automatic']} of {o['documents']} documents automatic (coverage {o['coverage']:.1%}, "
            f"precision {prec})"
        )
        for c, v in sorted(report[level]["per_class"].items(), key=lambda kv: -kv[1]["predicted"]):
            p = "n/a" if v["precision"] is None else f"{v['precision']:.3f}"
            lines.append(f"  {c}: {v['automatic']}/{v['predicted']} automatic ({v['coverage']:.0%}), precision {p}")
        for c, why in report[level]["never_automatic"].items():
            lines.append(f"  always reviewed: {c}: {why}")
    lines += _source_lines(report)
    if not report["l1"]["overall"]["automatic"]:
        lines.append(
            f"no class reaches precision {report['precision']:g} on these documents: every document goes to "
            "review. Lower --precision (e.g. 0.9), or fit on more labelled documents"
        )
    return "\n".join(lines)


def _source_lines(report: dict) -> list[str]:
    """What the thresholds do on each training source's rows (first level), with a hint where a source falls
    short of the target: the other sources' documents pulled its thresholds down."""
    lines = []
    for name, levels in (report.get("per_source") or {}).items():
        o = levels["l1"]
        if not lines:
            lines.append("first level by training source:")
        prec = "n/a" if o["precision"] is None else f"{o['precision']:.3f}"
        line = (
            f"  {name}: {o['automatic']} of {o['documents']} documents automatic (coverage {o['coverage']:.1%}, "
            f"precision {prec})"
        )
        if o["precision"] is not None and o["precision"] < report["precision"] - 1e-9:
            line += (
                f": under {report['precision']:g}. If the documents you tag are like {name}'s, fit on its rows "
                f"alone (--source {shlex.quote(name)})"
            )
        lines.append(line)
    return lines
