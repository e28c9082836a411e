"""Long-document strategies side by side on one model: macro-F1 and documents/s.

    python scripts/compare_strategies.py runs/quickstart/model

For each of head, head_tail, chunks/mean and chunks/max: first-level and full-label macro-F1 and accuracy,
and documents per second (normalisation excluded, tokenization and model included), on the regulations test
split (full documents from ../shared/data when present, else the bundled sample) and on gold_dev.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from govtopic.calibration import softmax
from govtopic.data import load_eval_file
from govtopic.evaluation import saved_config
from govtopic.metrics import compute_metrics
from govtopic.predict import TopicClassifier

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VARIANTS = [("head", "mean"), ("head_tail", "mean"), ("chunks", "mean"), ("chunks", "max")]


def data_files() -> list[tuple[str, Path, str | None]]:
    regs = SHARED / "regulations.jsonl.gz"
    if not regs.is_file():
        regs = ROOT / "data" / "regulations_sample.jsonl.gz"
    gold = SHARED / "gold_dev.jsonl" if (SHARED / "gold_dev.jsonl").is_file() else ROOT / "data" / "gold_dev.jsonl"
    return [("regulations test", regs, "test"), ("gold_dev", gold, None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    cfg = saved_config(args.model_dir)
    clf = TopicClassifier(args.model_dir, device="cpu")
    print(f"model {args.model_dir} (trained with {clf.long_doc.strategy}, max_length {clf.long_doc.max_length})")
    header = f"{'data':<17} {'strategy':<12} {'pool':<5} {'l1 acc':>7} {'l1 F1':>7} {'acc':>7} {'F1':>7} {'docs/s':>8}"
    print(header)
    for name, path, split in data_files():
        docs = load_eval_file(path, cfg.data, clf.normalize_config, split)
        for strategy, pooling in VARIANTS:
            ld = dataclasses.replace(clf.long_doc, strategy=strategy, pooling=pooling)
            start = time.perf_counter()
            logits, _ = clf.document_logits(docs.texts, ld, args.batch_size)
            rate = len(docs) / (time.perf_counter() - start)
            m = compute_metrics(docs.labels, softmax(logits, clf.temperature), clf.labels)
            full = "    n/a" if m["macro_f1"] is None else f"{m['accuracy']:>7.3f} {m['macro_f1']:>7.3f}"
            print(
                f"{name:<17} {strategy:<12} {pooling:<5} {m['l1_accuracy']:>7.3f} {m['l1_macro_f1']:>7.3f} "
                f"{full} {rate:>8.1f}"
            )


if __name__ == "__main__":
    main()
