"""Benchmark govtopic.predict against transformers.pipeline on the same model and documents.

    python scripts/benchmark_predict.py --model runs/quickstart/model --docs 500

Both read the same raw documents from the regulations test split, with the same batch size and the same
truncation (govtopic's ``head`` strategy at the pipeline's ``max_length``). Each measurement runs in its own
process so its peak memory is its own. Then the cost per document of the ``chunks`` strategy as documents
get longer, and dynamic int8 quantisation against fp32 (speed and agreement).
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT.parent / "shared" / "data" / "regulations.jsonl.gz", ROOT / "data" / "regulations_sample.jsonl.gz"]


def load_docs(n: int) -> tuple[list[str], list[str], str]:
    """Labelled test-split bodies and their gold labels."""
    source = next(p for p in SOURCES if p.is_file())
    with gzip.open(source, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rows = [r for r in rows if r["split"] == "test" and r["label"]][:n]
    return [r["text"] for r in rows], [r["label"] for r in rows], str(source)


def accuracy(labels: list, gold: list[str]) -> str:
    """Full-label and first-level accuracy against the gold labels."""
    full = sum(a == g for a, g in zip(labels, gold)) / len(gold)
    first = sum(a is not None and a.split("\\")[0] == g.split("\\")[0] for a, g in zip(labels, gold)) / len(gold)
    return f"accuracy {full:.3f} (first level {first:.3f})"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_govtopic(model, docs, batch_size, max_length, strategy, quantize, queue):
    import dataclasses

    from govtopic import TopicClassifier

    clf = TopicClassifier(model, device="cpu", quantize=quantize)
    clf.long_doc = dataclasses.replace(clf.long_doc, max_length=max_length)
    clf.predict(docs[:8], batch_size=batch_size, long_doc=strategy)  # warm-up
    start = time.perf_counter()
    out = clf.predict(docs, batch_size=batch_size, long_doc=strategy)
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "labels": [r["label"] for r in out], "peak_mb": _peak_mb()})


def _run_pipeline(model, docs, batch_size, max_length, queue):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=model, device="cpu")
    pipe(docs[:8], batch_size=batch_size, truncation=True, max_length=max_length)
    start = time.perf_counter()
    out = pipe(docs, batch_size=batch_size, truncation=True, max_length=max_length)
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "labels": [r["label"] for r in out], "peak_mb": _peak_mb()})


def measure(target, *args) -> dict:
    """Run ``target`` in a fresh process (its own peak memory) and return what it reports."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def agreement(a: list, b: list) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)


def length_scaling(model: str, docs: list[str], batch_size: int, lengths: list[int]) -> None:
    from govtopic import TopicClassifier

    clf = TopicClassifier(model, device="cpu")
    text = "".join(docs)
    print("\nchunks strategy, cost per document as documents get longer (16 documents each)")
    print(f"{'chars':>8} {'windows':>8} {'ms/doc':>9} {'ms per 1k chars':>16}")
    clf.predict(docs[:16], batch_size=batch_size, long_doc="chunks")  # warm-up: first-call set-up is not cost
    for n in lengths:
        batch = [text[i * 997 % max(1, len(text) - n) :][:n] for i in range(16)]
        start = time.perf_counter()
        out = clf.predict(batch, batch_size=batch_size, long_doc="chunks")
        ms = (time.perf_counter() - start) * 1000 / len(batch)
        print(f"{n:>8} {out[0]['windows']:>8} {ms:>9.1f} {ms / (n / 1000):>16.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "runs" / "quickstart" / "model"))
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lengths", default="1000,2000,4000,8000,16000,32000")
    args = parser.parse_args()
    docs, gold, source = load_docs(args.docs)
    chars = sum(map(len, docs))
    print(
        f"model {args.model}; {len(docs)} documents from {source} (mean {chars / len(docs):.0f} characters); "
        f"batch {args.batch_size}, max_length {args.max_length}, torch threads {os.cpu_count()}"
    )
    common = (args.model, docs, args.batch_size, args.max_length)
    ours = measure(_run_govtopic, *common, "head", False)
    pipe = measure(_run_pipeline, *common)
    print(f"\n{'':<34} {'docs/s':>8} {'peak MB':>8}")
    for name, r in (("transformers.pipeline (truncation)", pipe), ("govtopic.predict (head)", ours)):
        print(f"{name:<34} {len(docs) / r['seconds']:>8.1f} {r['peak_mb']:>8.0f}")
    print(
        f"speed-up: {pipe['seconds'] / ours['seconds']:.2f}x; same label on "
        f"{agreement(ours['labels'], pipe['labels']):.1%} of documents"
    )
    print(f"pipeline {accuracy(pipe['labels'], gold)}; govtopic head {accuracy(ours['labels'], gold)}")
    chunks = measure(_run_govtopic, *common, "chunks", False)
    print(
        f"govtopic.predict (chunks, whole documents): {len(docs) / chunks['seconds']:.1f} docs/s, "
        f"peak {chunks['peak_mb']:.0f} MB, {accuracy(chunks['labels'], gold)}"
    )
    int8 = measure(_run_govtopic, *common, "head", True)
    print(
        f"int8 dynamic quantisation (head): {len(docs) / int8['seconds']:.1f} docs/s vs fp32 "
        f"{len(docs) / ours['seconds']:.1f}; same label as fp32 on {agreement(int8['labels'], ours['labels']):.1%}"
    )
    print(f"int8 {accuracy(int8['labels'], gold)}; fp32 {accuracy(ours['labels'], gold)}")
    length_scaling(args.model, docs, args.batch_size, [int(x) for x in args.lengths.split(",")])


if __name__ == "__main__":
    main()
