"""The ``govtopic`` command: train, evaluate, predict, compare."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from govtopic.strategies import strategy_names

_LABEL_MAP_HELP = (
    "YAML label map of DATA_FILE's own label spellings (like data/label_map.yaml: `labels: {公路: 工业、交通\\公路}`), "
    "read on top of the one the model was trained with (--corrections files are read with it too)"
)


def _add_table_columns(parser: argparse.ArgumentParser) -> None:
    """The columns of JSONL/CSV/Parquet inputs, the same for every command that reads documents."""
    parser.add_argument("--text-column", default="text")
    parser.add_argument(
        "--title-column",
        help="title column of tables, read by the model's title rule (default: the column the model was trained "
        "with; '' for none)",
    )
    parser.add_argument("--id-column", default="id")


def _table_columns(args) -> dict[str, str | None]:
    return {"text_column": args.text_column, "title_column": args.title_column, "id_column": args.id_column}


class _ExactParser(argparse.ArgumentParser):
    """Options only by their whole name: argparse's default takes any unambiguous prefix, so a typo such as
    ``--overwrit`` would run ``--overwrite`` (which deletes a run) instead of being an error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def _parser() -> argparse.ArgumentParser:
    p = _ExactParser(prog="govtopic", description="Topic tagging for Chinese government documents.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_ExactParser)

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
    pt.add_argument(
        "--overwrite",
        action="store_true",
        help="start output_dir over: delete its checkpoints/ and model/ first (train.overwrite=true); needed to "
        "reuse a pre-training folder whose earlier run had other settings or another corpus",
    )

    e = sub.add_parser("evaluate", help="evaluate a model folder on a labelled file and write reports")
    e.add_argument("model_dir")
    e.add_argument("data_file")
    e.add_argument(
        "--output",
        help="report folder (default: RUN/eval/DATA_NAME beside the model folder; DATA_NAME-2 when that holds "
        "the report of another file of the same name)",
    )
    e.add_argument(
        "--split",
        default="test",
        choices=["train", "validation", "test", "all"],
        help="split to use when the file has a split column ('all' for every row)",
    )
    e.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    e.add_argument("--group-by", help="a column whose values get their own figures in the report (e.g. label_source)")
    e.add_argument("--long-doc", choices=strategy_names(), help="override the model's strategy")
    e.add_argument(
        "--corrections",
        action="append",
        metavar="FILE",
        help="id + label file (or Label Studio export) whose labels replace the data file's for the same ids, "
        "as in training; repeat for several, a later one wins",
    )
    e.add_argument("--label-map", metavar="FILE", help=_LABEL_MAP_HELP)

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
    r.add_argument("--long-doc", choices=strategy_names())
    _add_table_columns(r)
    r.add_argument("--evidence", action="store_true", help="add the passage that supports each label")
    r.add_argument(
        "--no-resume", action="store_true", help="start over instead of skipping documents already in OUTPUT"
    )

    x = sub.add_parser("export", help="export a model folder to ONNX (needs the onnx extra)")
    x.add_argument("model_dir")
    x.add_argument("--format", choices=["onnx"], default="onnx")
    x.add_argument("--output", help="folder for model.onnx (default: MODEL_DIR-onnx)")
    x.add_argument("--opset", type=int, default=17)

    _add_serve_parsers(sub)

    c = sub.add_parser("compare", help="per-class F1 deltas between two evaluation folders")
    c.add_argument("run_a")
    c.add_argument("run_b")

    h = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub")
    h.add_argument("model_dir", help="a model folder written by govtopic train (RUN/model)")
    h.add_argument("repo_id", help="user/name or organisation/name")
    h.add_argument("--private", action="store_true", help="create the repository as private")

    u = sub.add_parser("tune", help="search learning rate, epochs, window length and warmup on the validation split")
    u.add_argument("config", help="YAML config (see configs/)")
    u.add_argument("overrides", nargs="*", help="dotted overrides, e.g. output_dir=runs/tune")
    u.add_argument("--trials", type=int, default=10, help="number of trials (default 10)")
    u.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    u.add_argument("--output", help="best config (default: OUTPUT_DIR-tune/best.yaml, beside the run folder)")
    _add_review_parsers(sub)
    return p


def _add_review_parsers(sub) -> None:
    ct = sub.add_parser("calibrate-thresholds", help="per-class thresholds for a target precision (needs_review)")
    ct.add_argument("model_dir")
    ct.add_argument("data_file", nargs="?", help="labelled file (default: the model's own validation split)")
    ct.add_argument("--precision", type=float, default=0.95, help="precision wanted without a person (default 0.95)")
    ct.add_argument(
        "--split",
        default="validation",
        choices=["train", "validation", "test", "all"],
        help="rows of DATA_FILE to fit on when it has a split column (default validation)",
    )
    ct.add_argument("--margin", type=float, help="smallest gap between the top two classes (default: fitted)")
    ct.add_argument("--min-docs", type=int, default=5, help="fewer predictions than this: always reviewed")
    ct.add_argument(
        "--prior-docs",
        type=float,
        default=None,
        help="documents of the whole model a class's own are pooled with when judging its precision (default 30; "
        "0: each class alone)",
    )
    ct.add_argument(
        "--source",
        action="append",
        metavar="NAME",
        help="without DATA_FILE: fit on the validation rows of this training source only (data.sources name; "
        "repeat for several)",
    )
    ct.add_argument("--label-map", metavar="FILE", help=_LABEL_MAP_HELP)
    ct.add_argument("--output", help="also write the coverage report as JSON here")

    rv = sub.add_parser("review", help="write the documents that need a person as a review queue (JSONL, Label Studio)")
    rv.add_argument("model_dir", help="a model folder with thresholds (govtopic calibrate-thresholds)")
    rv.add_argument("inputs", nargs="+", help=".txt files, folders of .txt, or .jsonl/.csv/.parquet tables")
    rv.add_argument("--output", required=True, help="queue folder (queue.jsonl, label_studio_tasks.json, config)")
    _add_table_columns(rv)
    rv.add_argument("--taxonomy", help="taxonomy YAML for the labelling config (default: the model's config)")
    rv.add_argument("--batch-size", type=int, default=32)

    sg = sub.add_parser("suggest", help="which unlabelled documents to label next (uncertain and diverse first)")
    sg.add_argument("model_dir", help="model folder or Hub id")
    sg.add_argument("inputs", nargs="+", help="the unlabelled pool: .txt files, folders of .txt, .jsonl/.csv/.parquet")
    sg.add_argument("--budget", type=int, required=True, help="documents a person will label")
    sg.add_argument("--output", required=True, help="JSONL of the picks, most useful first")
    sg.add_argument("--level", choices=["l1", "full"], default="l1", help="margin between first-level or full labels")
    sg.add_argument("--oversample", type=int, help="candidates per pick before clustering (1: margin alone)")
    _add_table_columns(sg)
    sg.add_argument("--batch-size", type=int, default=32)


def _suggest(args) -> int:
    from govtopic.suggest import OVERSAMPLE, suggest_files

    if args.budget < 1:  # before the model loads
        raise ValueError(f"--budget must be at least 1 (documents a person will label), got {args.budget}")
    if args.oversample is not None and args.oversample < 1:
        raise ValueError(f"--oversample must be at least 1 (1: margin alone), got {args.oversample}")
    counts = suggest_files(
        args.model_dir,
        args.inputs,
        args.output,
        args.budget,
        level=args.level,
        oversample=OVERSAMPLE if args.oversample is None else args.oversample,
        **_table_columns(args),
        batch_size=args.batch_size,
    )
    print(json.dumps(counts, ensure_ascii=False))
    if counts["suggested"] < counts["budget"]:
        print(
            f"note: budget {counts['budget']} is more than the {counts['suggested']} readable documents in the pool: "
            "all of them are suggested",
            file=sys.stderr,
        )
    print(f"{counts['suggested']} suggested documents written to {counts['output']} (most useful first)")
    return 0


def _calibrate_thresholds(args) -> int:
    from govtopic.fsutil import check_claimable, write_output_text
    from govtopic.review import format_report
    from govtopic.thresholds import calibrate_thresholds

    if args.output:  # before any work: never over a file govtopic did not write
        check_claimable(Path(args.output), "coverage report", "--output")
    split = None if args.split == "all" else args.split
    report = calibrate_thresholds(
        args.model_dir,
        args.data_file,
        args.precision,
        split,
        margin=args.margin,
        min_docs=args.min_docs,
        prior_docs=args.prior_docs,
        sources=args.source,
        label_map=args.label_map,
    )
    print(format_report(report))
    if args.output:
        text = json.dumps(report, ensure_ascii=False, indent=2) + "\n"
        write_output_text(args.output, text, "coverage report", "--output")
        print(f"coverage report: {args.output}")
    print(f"thresholds stored in {Path(args.model_dir) / 'config.json'} (govtopic.thresholds)")
    return 0


def _review(args) -> int:
    from govtopic.labelstudio import write_review_queue

    counts = write_review_queue(
        args.model_dir,
        args.inputs,
        args.output,
        **_table_columns(args),
        taxonomy=args.taxonomy,
        batch_size=args.batch_size,
    )
    print(json.dumps({k: v for k, v in counts.items() if k != "files"}, ensure_ascii=False))
    for name, path in counts["files"].items():
        print(f"{name}: {path}")
    return 0


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

    model_dir = pretrain(
        load_config(args.config, [*args.overrides, *(["train.overwrite=true"] if args.overwrite else [])])
    )
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
        corrections=args.corrections,
        label_map=args.label_map,
    )
    m, b = result["metrics"], result["baseline"]
    print(f"documents: {m['n']}")
    for key in ("l1_accuracy", "l1_macro_f1", "accuracy", "macro_f1"):
        base = f"   baseline {b[key]:.3f}" if b and b.get(key) is not None else ""
        value = "n/a" if m.get(key) is None else f"{m[key]:.3f}"
        if key in ("accuracy", "macro_f1") and m.get(key) is not None and m.get("n_full") not in (None, m["n"]):
            value += f" (over the {m['n_full']} document(s) with a full label)"
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
        **_table_columns(args),
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
        f"ONNX model written to {result['path']}; per-window transformer logits match the original on "
        f"{result['windows']} windows: same top class on {result['window_agreement']:.1%}, max |logit difference| "
        f"{result['max_abs_logit_diff']:.2e}"
    )
    if result.get("note"):
        print(result["note"])
    return 0


def _add_serve_parsers(sub) -> None:
    from govtopic.serve_settings import ServeSettings

    s = sub.add_parser("serve", help="serve a model over HTTP with dynamic batching (needs the serve extra)")
    s.add_argument("model_dir", help="model folder or Hub id")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--device", help="cpu, cuda ... (default: CUDA when available)")
    defaults = ServeSettings()
    for name, help_text in (
        ("max_batch_size", "documents predicted together at most (1: no batching)"),
        (
            "max_wait_ms",
            "milliseconds at most to wait after a document for others to join its batch, only while "
            "other requests are arriving",
        ),
        ("max_queue", "documents waiting at most (at least --max-docs); beyond it requests get 503 with Retry-After"),
        ("max_docs", "documents per request at most"),
        ("max_doc_chars", "characters per document (title + text) at most"),
        ("max_body_bytes", "bytes per request body at most"),
        ("batch_size", "windows per forward pass"),
        ("retry_after_s", "seconds a client is told to wait when the queue is full"),
        (
            "drain_seconds",
            "seconds to keep listening after SIGTERM, answering /ready and new /predict with 503 (set to the load "
            "balancer's probe period or more)",
        ),
    ):
        value = getattr(defaults, name)
        s.add_argument(
            "--" + name.replace("_", "-"), type=type(value), default=value, help=f"{help_text} (default {value})"
        )

    rp = sub.add_parser(
        "predict-ray", help="predict JSONL/JSON/CSV/TSV/Parquet files on Ray Data into Parquet (needs ray)"
    )
    rp.add_argument("model_dir", help="model folder (every Ray worker must see the same path)")
    rp.add_argument(
        "inputs", nargs="+", help=".jsonl/.json/.csv/.tsv (optionally .gz) or .parquet files, or folders of them"
    )
    rp.add_argument("--output", required=True, help="folder for one Parquet file per input file")
    rp.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    rp.add_argument("--actors", type=int, default=1, help="model actors (each loads the model once)")
    rp.add_argument("--num-cpus", type=float, default=1, help="CPUs per actor")
    rp.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (e.g. 1 on a GPU cluster)")
    rp.add_argument("--batch-docs", type=int, default=64, help="documents per actor call")
    rp.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    rp.add_argument("--top-k", type=int, default=1)
    _add_table_columns(rp)


def _serve(args) -> int:
    from govtopic.serve import serve
    from govtopic.serve_settings import ServeSettings

    names = [f for f in vars(ServeSettings()) if hasattr(args, f)]
    settings = ServeSettings(**{name: getattr(args, name) for name in names})
    serve(args.model_dir, host=args.host, port=args.port, settings=settings, device=args.device)
    return 0


def _predict_ray(args) -> int:
    from govtopic.raybatch import predict_ray

    counts = predict_ray(
        args.model_dir,
        args.inputs,
        args.output,
        address=args.address,
        actors=args.actors,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        batch_docs=args.batch_docs,
        batch_size=args.batch_size,
        top_k=args.top_k,
        **_table_columns(args),
    )
    print(
        f"predicted {counts['predicted']} documents, {counts['no_topic']} without a topic (empty or unreadable "
        f"text: see the reason column) and {counts['errors']} unreadable rows (see the error column) from "
        f"{counts['files_done']} file(s) ({counts['files_skipped']} already done) in {counts['seconds']} s; "
        f"Parquet files in {counts['output']}"
    )
    return 0


def _compare(args) -> int:
    from govtopic.compare import compare_runs

    print(compare_runs(args.run_a, args.run_b))
    return 0


def _push(args) -> int:
    from govtopic.hub import push

    url = push(args.model_dir, args.repo_id, private=args.private)
    print(f"uploaded {args.model_dir} to {args.repo_id}: {url}")
    return 0


def _tune(args) -> int:
    from govtopic.tune import tune

    result = tune(args.config, args.overrides, trials=args.trials, timeout=args.timeout, output=args.output)
    failed = f", {result['failed']} failed: see trials.json" if result["failed"] else ""
    print(f"best validation {result['metric']}: {result['value']:.4f} ({result['trials']} trial(s){failed})")
    print(f"best config: {result['config']} (train it with: govtopic train {result['config']})")
    return 0


def _parse(argv: list[str] | None):
    """The command line, with dotted overrides accepted after the options too (``govtopic tune CONFIG --trials 4
    output_dir=runs/x``), not only before them; any other leftover word is an error as usual."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        is_override = [hasattr(args, "overrides") and "=" in x and not x.startswith("-") for x in extra]
        if all(is_override):
            args.overrides = [*args.overrides, *extra]
        else:
            unknown = [x for x, ok in zip(extra, is_override) if not ok]
            parser.error(f"unrecognized arguments: {' '.join(unknown)} (options are spelt out in full; see --help)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
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
        "push": _push,
        "tune": _tune,
        "serve": _serve,
        "predict-ray": _predict_ray,
        "calibrate-thresholds": _calibrate_thresholds,
        "review": _review,
        "suggest": _suggest,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, DataError, ModelLoadError, OSError, ValueError, ImportError) as err:
        print(f"govtopic {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"govtopic {args.command}: interrupted{_kept(args)}", file=sys.stderr)
        return 130


def _kept(args) -> str:
    """What an interrupted command kept, and how to go on."""
    if args.command == "predict":
        from govtopic.batch import kept_after_interrupt

        return "; " + kept_after_interrupt(args.output)
    return ""


if __name__ == "__main__":
    sys.exit(main())
