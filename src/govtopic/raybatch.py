"""Batch prediction on Ray Data: files of documents predicted by a pool of model actors, one Parquet file out
per file in, so an interrupted run resumes by file (a file whose output exists is skipped).

Documents are read exactly as ``govtopic predict`` reads them (``govtopic.inputs.iter_records``: same columns,
encodings, ``source`` keys and per-row errors), flow through ``map_batches`` to actors that each load the model
once (``TopicClassifier``), and come back in input order; each input's Parquet file is written (atomically) as
soon as its last document is predicted. Every output file has the same columns and types (``output_schema``)
and records the settings it was predicted with, so a resumed run with other settings is refused.

Example:
    >>> predict_ray("runs/quickstart/model", ["data/official.jsonl.gz"], "runs/ray-out", actors=2)
    {'predicted': 2023, 'no_topic': 0, 'errors': 0, 'files_done': 1, 'files_skipped': 0, ...}
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from govtopic.fsutil import written_by_govtopic
from govtopic.inputs import Columns, hidden_or_system, iter_records
from govtopic.record import ModelRecord
from govtopic.resume import run_settings, settings_differences

logger = logging.getLogger(__name__)

SUFFIX = ".predictions.parquet"
# Files a folder contributes (sorted): the tables ``govtopic predict`` reads, the text ones also gzipped.
_TABLES = (".jsonl", ".json", ".csv", ".tsv")
READABLE = (*_TABLES, *(t + ".gz" for t in _TABLES), ".parquet")
READS = "JSONL, JSON, CSV and TSV tables (also .gz) and Parquet files; use `govtopic predict` for .txt documents"
# Files a folder may hold that are nobody's document (Windows thumbnails, Office lock files start with ~$).
# Columns of every output file, in this order, with their types; "json": a nested result as a JSON string.
_ROW_FIELDS = [("file", "string"), ("source", "string"), ("id", "string"), ("error", "string")]
_RESULT_FIELDS = [
    ("label", "string"),
    ("label_l1", "string"),
    ("score", "float64"),
    ("score_l1", "float64"),
    ("windows", "int64"),
    ("truncated", "bool"),
    ("unknown_share", "float64"),
    ("reason", "string"),
    ("needs_review", "bool"),
    ("review_reason", "string"),
    ("label_suggested", "string"),
    ("guessed_title", "string"),
    ("known_ngrams", "float64"),
    ("top_k", "json"),
    ("top_k_l1", "json"),
]
RESULT_COLUMNS = [name for name, _ in _RESULT_FIELDS]
# The key of an output file's Parquet metadata that holds the settings its results were predicted with.
SETTINGS_KEY = b"govtopic.settings"


class _Predictor:
    """A Ray actor: loads the model once, then predicts batches of rows (a pandas DataFrame)."""

    def __init__(self, model: str, options: dict):
        from govtopic.predict import TopicClassifier

        options = dict(options)
        self.clf = TopicClassifier(model, device=options.pop("device", None))
        self.options = options

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        readable = batch["error"].isna().to_numpy()
        titles, texts = batch["title"][readable], batch["text"][readable]
        docs = [{"title": _text(t), "text": _text(x)} for t, x in zip(titles, texts)]
        results = self.clf.predict(docs, progress=False, **self.options) if docs else []
        out: dict[str, list] = {name: [None] * len(batch) for name in RESULT_COLUMNS}
        for row, result in zip(readable.nonzero()[0], results):
            for name, kind in _RESULT_FIELDS:
                value = result.get(name)
                out[name][row] = (
                    json.dumps(value, ensure_ascii=False) if kind == "json" and value is not None else value
                )
        frame = batch[["file", "source", "id", "error"]].reset_index(drop=True)
        return pd.concat([frame, pd.DataFrame(out, dtype=object)], axis=1)


def _text(value) -> str:
    """A title or text cell as a str: a missing one (None, or NaN once pandas or Arrow has held the column) is
    empty, as ``govtopic predict`` reads a document without a title."""
    return value if isinstance(value, str) else ""


def output_schema(settings: dict | None = None):
    """The Arrow schema of every output file (``settings`` kept in its metadata), so that files concatenate."""
    import pyarrow as pa

    types = {"string": pa.string(), "json": pa.string(), "float64": pa.float64(), "int64": pa.int64()}
    types["bool"] = pa.bool_()
    fields = [pa.field(name, types[kind]) for name, kind in [*_ROW_FIELDS, *_RESULT_FIELDS]]
    metadata = {SETTINGS_KEY: json.dumps(settings, ensure_ascii=False)} if settings is not None else None
    return pa.schema(fields, metadata=metadata)


def input_files(inputs: list[str]) -> list[Path]:
    """The files to predict, each real file once: each file given, and the tables of each folder (sorted).

    govtopic's own outputs are never inputs (an ``--output`` inside an input folder is passed over on a
    rerun); every other file of a folder that is not read is named in a warning with the reason.
    """
    files: list[Path] = []
    seen: dict[str, Path] = {}
    folders: set[str] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir() and os.path.realpath(path) in folders:
            logger.warning("folder %s was listed before: each file is read once", item)
            continue
        if path.is_dir():
            folders.add(os.path.realpath(path))
            found = _folder_files(path)
        elif _is_prediction_output(path):
            logger.warning("%s is a predict-ray output, not documents: passed over", item)
            found = []
        else:
            found = [path]
        again = []
        for f in found:
            key = os.path.realpath(f)
            if key in seen:
                again.append(f)
            else:
                seen[key] = f
                files.append(f)
        if again and not path.is_dir():
            logger.warning("%s is the same file as %s, listed before: each file is read once", item, seen[key])
        elif again:
            what = f"{len(again)} file(s) of {item} were listed before through an earlier input"
            logger.warning("%s: each file is read once", what)
    return files


def _folder_files(folder: Path) -> list[Path]:
    """The files of ``folder`` predict-ray reads; the others are named in a log line, with the reason."""
    read, passed = [], {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        why = _why_not_read(path, folder)
        if why is None:
            read.append(path)
        else:
            passed.setdefault(why, []).append(str(path.relative_to(folder)))
    for why, names in passed.items():
        level = logging.INFO if why.startswith("hidden") else logging.WARNING
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        logger.log(level, "%s: %d file(s) not read (%s): %s", folder, len(names), why, shown)
    if not read:
        logger.warning("%s holds no file predict-ray reads (it reads %s)", folder, READS)
    return read


def _why_not_read(path: Path, folder: Path) -> str | None:
    if _is_prediction_output(path) or written_by_govtopic(path):
        return "govtopic's own outputs, never read as documents"
    if hidden_or_system(path, folder):
        return "hidden or system files"
    if not path.name.lower().endswith(READABLE):
        return f"not a table predict-ray reads; it reads {READS}"
    return None


def _is_prediction_output(path: Path) -> bool:
    return path.name.endswith((SUFFIX, SUFFIX + ".partial"))


def output_path(output: Path, file: Path) -> Path:
    """Where ``file``'s predictions go: ``OUTPUT/NAME.predictions.parquet`` (NAME keeps the input's suffixes)."""
    return output / (file.name + SUFFIX)


def predict_ray(
    model: str | os.PathLike,
    inputs: list[str],
    output: str | os.PathLike,
    address: str | None = None,
    actors: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_docs: int = 64,
    batch_size: int = 32,
    top_k: int = 1,
    long_doc: str | None = None,
    text_column: str = "text",
    title_column: str | None = None,
    id_column: str = "id",
) -> dict:
    """Predict every document of ``inputs`` with ``actors`` model actors on Ray; one Parquet file per input.

    Args:
        model: model folder every Ray worker can read (the same path on each node, or shared storage).
        inputs: JSONL/JSON/CSV/TSV (also .gz) and Parquet files, or folders of them; each real file is read once.
        output: folder for ``NAME.predictions.parquet`` per input: columns ``file``, ``source`` and ``id`` (as
            ``govtopic predict`` writes them), ``error`` (unreadable rows), then the result fields of
            ``govtopic predict`` (``RESULT_COLUMNS``; ``top_k`` and ``top_k_l1`` as JSON strings).
        address: a Ray cluster (``ray://host:10001`` or ``auto``); default: the running or a new local instance.
        actors, num_cpus, num_gpus: the actor pool and what each actor reserves (``num_gpus=1`` on GPU nodes).
        batch_docs: documents per actor call; batch_size, top_k, long_doc: as ``TopicClassifier.predict``.
        text_column, title_column, id_column: table columns (title: the model's own by default, ``""`` for none).

    Options, inputs and the model folder are checked before Ray starts or anything is written (ValueError,
    FileNotFoundError, ModelLoadError); so is resuming into an output predicted with other settings.

    Returns counts of this run's rows: predicted (given a topic), no_topic (read, but empty or unreadable to the
    model: see ``reason``), errors (rows that could not be read: see ``error``); files_done, files_skipped
    (done before), seconds, output.

    Example:
        >>> import ray; ray.init(num_cpus=2, include_dashboard=False)
        >>> predict_ray("runs/quickstart/model", ["data/official.jsonl.gz"], "runs/ray-out", actors=2)
    """
    started = time.time()
    model, output = str(model), Path(output)
    _check_options(output, actors, num_cpus, num_gpus, batch_docs, batch_size, top_k, long_doc)
    _check_inputs(inputs)
    files = input_files(inputs)
    if not files:
        raise ValueError(f"no files to predict in {', '.join(inputs)}: predict-ray reads {READS}")
    _check_names(files)
    columns = Columns.from_options(text_column, id_column, title_column, check_model(model))
    settings = run_settings_of(model, top_k, long_doc, text_column, title_column, id_column)
    todo = _todo(files, output, settings)
    counts = {"predicted": 0, "no_topic": 0, "errors": 0, "files_done": 0, "files_skipped": len(files) - len(todo)}
    if todo:
        import ray

        output.mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        rows = _rows(todo, columns)
        per_file = Counter(r["file"] for r in rows)
        expected = {i: per_file[str(f)] for i, f in enumerate(todo)}
        options = {"batch_size": batch_size, "top_k": top_k, "long_doc": long_doc}
        if num_gpus:
            options["device"] = "cuda"
        pool = (actors, num_cpus, num_gpus, batch_docs)
        _run(rows, todo, expected, output, model, options, pool, settings, counts)
    return {**counts, "seconds": round(time.time() - started, 2), "output": str(output)}


def run_settings_of(model: str, top_k: int, long_doc, text_column: str, title_column, id_column: str) -> dict:
    """What the results depend on, as ``govtopic predict`` keeps them (``resume.run_settings``): the model's real
    path and config.json, top_k, long_doc and the columns; kept in every output file's metadata."""
    columns = {"text_column": text_column, "title_column": title_column, "id_column": id_column}
    return run_settings(SimpleNamespace(model=model, top_k=top_k, long_doc=long_doc, evidence=False, **columns))


def _check_options(output: Path, actors, num_cpus, num_gpus, batch_docs, batch_size, top_k, long_doc) -> None:
    """Raise one ValueError naming every bad option (as the command line spells it) and the fix."""
    problems = []
    for option, value, what in (
        ("--actors", actors, "model actors"),
        ("--batch-docs", batch_docs, "documents per actor call"),
        ("--batch-size", batch_size, "windows per forward pass"),
        ("--top-k", top_k, "labels per document"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{option} must be a whole number of at least 1 ({what}), got {value!r}")
    for option, value in (("--num-cpus", num_cpus), ("--num-gpus", num_gpus)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
            problems.append(f"{option} must be a number of at least 0 (per actor), got {value!r}")
        elif value > 1 and value != int(value):
            problems.append(
                f"{option} above 1 must be a whole number (only one CPU or GPU is shared between actors), got {value!r}"
            )
    if long_doc is not None:
        from govtopic.strategies import get_strategy

        try:
            get_strategy(long_doc)
        except ValueError as err:
            problems.append(str(err))
    if output.exists() and not output.is_dir():
        problems.append(
            f"--output {output} is a file; predict-ray writes one Parquet file per input into a folder: pass a "
            "new folder or one predict-ray wrote before"
        )
    if problems:
        raise ValueError("; ".join(problems))


def _check_inputs(inputs: list[str]) -> None:
    if not inputs:
        raise ValueError(f"no inputs given: pass {READS.split(';')[0]}, or folders of them")
    missing = [item for item in inputs if not (Path(item).is_file() or Path(item).is_dir())]
    if missing:
        raise FileNotFoundError(
            f"no such file or folder: {', '.join(missing)}; inputs are {READS.split(';')[0]}, or folders of them"
        )


def check_model(model: str) -> ModelRecord:
    """The model folder's record, checked in the driver before Ray starts: the model is loaded once on the CPU
    by the same loader the actors use, so a path that is not a model folder, damaged weights, a missing
    tokenizer or a damaged n-gram channel raise govtopic's ``ModelLoadError`` here rather than in every actor."""
    from govtopic.predict import TopicClassifier

    return TopicClassifier(model, device="cpu").record


def _todo(files: list[Path], output: Path, settings: dict) -> list[Path]:
    """The files whose output is not written yet; refuses outputs predicted with other settings."""
    todo, differ = [], {}
    for f in files:
        path = output_path(output, f)
        if not path.exists():
            todo.append(f)
            continue
        for problem in _settings_differ(path, settings):
            differ.setdefault(problem, []).append(path.name)
    if differ:
        what = "; ".join(f"{problem} (in {', '.join(names)})" for problem, names in differ.items())
        raise ValueError(
            f"{output} holds predictions made with other settings: {what}. Resuming would mix them: run with the "
            "earlier settings to finish it, delete those files to predict them again, or choose another --output"
        )
    return todo


def _settings_differ(path: Path, settings: dict) -> list[str]:
    """How the settings ``path`` was predicted with differ from ``settings`` (empty: the same)."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise ValueError(
            f"{path} is not a Parquet file predict-ray finished ({type(err).__name__}: {err}); delete it to predict "
            "its input again"
        ) from None
    if SETTINGS_KEY not in metadata:
        logger.warning("%s was written by an earlier govtopic that kept no settings: taken as done", path)
        return []
    return settings_differences(json.loads(metadata[SETTINGS_KEY]), settings)


def _run(rows, todo, expected, output, model, options, pool, settings, counts) -> None:
    import ray

    actors, num_cpus, num_gpus, batch_docs = pool
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # files complete one after another: written as they do
    index = {str(f): i for i, f in enumerate(todo)}
    pending: dict[int, list[pd.DataFrame]] = {}
    received: Counter = Counter()
    frame = pd.DataFrame(rows)
    # One block per actor call: every actor of the pool gets work from the start.
    blocks = [frame.iloc[i : i + batch_docs] for i in range(0, len(frame), batch_docs)]
    dataset = ray.data.from_pandas(blocks).map_batches(
        _Predictor,
        fn_constructor_args=(model, options),
        batch_size=batch_docs,
        batch_format="pandas",
        concurrency=actors,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="pandas") if blocks else ():
        for name, part in batch.groupby("file", sort=False):
            i = index[name]
            pending.setdefault(i, []).append(part)
            received[i] += len(part)
            if received[i] == expected[i]:
                _write(pd.concat(pending.pop(i)), output_path(output, todo[i]), settings, counts)
    for i in [i for i, n in expected.items() if n == 0]:  # a file with no rows still gets its (empty) output
        _write(pd.DataFrame(columns=["file"]), output_path(output, todo[i]), settings, counts)


def _write(frame: pd.DataFrame, path: Path, settings: dict, counts: dict) -> None:
    """Write atomically: an output file exists only complete, so a rerun can skip it."""
    import pyarrow.parquet as pq

    table = _table(frame.reset_index(drop=True), settings)
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial)
    os.replace(partial, path)
    unreadable = table.column("error").is_valid()
    labelled = table.column("label").is_valid()
    counts["files_done"] += 1
    counts["errors"] += sum(unreadable.to_pylist())
    counts["predicted"] += sum(labelled.to_pylist())
    counts["no_topic"] += table.num_rows - sum(unreadable.to_pylist()) - sum(labelled.to_pylist())
    logger.info("wrote %s (%d documents)", path, table.num_rows)


def _table(frame: pd.DataFrame, settings: dict):
    """``frame`` as a table of ``output_schema`` (a column the frame lacks is null): whatever types pandas and
    Arrow gave a batch (a column of None, ints held as floats beside NaN), every file gets the same schema."""
    import pyarrow as pa

    schema = output_schema(settings)
    kinds = dict([*_ROW_FIELDS, *_RESULT_FIELDS])
    arrays = []
    for field in schema:
        values = frame[field.name] if field.name in frame else [None] * len(frame)
        arrays.append(pa.array([_cell(v, kinds[field.name]) for v in values], type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _cell(value, kind: str):
    if value is None or (not isinstance(value, (str, list, dict)) and pd.isna(value)):
        return None
    convert = {"int64": int, "float64": float, "bool": bool}.get(kind, str)
    return convert(value)


def _check_names(files: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen and seen[f.name] != f:
            raise ValueError(
                f"{seen[f.name]} and {f} would both be written to {f.name}{SUFFIX}; give inputs distinct file names "
                "or run them into separate --output folders"
            )
        seen[f.name] = f


def _rows(files: list[Path], columns: Columns) -> list[dict]:
    rows = []
    for f in files:
        for rec in iter_records([str(f)], columns):
            rows.append(
                {
                    "file": str(f),
                    "source": rec.source,
                    "id": rec.id,
                    # Never None: a column with some titles missing would reach the actors holding NaN.
                    "title": rec.title or "",
                    "text": rec.text or "",
                    "error": rec.error,
                }
            )
    return rows
