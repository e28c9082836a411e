"""How review thresholds fitted on the validation split hold on documents they were not fitted on.

For a model folder: its validation split (of its own training sources) is scored once; then, for each way of
judging a class's precision (``prior_docs``: 0 = each class by its own documents, larger = pooled with the whole
model's documents at the same score; and one global cut for every class), thresholds are

1. fitted on 4/5 of the validation split and applied to the other fifth, 5 folds × 10 repeats: the held-out
   coverage and precision at the first level (how the default ``review.PRIOR_DOCS`` was chosen: validation only);
2. fitted on the whole validation split and applied to each ``--eval`` file, as ``govtopic evaluate`` reports them
   (first level: coverage, precision).

    python scripts/threshold_experiments.py runs/cpu-official/model \\
        --eval ../shared/data/official.jsonl.gz:test ../shared/data/gold_dev.jsonl:all
"""

from __future__ import annotations

import argparse

import numpy as np

from govtopic.calibration import level_softmax
from govtopic.data import load_eval_file, load_labelled
from govtopic.evaluation import model_scheme, saved_config
from govtopic.labels import l1
from govtopic.predict import TopicClassifier
from govtopic.review import fit_thresholds, held_out, scores

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


def fit(method, probs, gold, labels, target: float) -> dict:
    if method == "global":
        return global_cut(probs, gold, labels, target)
    return fit_thresholds(probs, gold, labels, target, prior_docs=method)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--eval", nargs="*", default=[], help="FILE[:SPLIT] (SPLIT 'all' for every row; default test)")
    p.add_argument("--precision", type=float, nargs="*", default=[0.9, 0.95])
    args = p.parse_args()
    cfg = saved_config(args.model_dir)
    clf = TopicClassifier(args.model_dir)
    labels = list(clf.labels)
    val_p, val_y = probabilities(clf, load_labelled(cfg.data, cfg.normalize, cfg.train.seed).validation)
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
    head = ["target", "method", "validation, 5-fold held out", *sets]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for target in args.precision:
        for method in methods:
            auto = right = 0
            for repeat in range(10):
                fold = np.random.default_rng(repeat).integers(0, 5, len(y))
                for f in range(5):
                    th = fit(method, val_p[fold != f], list(y[fold != f]), labels, target)
                    o = held_out(val_p[fold == f], list(y[fold == f]), labels, th)["l1"]["overall"]
                    auto += o["automatic"]
                    right += (o["precision"] or 0.0) * o["automatic"]
            cells = [f"{auto / (10 * len(y)):.3f} / {right / max(auto, 1):.3f}"]
            th = fit(method, val_p, val_y, labels, target)
            for probs, gold in sets.values():
                o = held_out(probs, gold, labels, th)["l1"]["overall"]
                cells.append(f"{o['coverage']:.3f} / {o['precision'] or 0:.3f}")
            name = method if method == "global" else f"prior_docs {method}"
            print(f"| {target:g} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
