"""How review thresholds fitted on the validation split hold on documents they were not fitted on.

For a model folder: its validation split (of its own training sources, or of those named by ``--source``, as
``govtopic calibrate-thresholds --source`` fits) is scored once; then, for each way of
judging a class's precision (``prior_docs``: 0 = each class by its own documents, larger = pooled with the whole
model's documents at the same score; and one global cut for every class), thresholds are

1. fitted on 4/5 of the validation split and applied to the other fifth, 5 folds × 10 repeats: the held-out
   coverage and precision at the first level (how the default ``review.PRIOR_DOCS`` was chosen: validation only);
2. fitted on the whole validation split and applied to each ``--eval`` file, as ``govtopic evaluate`` reports them
   (first level: coverage, precision), and, beside it, fitted on 4/5 of that file itself and applied to the
   other fifth as in 1 (what a portal gets by calibrating on a few dozen of its own labelled documents,
   ``govtopic calibrate-thresholds MODEL its_file.jsonl --split all``, rather than on the training sources);
3. for each ``--eval`` file, two bounds found with hindsight (the file's own labels known), each the best
   cut of its kind plus one margin from ``review.MARGIN_GRID``: **one cut** on the first-level score for every
   class (how well the score ranks the file's documents), and **per-class cuts**, the kind
   ``govtopic calibrate-thresholds`` fits (how far thresholds could go if the data they are fitted on looked
   like the file; on a small file its 20-odd cuts, chosen on the labels themselves, flatter it). Each gives the
   precision of the best half (with a 95% Wilson interval: on a small file one document moves it) and the
   largest coverage at each target.

    python scripts/threshold_experiments.py runs/cpu-official/model [--source official] \\
        --eval ../shared/data/official.jsonl.gz:test ../shared/data/gold_dev.jsonl:all
"""

from __future__ import annotations

import argparse

import numpy as np

from govtopic.calibration import level_softmax
from govtopic.data import DataError, check_source_names, load_eval_file, load_labelled, source_rows
from govtopic.evaluation import model_scheme, saved_config
from govtopic.labels import l1
from govtopic.predict import TopicClassifier
from govtopic.review import MARGIN_GRID, fit_thresholds, held_out, scores

PRIORS = (0, 10, 30, 100)


def probabilities(clf: TopicClassifier, data) -> tuple[np.ndarray, list[str]]:
    logits, _ = clf.document_logits(data.texts, clf.long_doc, 32, titles=data.titles)
    return level_softmax(logits, clf.temperature, clf.labels), list(data.labels)


def global_cut(probs, gold, labels, target: float) -> dict:
    """One first-level threshold for every class: the lowest score above which the documents reach ``target``."""
    s = scores(probs, labels)
    hit = s["l1"] == np.array([l1(y) for y in gold], dtype=object)
    order = np.argsort(-s["score_l1"], kind="stable")
    precision = np.cumsum(hit[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= target)
    t = float(s["score_l1"][order][ok.max()]) if len(ok) else None
    return {"precision": target, "margin": 0.0, "l1": {l1(x): t for x in labels}, "full": {x: 0.0 for x in labels}}


def wilson(right: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion of ``right`` in ``n``."""
    if n == 0:
        return 0.0, 1.0
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def best_cuts(pred, score, hit, margin) -> np.ndarray:
    """Most right documents among ``n`` tagged, for every ``n``, over per-class score cuts and the grid's margins
    (one cut for every class: pass the same ``pred`` for every document).

    A per-class cut tags a prefix of that class's documents in score order (ties together), so the best
    combination is a knapsack over classes: ``best[n]`` is the most right documents any choice of prefixes
    tagging ``n`` has."""
    overall = np.full(len(score) + 1, -np.inf)
    for m in MARGIN_GRID:
        keep = margin >= m
        best = np.full(len(score) + 1, -np.inf)
        best[0] = 0.0
        for c in np.unique(pred[keep]):
            rows = np.flatnonzero(keep & (pred == c))
            ordered = score[rows][np.argsort(-score[rows], kind="stable")]
            right = np.concatenate([[0], np.cumsum(hit[rows[np.argsort(-score[rows], kind="stable")]])])
            # A cut can only fall where the score drops: documents with the same score are tagged together.
            cuts = [0, *(k for k in range(1, len(rows) + 1) if k == len(rows) or ordered[k] < ordered[k - 1])]
            grown = np.full_like(best, -np.inf)
            for k in cuts:
                grown[k:] = np.maximum(grown[k:], best[: len(best) - k] + right[k])
            best = grown
        overall = np.maximum(overall, best)
    return overall


def hindsight(probs, gold, labels, targets) -> list[str]:
    """The two bounds, labels known (one cut, per-class cuts): precision of the best half, coverage per target."""
    s = scores(probs, labels)
    hit = s["l1"] == np.array([l1(y) for y in gold], dtype=object)
    rows = []
    for name, pred in (("one cut", np.zeros(len(hit))), ("per-class cuts", s["l1"])):
        best = best_cuts(pred, s["score_l1"], hit, s["margin_l1"])
        n = np.arange(len(best))
        half = int(np.ceil(len(hit) / 2))
        right = int(best[half])
        lo, hi = wilson(right, half)
        cells = [name, f"{right / half:.3f} [{lo:.2f}, {hi:.2f}] ({right}/{half})"]
        for target in targets:
            ok = np.flatnonzero((n > 0) & (best >= target * n - 1e-9))
            cells.append(f"{ok.max() / len(hit):.3f}" if len(ok) else "0")
        rows.append(" | ".join(cells))
    return rows


def fit(method, probs, gold, labels, target: float) -> dict:
    if method == "global":
        return global_cut(probs, gold, labels, target)
    return fit_thresholds(probs, gold, labels, target, prior_docs=method)[0]


def cross_fit(method, probs, y: np.ndarray, labels, target: float) -> str:
    """Thresholds fitted on 4/5 of the documents, applied to the other fifth (5 folds x 10 repeats): the pooled
    coverage / precision of the held-out documents at the first level."""
    auto = right = 0
    for repeat in range(10):
        fold = np.random.default_rng(repeat).integers(0, 5, len(y))
        for f in range(5):
            th = fit(method, probs[fold != f], list(y[fold != f]), labels, target)
            o = held_out(probs[fold == f], list(y[fold == f]), labels, th)["l1"]["overall"]
            auto += o["automatic"]
            right += (o["precision"] or 0.0) * o["automatic"]
    return f"{auto / (10 * len(y)):.3f} / {right / max(auto, 1):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--eval", nargs="*", default=[], help="FILE[:SPLIT] (SPLIT 'all' for every row; default test)")
    p.add_argument("--precision", type=float, nargs="*", default=[0.9, 0.95])
    p.add_argument("--source", nargs="*", help="fit on the validation rows of these training sources only")
    args = p.parse_args()
    cfg = saved_config(args.model_dir)
    if args.source:
        try:
            check_source_names(args.source, cfg.data)
        except DataError as err:
            p.error(str(err))
    clf = TopicClassifier(args.model_dir)
    labels = list(clf.labels)
    validation = load_labelled(cfg.data, cfg.normalize, cfg.train.seed).validation
    if args.source:
        validation = source_rows(validation, args.source, cfg.data)
    val_p, val_y = probabilities(clf, validation)
    sets = {}
    for spec in args.eval:
        path, _, split = spec.partition(":")
        split = split or "test"
        data = load_eval_file(
            path, cfg.data, cfg.normalize, None if split == "all" else split, model_scheme(args.model_dir, cfg)
        )
        sets[spec] = probabilities(clf, data)
    methods = [*PRIORS, "global"]
    y = np.array(val_y, dtype=object)
    print(
        f"validation split: {len(y)} documents; first level: coverage / precision of the documents tagged "
        "without a person"
    )
    head = ["target", "method", "validation, 5-fold held out", *sets, *(f"{spec}, its own 5-fold" for spec in sets)]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for target in args.precision:
        for method in methods:
            cells = [cross_fit(method, val_p, y, labels, target)]
            th = fit(method, val_p, val_y, labels, target)
            for probs, gold in sets.values():
                o = held_out(probs, gold, labels, th)["l1"]["overall"]
                cells.append(f"{o['coverage']:.3f} / {o['precision'] or 0:.3f}")
            for probs, gold in sets.values():
                cells.append(cross_fit(method, probs, np.array(gold, dtype=object), labels, target))
            name = method if method == "global" else f"prior_docs {method}"
            print(f"| {target:g} | {name} | " + " | ".join(cells) + " |")
    if sets:
        print("\nwith hindsight (each file's labels known): the best cuts on the first-level score, with a margin")
        head = [
            "file",
            "cuts",
            "precision of the best 50% [95% interval]",
            *(f"largest coverage at {t:g}" for t in args.precision),
        ]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for spec, (probs, gold) in sets.items():
            for row in hindsight(probs, gold, labels, args.precision):
                print(f"| {spec} | {row} |")


if __name__ == "__main__":
    main()
