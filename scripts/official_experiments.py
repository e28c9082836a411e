"""First-level accuracy of one trained model under different title weights and n-gram channel weights, on the
``official`` test split (gov.cn and Hebei rows apart) and on ``gold_dev.jsonl``, beside the TF-IDF model
trained on the model's own training sources, all in one run.

Both settings are read at prediction time, so one trained model answers how much the title window and the
n-gram channel are worth without training again.

    python scripts/official_experiments.py runs/cpu-official/model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from govtopic.calibration import softmax
from govtopic.data import load_eval_file, load_labelled
from govtopic.evaluation import _baseline, _baseline_probs, model_scheme, saved_config
from govtopic.labels import hierarchical_decode, l1
from govtopic.ngram import mix
from govtopic.predict import TopicClassifier


def l1_accuracy(probs: np.ndarray, labels: list[str], gold: list[str]) -> float:
    _, names, l1_probs = hierarchical_decode(probs, labels)
    pred = np.array(names)[l1_probs.argmax(axis=1)]
    return float(np.mean(pred == np.array([l1(y) for y in gold])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--official", default="../shared/data/official.jsonl.gz")
    p.add_argument("--gold", default="../shared/data/gold_dev.jsonl")
    p.add_argument("--title-weights", default="0,0.25,0.5,0.75,1")
    p.add_argument("--output", help="JSON file for the figures (default: MODEL_DIR/../official_experiments.json)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    clf = TopicClassifier(args.model_dir)
    cfg = saved_config(args.model_dir)
    scheme = model_scheme(args.model_dir, cfg)
    sets = {}
    official = load_eval_file(args.official, cfg.data, cfg.normalize, "test", scheme, group_by="label_source")
    for group in sorted(set(official.sources)):
        sets[group] = official.subset([i for i, s in enumerate(official.sources) if s == group])
    sets["official (all)"] = official
    sets["gold_dev"] = load_eval_file(args.gold, cfg.data, cfg.normalize, None, scheme)

    base, mixed = _baseline(load_labelled(cfg.data, cfg.normalize, cfg.train.seed).train, cfg)
    weights = [float(w) for w in args.title_weights.split(",")]
    ngram_weight, full_weight = clf.record.ngram_weight, clf.record.ngram_full_weight
    rows = []
    for name, split in sets.items():
        started = time.time()
        row = {"set": name, "documents": len(split)}
        row["tfidf"] = l1_accuracy(_baseline_probs(base, mixed, split, clf.labels), clf.labels, split.labels)
        for w in weights:
            ld = dataclasses.replace(clf.long_doc, title_weight=w)
            logits, _ = clf.document_logits(split.texts, ld, 32, titles=split.titles, ngram=False)
            row[f"transformer, title {w:g}"] = l1_accuracy(softmax(logits), clf.labels, split.labels)
            if clf.ngram is not None and max(ngram_weight, full_weight) > 0:
                first, full = clf.ngram.parts(split.texts, split.titles, clf.labels)
                mixed_logits = mix(logits, first, full, ngram_weight, full_weight, clf.labels)
                row[f"hybrid, title {w:g}"] = l1_accuracy(softmax(mixed_logits), clf.labels, split.labels)
        row["seconds"] = round(time.time() - started, 1)
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)

    columns = [k for k in rows[0] if k not in ("set", "documents", "seconds")]
    print(
        f"\nfirst-level accuracy; model {args.model_dir}, title rule {clf.long_doc.title} "
        f"(trained with title weight {clf.long_doc.title_weight:g}), n-gram channel weights {ngram_weight:g} "
        f"(first level), {full_weight:g} (full labels)\n"
    )
    print("| set | docs | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for row in rows:
        print(f"| {row['set']} | {row['documents']} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    out = Path(args.output) if args.output else Path(args.model_dir).parent / "official_experiments.json"
    out.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"\nfigures written to {out}")


if __name__ == "__main__":
    main()
