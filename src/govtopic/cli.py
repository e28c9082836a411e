"""The ``govtopic`` command: train, evaluate, predict, compare."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="govtopic", description="Topic tagging for Chinese government documents.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fine-tune a classifier from a YAML config")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3 output_dir=runs/x")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="start output_dir over: delete its checkpoints/, model/ and eval/ first (train.overwrite=true); "
        "needed to reuse a run folder whose earlier run had other settings or data",
    )

    pt = sub.add_parser("pretrain", help="masked-language-model pre-training on unlabelled text")
    pt.add_argument("config", help="YAML config (see configs/dapt-small.yaml)")
    pt.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=100")

    e = sub.add_parser("evaluate", help="evaluate a model folder on a labelled file and write reports")
    e.add_argument("model_dir")
    e.add_argument("data_file")
    e.add_argument("--output", help="report folder (default: RUN/eval/DATA_NAME beside the model folder)")
    e.add_argument(
        "--split",
        default="test",
        choices=["train", "validation", "test", "all"],
        help="split to use when the file has a split column ('all' for every row)",
    )
    e.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    e.add_argument("--group-by", help="a column whose values get their own figures in the report (e.g. label_source)")
    e.add_argument("--long-doc", choices=["head", "head_tail", "chunks"], help="override the model's strategy")

    r = sub.add_parser("predict", help="predict topics for .txt files, folders, JSONL/CSV/Parquet")
    r.add_argument("model_dir", help="model folder or Hub id")
    r.add_argument("inputs", nargs="+", help=".txt files, folders of .txt, or .jsonl/.csv/.parquet tables")
    r.add_argument(
        "--output",
        default="predictions.jsonl",
        help="results, one JSON line per document: a new file, or one an earlier govtopic run wrote (resumed)",
    )
    r.add_argument("--errors", help="unreadable documents (default: OUTPUT with .errors.jsonl)")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--top-k", type=int, default=1)
    r.add_argument("--long-doc", choices=["head", "head_tail", "chunks"])
    r.add_argument("--text-column", default="text")
    r.add_argument(
        "--title-column",
        help="title column of tables, read by the model's title rule (default: the column the model was trained "
        "with; '' for none)",
    )
    r.add_argument("--id-column", default="id")
    r.add_argument("--evidence", action="store_true", help="add the passage that supports each label")
    r.add_argument(
        "--no-resume", action="store_true", help="start over instead of skipping documents already in OUTPUT"
    )

    x = sub.add_parser("export", help="export a model folder to ONNX (needs the onnx extra)")
    x.add_argument("model_dir")
    x.add_argument("--format", choices=["onnx"], default="onnx")
    x.add_argument("--output", help="folder for model.onnx (default: MODEL_DIR-onnx)")
    x.add_argument("--opset", type=int, default=17)

    c = sub.add_parser("compare", help="per-class F1 deltas between two evaluation folders")
    c.add_argument("run_a")
    c.add_argument("run_b")
    return p


def _train(args) -> int:
    from govtopic.config import load_config
    from govtopic.training import train

    cfg = load_config(args.config, [*args.overrides, *(["train.overwrite=true"] if args.overwrite else [])])
    model_dir = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under accelerate launch the first process reports
    print(f"model folder: {model_dir}")
    report = Path(cfg.output_dir) / "eval" / "report.md"
    if report.is_file():
        print(f"evaluation report: {report} (and report.html beside it)")
    return 0


def _pretrain(args) -> int:
    from govtopic.config import load_config
    from govtopic.pretrain import pretrain

    model_dir = pretrain(load_config(args.config, args.overrides))
    print(
        f"pre-trained model folder: {model_dir} (fine-tune with model.name_or_path={model_dir} "
        "model.from_scratch=false)"
    )
    return 0


def _evaluate(args) -> int:
    from govtopic.evaluation import evaluate

    split = None if args.split == "all" else args.split
    result = evaluate(
        args.model_dir,
        args.data_file,
        args.output,
        split=split,
        baseline=False if args.no_baseline else None,
        long_doc=args.long_doc,
        group_by=args.group_by,
    )
    m, b = result["metrics"], result["baseline"]
    print(f"documents: {m['n']}")
    for key in ("l1_accuracy", "l1_macro_f1", "accuracy", "macro_f1"):
        base = f"   baseline {b[key]:.3f}" if b and b.get(key) is not None else ""
        value = "n/a" if m.get(key) is None else f"{m[key]:.3f}"
        print(f"{key:>12}: {value}{base}")
    base_groups = (b or {}).get("per_source") or {}
    for group, g in (m.get("per_source") or {}).items():
        bg = base_groups.get(group, {})
        base = f" (baseline {bg['l1_accuracy']:.3f})" if bg.get("l1_accuracy") is not None else ""
        print(f"  {group}: {g['n']} documents, l1_accuracy {g['l1_accuracy']:.3f}{base}")
    for name, path in result["paths"].items():
        print(f"{name}: {path}")
    return 0


def _predict(args) -> int:
    from govtopic.batch import predict_files

    counts = predict_files(
        args.inputs,
        args.model_dir,
        args.output,
        args.errors,
        batch_size=args.batch_size,
        top_k=args.top_k,
        long_doc=args.long_doc,
        resume=not args.no_resume,
        text_column=args.text_column,
        title_column=args.title_column,
        id_column=args.id_column,
        evidence=args.evidence,
    )
    print(json.dumps(counts, ensure_ascii=False))
    if counts["errors"]:
        print(f"{counts['errors']} document(s) could not be read: see {counts['errors_file']}", file=sys.stderr)
    print(f"predictions written to {counts['output']}")
    return 0


def _export(args) -> int:
    from govtopic.export import export_onnx

    output = args.output or f"{str(args.model_dir).rstrip('/')}-onnx"
    result = export_onnx(args.model_dir, output, opset=args.opset)
    print(
        f"ONNX model written to {result['path']}; agreement with the original on {result['windows']} windows: "
        f"{result['label_agreement']:.1%} same label, max |logit difference| {result['max_abs_logit_diff']:.2e}"
    )
    return 0


def _compare(args) -> int:
    from govtopic.report import compare_runs

    print(compare_runs(args.run_a, args.run_b))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from govtopic.config import ConfigError
    from govtopic.data import DataError
    from govtopic.modeling import ModelLoadError

    handlers = {
        "train": _train,
        "pretrain": _pretrain,
        "evaluate": _evaluate,
        "predict": _predict,
        "compare": _compare,
        "export": _export,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, DataError, ModelLoadError, OSError, ValueError, ImportError) as err:
        print(f"govtopic {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
