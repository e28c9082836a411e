"""Benchmark govtopic.predict against transformers.pipeline and against the FLOP bound, on the same documents.

    python scripts/benchmark_predict.py --model runs/quickstart/model --docs 300
    python scripts/benchmark_predict.py --model runs/quickstart/model --data ../shared/data/regulations.jsonl.gz
    git archive OLD_COMMIT src | tar -x -C /tmp/old && python scripts/benchmark_predict.py --baseline /tmp/old/src

Every row reads the same raw bodies (the test split of ``--data``, default the bundled regulations sample) with
the same batch size, each in its own process (so its peak memory is its own) with ``--threads`` torch threads,
timed over ``--repeat`` passes after a warm-up (the median is shown, and the range, as documents/s):

- ``transformers.pipeline`` truncating at the model's window length, and govtopic's ``head`` (the same
  truncation, after govtopic's normalisation);
- govtopic's ``chunks`` with the default window cap (``long_doc.max_windows``, windows spread evenly over the
  document), and beside it with the cap of earlier releases (64), which reads every window of most documents;
- the same two govtopic rows with the model's own ``transformers`` forward instead of govtopic's lean one
  (govtopic/forward.py), to show what it buys; their scores must agree;
- optionally (``--baseline``) head and chunks with another govtopic source tree, e.g. an older commit;
- optionally (``--int8``) dynamic int8 quantisation, which changes some labels;
- optionally (``--big-doc-mb 50``) one document of that size through ``head`` and ``chunks``: seconds and
  how much each raised the process's peak memory;
- optionally (``--caps 64,16,8,4``) a second table: ``chunks`` at each window cap, scored as ``govtopic evaluate``
  scores (titles read by the model's rule, the n-gram channel added, first-level accuracy and macro-F1) on the
  regulations test split and on gold_dev, with documents/s (normalisation excluded) and windows per document.

The FLOP bound is computed from the model's config: a full window of L tokens costs, per layer,
2·L·(4·h² + 2·h·i) for the matrix products plus 4·L²·h for attention (h hidden size, i intermediate size),
and the bound is the peak rate (``--peak-gflops`` per thread, 78 measured for fp32 on this project's CPUs)
over the windows each row reads. The lean forward skips work the classifier never reads, so a row can pass
100% of this bound.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "regulations_sample.jsonl.gz"
SHARED = ROOT.parent / "shared" / "data"
# fp32 GFLOP/s of one core here (FMA, 8 floats wide, ~2.4 GHz); two threads give ~156.
PEAK_PER_THREAD = 78.0
# The chunks window cap (long_doc.max_windows) before it came down to 8; folders trained then still record it.
PREVIOUS_CAP = 64


def load_docs(path: Path, n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` labelled test-split bodies of a JSONL(.gz) file, and their gold labels."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rows = [r for r in rows if r.get("split") == "test" and r.get("label") and r.get("text")][:n]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def window_flops(config, length: int) -> float:
    """FLOPs of one window of ``length`` tokens through every encoder layer of ``config``."""
    h, i = config.hidden_size, config.intermediate_size
    per_layer = 2 * length * (4 * h * h + 2 * h * i) + 4 * length * length * h
    return float(config.num_hidden_layers * per_layer)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _import_from(src: Path) -> None:
    """Make ``import govtopic`` load the package under ``src`` (an editable install's finder would win over
    sys.path)."""
    import importlib.util
    import sys

    init = src / "govtopic" / "__init__.py"
    spec = importlib.util.spec_from_file_location("govtopic", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["govtopic"] = module
    spec.loader.exec_module(module)
    assert Path(module.__file__).resolve() == init.resolve(), module.__file__


def _timed(call, repeat: int) -> tuple[dict, object]:
    """``repeat`` calls of ``call()``: their median seconds and every call's (``seconds``, ``all_seconds``), and
    the last call's output."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = call()
        seconds.append(time.perf_counter() - start)
    return {"seconds": float(np.median(seconds)), "all_seconds": seconds}, out


def _run_govtopic(model, docs, batch_size, threads, repeat, strategy, variant, max_windows, queue):
    import dataclasses

    import torch

    torch.set_num_threads(threads)
    if variant not in ("lean", "transformers", "int8"):
        _import_from(Path(variant))  # another govtopic source tree (--baseline)
    from govtopic import TopicClassifier

    clf = TopicClassifier(model, device="cpu", quantize=variant == "int8")
    if max_windows:  # every row reads the same cap, whatever the folder recorded when it was trained
        clf.long_doc = dataclasses.replace(clf.long_doc, max_windows=max_windows)
    if variant == "transformers":
        from govtopic import forward

        forward._LEAN[clf.model] = None  # the model's own forward, as before govtopic.forward
    clf.predict(docs[:8], batch_size=batch_size, long_doc=strategy)  # warm-up
    timing, out = _timed(
        lambda: clf.predict(docs, batch_size=batch_size, long_doc=strategy, top_k=len(clf.labels)), repeat
    )
    scores = [{a["label"]: a["score"] for a in r["top_k"]} if r["label"] else {} for r in out]
    queue.put(
        {
            **timing,
            "labels": [r["label"] for r in out],
            "scores": scores,
            "windows": float(np.mean([r["windows"] for r in out])),
            "truncated": float(np.mean([bool(r["truncated"]) for r in out])),
            "peak_mb": _peak_mb(),
        }
    )


def _run_pipeline(model, docs, batch_size, threads, repeat, max_length, queue):
    import torch

    torch.set_num_threads(threads)
    from transformers import pipeline

    pipe = pipeline("text-classification", model=model, device="cpu")
    pipe(docs[:8], batch_size=batch_size, truncation=True, max_length=max_length)
    timing, out = _timed(lambda: pipe(docs, batch_size=batch_size, truncation=True, max_length=max_length), repeat)
    labels = [r["label"] for r in out]
    queue.put({**timing, "labels": labels, "windows": 1.0, "truncated": None, "peak_mb": _peak_mb()})


def _run_caps(model, caps, batch_size, threads, queue):
    """Per data set and cap: documents/s, windows per document, share capped, first-level accuracy and macro-F1."""
    import dataclasses

    import torch

    from govtopic.calibration import softmax
    from govtopic.data import load_eval_file
    from govtopic.evaluation import model_scheme, saved_config
    from govtopic.metrics import compute_metrics
    from govtopic.predict import TopicClassifier

    torch.set_num_threads(threads)
    cfg = saved_config(model)
    clf = TopicClassifier(model, device="cpu")
    regs = SHARED / "regulations.jsonl.gz" if (SHARED / "regulations.jsonl.gz").is_file() else SAMPLE
    gold = SHARED / "gold_dev.jsonl" if (SHARED / "gold_dev.jsonl").is_file() else ROOT / "data" / "gold_dev.jsonl"
    rows = []
    for name, path, split in (("regulations test", regs, "test"), ("gold_dev", gold, None)):
        docs = load_eval_file(path, cfg.data, clf.normalize_config, split, model_scheme(model, cfg))
        for cap in caps:
            ld = dataclasses.replace(clf.long_doc, max_windows=cap)
            start = time.perf_counter()
            logits, info = clf.document_logits(docs.texts, ld, batch_size, titles=docs.titles)
            seconds = time.perf_counter() - start
            m = compute_metrics(docs.labels, softmax(logits, clf.temperature), clf.labels)
            windows = np.mean([i["windows"] for i in info])
            capped = np.mean([i["truncated"] for i in info])
            rate = len(docs) / seconds
            rows.append((f"{name} ({len(docs)})", cap, rate, windows, capped, m["l1_accuracy"], m["l1_macro_f1"]))
    queue.put(rows)


def _run_big(model, docs, megabytes, strategy, threads, queue):
    """One document of ``megabytes`` MB of UTF-8 (the documents repeated): seconds, windows and how much
    ``predict`` raised the process's peak memory above what loading the model and one short document took."""
    import torch

    torch.set_num_threads(threads)
    from govtopic import TopicClassifier

    base = "\n".join(docs)
    size = int(megabytes * 1e6)
    text = (base * (size // len(base.encode("utf-8")) + 1)).encode("utf-8")[:size].decode("utf-8", "ignore")
    clf = TopicClassifier(model, device="cpu")
    clf.predict(docs[:8], long_doc=strategy)
    before = _peak_mb()
    start = time.perf_counter()
    out = clf.predict(text, long_doc=strategy)
    queue.put(
        {
            "seconds": time.perf_counter() - start,
            "chars": len(text),
            "windows": out["windows"],
            "truncated": out["truncated"],
            "text_mb": sys.getsizeof(text) / 2**20,
            "added_mb": _peak_mb() - before,
        }
    )


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


def max_score_diff(a: list[dict], b: list[dict]) -> float:
    return max((abs(x[k] - y.get(k, 0.0)) for x, y in zip(a, b) for k in x), default=0.0)


def accuracy(labels: list, gold: list[str]) -> str:
    """Full-label accuracy, first-level accuracy and first-level macro-F1 (over the gold classes) against the
    gold labels."""
    first = [a.split("\\")[0] if a else "" for a in labels]
    gold_first = [g.split("\\")[0] for g in gold]
    full = sum(a == g for a, g in zip(labels, gold)) / len(gold)
    l1 = sum(a == g for a, g in zip(first, gold_first)) / len(gold)
    f1s = []
    for c in sorted(set(gold_first)):
        tp = sum(a == g == c for a, g in zip(first, gold_first))
        predicted, actual = first.count(c), gold_first.count(c)
        f1s.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return f"{full:.3f} / {l1:.3f} / {np.mean(f1s):.3f}"


def _against(prefix: str, new: dict, old: dict, what: str) -> str:
    """One line: how much faster ``new`` ran than ``old``, how often they agree, their largest score gap."""
    return (
        f"{prefix}{old['seconds'] / new['seconds']:.2f}x {what}; same labels on "
        f"{agreement(new['labels'], old['labels']):.1%}, largest score difference "
        f"{max_score_diff(new['scores'], old['scores']):.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "runs" / "quickstart" / "model"))
    parser.add_argument("--data", type=Path, default=SAMPLE, help="JSONL(.gz) with text, label and split columns")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every row")
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed passes over the documents per row; the median is shown"
    )
    parser.add_argument("--peak-gflops", type=float, default=None, help="default: 78 per thread")
    parser.add_argument("--int8", action="store_true", help="add dynamic int8 quantisation (head)")
    parser.add_argument(
        "--caps", help="comma-separated chunks window caps to score on the regulations test split and gold_dev"
    )
    parser.add_argument(
        "--max-windows", type=int, default=None, help="chunks window cap (default: govtopic's long_doc.max_windows)"
    )
    parser.add_argument(
        "--baseline", help="a govtopic source folder to compare with (its src/), e.g. from `git archive OLD src`"
    )
    parser.add_argument(
        "--big-doc-mb",
        type=float,
        help="also predict one document of this many MB (the documents repeated) with head and chunks, and print "
        "how much each raised the peak memory",
    )
    args = parser.parse_args()
    from transformers import AutoConfig

    from govtopic.config import LongDocConfig
    from govtopic.record import ModelRecord

    config = AutoConfig.from_pretrained(args.model)
    max_length = ModelRecord.from_config(config, args.model).long_doc.max_length
    docs, gold = load_docs(args.data, args.docs)
    peak = args.peak_gflops or PEAK_PER_THREAD * args.threads
    flops = window_flops(config, max_length)
    print(
        f"model {args.model}: {config.num_hidden_layers} layers x {config.hidden_size} hidden "
        f"(intermediate {config.intermediate_size}), windows of {max_length} tokens = {flops / 1e6:.0f} MFLOP each"
    )
    print(
        f"{len(docs)} documents from {args.data} (mean {np.mean([len(d) for d in docs]):.0f} characters); batch "
        f"{args.batch_size}; {args.threads} torch threads; bound {peak:.0f} GFLOP/s = "
        f"{peak * 1e9 / flops:.0f} full windows/s"
    )
    cap = args.max_windows or LongDocConfig().max_windows
    common = (args.model, docs, args.batch_size, args.threads, args.repeat)
    chunks_all = f"govtopic chunks, cap {PREVIOUS_CAP} (before)"
    rows = {
        "transformers.pipeline (truncation)": measure(_run_pipeline, *common, max_length),
        "govtopic head": measure(_run_govtopic, *common, "head", "lean", None),
        "govtopic head, transformers forward": measure(_run_govtopic, *common, "head", "transformers", None),
        "govtopic chunks": measure(_run_govtopic, *common, "chunks", "lean", cap),
        chunks_all: measure(_run_govtopic, *common, "chunks", "lean", PREVIOUS_CAP),
        "govtopic chunks, transformers forward": measure(_run_govtopic, *common, "chunks", "transformers", cap),
    }
    if args.baseline:
        src = str(Path(args.baseline).resolve())
        rows["baseline head"] = measure(_run_govtopic, *common, "head", src, None)
        rows["baseline chunks"] = measure(_run_govtopic, *common, "chunks", src, None)
    if args.int8:
        rows["govtopic head, int8"] = measure(_run_govtopic, *common, "head", "int8", None)
    print(f"(govtopic chunks rows read at most {cap} windows per document unless named otherwise)")
    print(
        f"\n{'':<38} {'docs/s':>8} {'range':>13} {'windows':>8} {'capped':>7} {'bound':>8} {'share':>7} {'peak MB':>8} "
        f"{'acc full/l1/l1 F1':>19}"
    )
    for name, r in rows.items():
        bound = peak * 1e9 / (flops * r["windows"])
        rate = len(docs) / r["seconds"]
        spread = f"{len(docs) / max(r['all_seconds']):.0f}-{len(docs) / min(r['all_seconds']):.0f}"
        capped = "" if r.get("truncated") is None else f"{r['truncated']:.0%}"
        print(
            f"{name:<38} {rate:>8.1f} {spread:>13} {r['windows']:>8.2f} {capped:>7} {bound:>8.1f} {rate / bound:>7.0%} "
            f"{r['peak_mb']:>8.0f} {accuracy(r['labels'], gold):>19}"
        )
    pipe, head, chunks = (rows[k] for k in ("transformers.pipeline (truncation)", "govtopic head", "govtopic chunks"))
    print(
        f"\nhead vs pipeline: {pipe['seconds'] / head['seconds']:.2f}x, same label on "
        f"{agreement(head['labels'], pipe['labels']):.1%}"
    )
    before = rows[chunks_all]
    print(
        f"chunks, cap {cap} vs cap {PREVIOUS_CAP}: {before['seconds'] / chunks['seconds']:.2f}x, same label on "
        f"{agreement(chunks['labels'], before['labels']):.1%}"
    )
    for strategy, lean in (("head", head), ("chunks", chunks)):
        print(
            _against(
                f"{strategy}: lean forward ",
                lean,
                rows[f"govtopic {strategy}, transformers forward"],
                "the transformers forward",
            )
        )
    if args.baseline:
        for strategy, new in (("head", head), ("chunks", chunks)):
            print(_against(f"{strategy}: ", new, rows[f"baseline {strategy}"], "the baseline"))
    if args.int8:
        print(
            f"int8 head: same label as fp32 on {agreement(rows['govtopic head, int8']['labels'], head['labels']):.1%}"
        )
    if args.caps:
        caps = [int(c) for c in args.caps.split(",")]
        table = measure(_run_caps, args.model, caps, args.batch_size, args.threads)
        print(
            f"\n{'chunks, as evaluate scores':<26} {'cap':>4} {'docs/s':>7} {'windows':>8} {'capped':>7} "
            f"{'l1 acc':>7} {'l1 F1':>6}"
        )
        for name, c, rate, windows, capped, acc, f1 in table:
            print(f"{name:<26} {c:>4} {rate:>7.1f} {windows:>8.2f} {capped:>7.0%} {acc:>7.3f} {f1:>6.3f}")
    if args.big_doc_mb:
        print(
            f"\n{'one document of ' + format(args.big_doc_mb, 'g') + ' MB':<26} {'seconds':>8} {'windows':>8} "
            f"{'text MB':>8} {'peak MB added':>14}"
        )
        for strategy in ("head", "chunks"):
            r = measure(_run_big, args.model, docs, args.big_doc_mb, strategy, args.threads)
            print(
                f"{strategy + ' (' + format(r['chars'], ',') + ' characters)':<26} {r['seconds']:>8.1f} "
                f"{r['windows']:>8} {r['text_mb']:>8.0f} {r['added_mb']:>14.0f}"
            )
        print("(text MB: the document as a Python string; peak MB added: above loading the model and 8 documents)")
    print(
        "(capped: share of documents with more windows than the cap, whose windows were spread over them and which "
        "report truncated: true; acc: accuracy against the gold labels, full label / first level, and first-level "
        "macro-F1 over the gold classes)"
    )


if __name__ == "__main__":
    main()
