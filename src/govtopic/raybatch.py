"""Batch prediction on Ray Data: files of documents predicted by a pool of model actors, one Parquet file out
per file in, so an interrupted run resumes by file (a file whose output exists is skipped).

Documents are read exactly as ``govtopic predict`` reads them (``govtopic.inputs.iter_records``: same columns,
encodings, ``source`` keys and per-row errors), flow through ``map_batches`` to actors that each load the model
once (``TopicClassifier``), and come back in input order; each input's Parquet file is written (atomically) as
soon as its last document is predicted.

Example:
    >>> predict_ray("runs/quickstart/model", ["data/official.jsonl.gz"], "runs/ray-out", actors=2)
    {'predicted': 2023, 'errors': 0, 'files_done': 1, 'files_skipped': 0, ...}
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from govtopic.inputs import Columns, iter_records

logger = logging.getLogger(__name__)

SUFFIX = ".predictions.parquet"
# Input files a folder contributes (sorted); any other file in it is left alone.
READABLE = (".jsonl", ".jsonl.gz", ".json", ".parquet")
# Result columns, in this order, in every output file (missing values are null).
RESULT_COLUMNS = ["label", "label_l1", "score", "score_l1", "windows", "truncated", "unknown_share", "reason"]


class _Predictor:
    """A Ray actor: loads the model once, then predicts batches of rows (a pandas DataFrame)."""

    def __init__(self, model: str, options: dict):
        from govtopic.predict import TopicClassifier

        self.clf = TopicClassifier(model, device=options.pop("device", None))
        self.options = options

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        readable = batch["error"].isna().to_numpy()
        docs = [{"title": t or "", "text": x or ""} for t, x in zip(batch["title"][readable], batch["text"][readable])]
        results = self.clf.predict(docs, progress=False, **self.options) if docs else []
        out = {name: [None] * len(batch) for name in [*RESULT_COLUMNS, "top_k"]}
        for row, result in zip(readable.nonzero()[0], results):
            for name in RESULT_COLUMNS:
                out[name][row] = result.get(name)
            if "top_k" in result:
                out["top_k"][row] = json.dumps(result["top_k"], ensure_ascii=False)
        frame = batch[["file", "source", "id", "error"]].reset_index(drop=True)
        return pd.concat([frame, pd.DataFrame(out)], axis=1)


def input_files(inputs: list[str]) -> list[Path]:
    """The files to predict: each file given, and the JSONL/Parquet files of each folder (sorted)."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(READABLE))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder; inputs are .jsonl or .parquet files or folders")
    return files


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
        inputs: .jsonl(.gz) / .parquet files, or folders of them.
        output: folder for ``NAME.predictions.parquet`` per input: columns ``file``, ``source`` and ``id`` (as
            ``govtopic predict`` writes them), ``error`` (unreadable rows), then the result fields.
        address: a Ray cluster (``ray://host:10001`` or ``auto``); default: the running or a new local instance.
        actors, num_cpus, num_gpus: the actor pool and what each actor reserves (``num_gpus=1`` on GPU nodes).
        batch_docs: documents per actor call; batch_size, top_k, long_doc: as ``TopicClassifier.predict``.
        text_column, title_column, id_column: table columns (title: the model's own by default, ``""`` for none).

    Returns counts: predicted, errors, files_done, files_skipped, seconds, output.

    Example:
        >>> import ray; ray.init(num_cpus=2, include_dashboard=False)
        >>> predict_ray("runs/quickstart/model", ["data/official.jsonl.gz"], "runs/ray-out", actors=2)
    """
    import ray

    started = time.time()
    model, output = str(model), Path(output)
    files = input_files(inputs)
    _check_names(files)
    todo = [f for f in files if not output_path(output, f).exists()]
    counts = {"predicted": 0, "errors": 0, "files_done": 0, "files_skipped": len(files) - len(todo)}
    if todo:
        output.mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        rows = _rows(todo, _columns(model, text_column, title_column, id_column))
        per_file = Counter(r["file"] for r in rows)
        expected = {i: per_file[str(f)] for i, f in enumerate(todo)}
        options = {"batch_size": batch_size, "top_k": top_k, "long_doc": long_doc}
        if num_gpus:
            options["device"] = "cuda"
        _run(rows, todo, expected, output, model, options, actors, num_cpus, num_gpus, batch_docs, counts)
    return {**counts, "seconds": round(time.time() - started, 2), "output": str(output)}


def _run(rows, todo, expected, output, model, options, actors, num_cpus, num_gpus, batch_docs, counts) -> None:
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # files complete one after another: written as they do
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
    index = {str(f): i for i, f in enumerate(todo)}
    pending: dict[int, list[pd.DataFrame]] = {}
    received: Counter = Counter()
    for batch in dataset.iter_batches(batch_size=None, batch_format="pandas"):
        for name, part in batch.groupby("file", sort=False):
            i = index[name]
            pending.setdefault(i, []).append(part)
            received[i] += len(part)
            if received[i] == expected[i]:
                _write(pd.concat(pending.pop(i)), output_path(output, todo[i]), counts)
    for i in [i for i, n in expected.items() if n == 0]:  # a file with no rows still gets its (empty) output
        _write(
            pd.DataFrame(columns=["file", "source", "id", "error", *RESULT_COLUMNS]),
            output_path(output, todo[i]),
            counts,
        )


def _write(frame: pd.DataFrame, path: Path, counts: dict) -> None:
    """Write atomically: an output file exists only complete, so a rerun can skip it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    partial = path.with_name(path.name + ".partial")
    pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False), partial)
    os.replace(partial, path)
    counts["files_done"] += 1
    counts["errors"] += int(frame["error"].notna().sum())
    counts["predicted"] += int(frame["error"].isna().sum())
    logger.info("wrote %s (%d documents)", path, len(frame))


def _check_names(files: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen and seen[f.name] != f:
            raise ValueError(
                f"{seen[f.name]} and {f} would both be written to {f.name}{SUFFIX}; give inputs distinct file names "
                "or run them into separate --output folders"
            )
        seen[f.name] = f


def _columns(model: str, text: str, title: str | None, ident: str) -> Columns:
    """The table columns to read; the title column defaults to the one the model was trained with."""
    if title is not None:
        return Columns(text, ident, title or None)
    from transformers import AutoConfig

    from govtopic.record import ModelRecord

    record = ModelRecord.from_config(AutoConfig.from_pretrained(model), model)
    return Columns(text, ident, record.read_title_column(None))


def _rows(files: list[Path], columns: Columns) -> list[dict]:
    rows = []
    for f in files:
        for rec in iter_records([str(f)], columns):
            rows.append(
                {
                    "file": str(f),
                    "source": rec.source,
                    "id": rec.id,
                    "title": rec.title,
                    "text": rec.text,
                    "error": rec.error,
                }
            )
    return rows
