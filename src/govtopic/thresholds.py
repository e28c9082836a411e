"""Fitting review thresholds on labelled documents and storing them in a model folder's record.

``calibrate_thresholds`` scores labelled documents with a model folder, fits per-class thresholds for a target
precision on them (``review.fit_thresholds``: what each predicted class needs for its documents to go without a
person), and writes them into the folder's config.json, where ``predict()`` reads them to flag documents for
review. The documents are the validation split of the model's own training sources (optionally only some
sources), or the held-out rows of a labelled file; a file the model was trained on, without a split column, is
refused, as ``evaluate`` refuses it. A read-only folder is refused before any document is scored.

``calibrate_thresholds(model_dir, data_file=None, precision=0.95, split="validation", margin=None, min_docs=5,
batch_size=32, prior_docs=None, sources=None, label_map=None)`` returns the fit's report: coverage and
precision at both levels, the classes that never go without a person, and the same figures per training source
when there are several.

Example:
    >>> report = calibrate_thresholds("runs/quickstart/model", precision=0.95)
    >>> report["full"]["overall"]["coverage"]
    0.62
"""

from __future__ import annotations

import os
from pathlib import Path

from govtopic.calibration import level_softmax
from govtopic.data import DataError, check_source_names, load_labelled, source_rows
from govtopic.evaluation import held_out_rows, model_scheme, saved_config, split_wording, update_record
from govtopic.predict import TopicClassifier
from govtopic.review import PRIOR_DOCS, check_fit_args, fit_thresholds, thresholds_by_source


def _check_record_writable(model_dir: str | Path) -> None:
    """Calibration stores its thresholds in the folder's config.json: a folder that cannot take them is refused
    before the documents are scored."""
    folder = Path(model_dir)
    if folder.is_dir() and not (os.access(folder, os.W_OK) and os.access(folder / "config.json", os.W_OK)):
        raise ValueError(
            f"model folder {folder} is read-only, and calibrate-thresholds stores the thresholds in its config.json; "
            f"copy the folder somewhere writable (cp -r {folder} {folder.name}-reviewed) and calibrate the copy"
        )


def calibrate_thresholds(
    model_dir: str,
    data_file: str | None = None,
    precision: float = 0.95,
    split: str | None = "validation",
    margin: float | None = None,
    min_docs: int = 5,
    batch_size: int = 32,
    prior_docs: float | None = None,
    sources: list[str] | None = None,
    label_map: str | None = None,
) -> dict:
    """Fit thresholds on labelled documents and store them in the model folder's record (config.json).

    Args:
        model_dir: the model folder.
        data_file: a labelled JSONL/CSV/Parquet file (its ``split`` rows when it has a split column); None reads
            the model's own training sources (its saved config) and takes their validation split.
        precision: the precision wanted among the documents no person sees.
        split: which rows of ``data_file`` to use (None: every row).
        margin, min_docs: see ``review.fit_thresholds``.
        batch_size: windows per forward pass.
        prior_docs: see ``review.fit_thresholds`` (default ``review.PRIOR_DOCS``).
        sources: without ``data_file``, fit on the validation rows of these training sources only (their
            ``data.sources`` names): the source most like the documents to be tagged, when the others are an
            easier genre that would let through documents the target precision does not hold for.
        label_map: with ``data_file``, a YAML label map of its own spellings (see ``evaluation.model_scheme``).

    Returns:
        The report of ``review.fit_thresholds`` with ``documents`` and ``data`` added, and ``per_source`` (what
        the thresholds do on each training source's rows, both levels) when the rows come from several sources.

    Example:
        >>> report = calibrate_thresholds("runs/quickstart/model", precision=0.95)
        >>> report["full"]["overall"]["coverage"]
        0.62
    """
    prior = PRIOR_DOCS if prior_docs is None else prior_docs
    check_fit_args(precision, margin, prior, min_docs)  # before reading or scoring anything
    cfg = saved_config(model_dir)
    _check_record_writable(model_dir)
    if label_map is not None and data_file is None:
        raise ValueError(
            "--label-map reads a DATA file's own label spellings; the model's training sources are read with the "
            "label map it was trained with: pass a DATA file, or leave --label-map out"
        )
    if sources and data_file is not None:
        raise ValueError(
            f"--source picks the validation rows of {model_dir}'s training sources and is not used with a DATA "
            "file: keep only the rows you want in the file, or drop DATA to fit on the training sources"
        )
    if sources:
        check_source_names(sources, cfg.data)  # a typo fails here, before any file is read
    if data_file is None:
        data = load_labelled(cfg.data, cfg.normalize, cfg.train.seed).validation
        where = "the validation split of the model's training sources"
        if not len(data):
            raise DataError(
                f"{model_dir}: its training sources have no validation split; pass a labelled DATA file "
                "(govtopic calibrate-thresholds MODEL DATA), or set data.validation_from_train when training"
            )
        if sources:
            data = source_rows(data, sources, cfg.data)
            where = f"the validation rows of training source(s) {', '.join(dict.fromkeys(sources))}"
    else:
        fix = (
            "Run without DATA to fit on the validation split training held out "
            f"(govtopic calibrate-thresholds {model_dir})"
        )
        scheme = model_scheme(model_dir, cfg, label_map)
        data, counts = held_out_rows(model_dir, data_file, cfg, split, fix, scheme)
        where = f"{data_file} ({split_wording(split, counts['split_column'])})"
        if label_map is not None:
            where += f"; labels read with --label-map {label_map}"
    clf = TopicClassifier(model_dir)
    logits, _ = clf.document_logits(data.texts, clf.long_doc, batch_size, titles=data.titles)
    probs = level_softmax(logits, clf.temperature, clf.labels)
    thresholds, report = fit_thresholds(probs, data.labels, clf.labels, precision, margin, min_docs, prior)
    update_record(model_dir, thresholds=thresholds)
    report = {**report, "documents": len(data), "data": where, "model_dir": str(model_dir)}
    by_source = thresholds_by_source(probs, data.labels, data.sources, clf.labels, thresholds)
    if by_source:  # one source's documents can fall short of the target the mixture reaches
        report["per_source"] = by_source
    return report
