"""Evaluating a model folder: calibration on validation, figures and plots on test, a baseline beside it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from govtopic.calibration import fit_temperature, level_softmax, softmax
from govtopic.config import Config, load_config
from govtopic.data import DataError, Split, load_eval_file, load_labelled, source_groups
from govtopic.fsutil import atomic_write_text, claim_folder
from govtopic.labels import EVALUATION_FIX, LabelError, LabelMap, LabelScheme, Taxonomy, hierarchical_decode, l1
from govtopic.metrics import (
    compute_metrics,
    expected_calibration_error,
    is_two_level,
    reliability_bins,
    worst_confusions,
)
from govtopic.predict import TopicClassifier, has_words
from govtopic.record import CONFIG_FILE
from govtopic.review import held_out, thresholds_by_source
from govtopic.riskcoverage import add_risk_coverage
from govtopic.titles import prepend

logger = logging.getLogger(__name__)


def saved_config(model_dir: str | Path) -> Config:
    """The training config stored in a model folder (defaults when the folder has none). A path that is not a
    folder holding a model (config.json) is a ``ModelLoadError`` naming it."""
    from govtopic.modeling import check_model_folder

    check_model_folder(model_dir, need_weights=False)
    path = Path(model_dir) / CONFIG_FILE
    return load_config(path) if path.is_file() else Config()


def _record(model_dir: str | Path) -> dict:
    """The govtopic section of the model folder's config.json, as written (empty for a folder without one)."""
    return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("govtopic") or {}


def training_file_setting(model_dir: str | Path, data_file: str | Path, cfg: Config) -> str | None:
    """The training setting (e.g. ``data.train_file``) whose file ``data_file`` is, by the sha256 training
    recorded (by path in folders written before it was recorded); None when the model did not train on it."""
    from govtopic.runs import file_sha256

    recorded = _record(model_dir).get("data_sha256") or {}
    path = Path(data_file)
    if recorded and path.is_file():
        digest = file_sha256(path)
        return next((key for key, value in recorded.items() if value == digest), None)
    named = {"data.train_file": cfg.data.train_file} | {
        f"data.sources[{i}].file": s.file for i, s in enumerate(cfg.data.sources)
    }
    resolved = path.resolve()
    return next((key for key, f in named.items() if f and Path(f).resolve() == resolved), None)


def held_out_rows(
    model_dir, data_file, cfg: Config, split: str | None, fix: str, scheme, group_by=None, corrections=None
):
    """(the rows of ``data_file`` to score, the counts of ``load_eval_file``). Scoring (or fitting thresholds on)
    the rows a model was trained on measures its memory: a training file without a split column, asked for a
    split, is refused with ``fix`` and ``--split all`` (which scores it anyway)."""
    counts: dict = {}
    data = load_eval_file(
        data_file, cfg.data, cfg.normalize, split, scheme, group_by, corrections, counts, EVALUATION_FIX
    )
    if split is None or counts["split_column"]:
        return data, counts
    setting = training_file_setting(model_dir, data_file, cfg)
    if setting:
        raise DataError(
            f"{data_file} is the file this model was trained on ({setting}) and has no split column "
            f"({cfg.data.split_column!r}), so its {split} rows cannot be told from the training rows: the figures "
            f"would be the model's memory of them. {fix}, or pass --split all to use every row anyway (training "
            "rows included)"
        )
    return data, counts


def split_wording(split: str | None, has_split: bool) -> str:
    """Which rows were used, as reports and fit reports word it (``held_out_rows``' ``split_column`` count)."""
    if split is None:
        return "all rows"
    return split if has_split else "all rows (no split column)"


def model_scheme(model_dir: str | Path, cfg: Config, label_map: str | Path | None = None):
    """The label scheme a model learnt with: the taxonomy of its config (when the file is here) and the label
    map kept in the model folder, so gold labels are read exactly as the training labels were. ``label_map``
    (a YAML file of the label-map shape) adds a file's own spellings on top, e.g. a portal's ``公路`` for
    ``工业、交通\\公路`` when the model was trained without them."""
    kept = _record(model_dir).get("label_scheme") or {}
    if kept.get("taxonomy"):  # kept in the folder since this release (checked on load: govtopic.record)
        taxonomy = Taxonomy(kept["taxonomy"])
    elif cfg.data.taxonomy and Path(cfg.data.taxonomy).is_file():
        taxonomy = Taxonomy.load(cfg.data.taxonomy)
    else:
        taxonomy = None
        if cfg.data.taxonomy:
            logger.warning(
                "taxonomy %s not found from here, and %s was written before model folders kept their taxonomy: "
                "gold labels are not checked against it (run from the folder training ran in to check them)",
                cfg.data.taxonomy,
                model_dir,
            )
    mapping = LabelMap(kept.get("label_map") or {}, kept.get("label_map_version", "none"))
    if label_map is not None:
        own = _read_label_map(label_map)
        try:  # the scheme's own check of the file's targets against the taxonomy, worded for the option
            LabelScheme(taxonomy, own)
        except LabelError as err:
            raise DataError(_for_option(err, label_map)) from err
        changed = {k: (mapping.labels[k], v) for k, v in own.labels.items() if mapping.labels.get(k, v) != v}
        if changed:
            logger.warning("--label-map %s reads these differently from the model's own map: %s", label_map, changed)
        mapping = LabelMap({**mapping.labels, **own.labels}, f"{mapping.version}+{own.version}")
    return LabelScheme(taxonomy, mapping, "error", cfg.data.label_level)


def _read_label_map(path: str | Path) -> LabelMap:
    """A ``--label-map`` file, its problems worded for the command line."""
    if not Path(path).is_file():
        raise DataError(
            f"--label-map {path}: no such file (a relative path is read from {Path.cwd()}). Pass a YAML file that "
            "maps the data file's spellings to the "
            "taxonomy's labels, e.g. `labels: {公路: 工业、交通\\公路}` (see data/label_map.yaml)"
        )
    try:
        return LabelMap.load(str(path))
    except LabelError as err:
        raise DataError(_for_option(err, path)) from err


def _for_option(err: LabelError, path: str | Path) -> str:
    """A label-map error (worded for the config setting ``data.label_map``) worded for ``--label-map PATH``."""
    return str(err).replace("data.label_map", f"--label-map {path}", 1)


def _older_report(path: Path) -> bool:
    """A report folder written before folders were marked: its metrics.json is a govtopic report."""
    try:
        record = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"metrics", "meta"} <= set(record)


def _label_indices(labels: list[str | None], names: list[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    return np.array([index.get(y, -1) for y in labels])


def update_record(model_dir: str | Path, **changes) -> None:
    """Change settings of a model folder's record (config.json's ``govtopic``), atomically; the one way
    calibration writes into a finished folder."""
    config_path = Path(model_dir) / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.setdefault("govtopic", {}).update(changes)
    atomic_write_text(config_path, json.dumps(config, ensure_ascii=False, indent=2) + "\n")


# Validation documents below which a fitted temperature is reported as rough.
MIN_CALIBRATION_DOCS = 20


def calibrate_folder(model_dir: Path, validation: Split, cfg: Config, logits: np.ndarray | None = None) -> dict:
    """Fit a temperature on the validation split and store it in the folder's config.json.

    ``logits``: the folder's document logits for ``validation`` when the caller already has them."""
    clf = TopicClassifier(model_dir)
    if logits is None:
        logits, _ = clf.document_logits(validation.texts, clf.long_doc, cfg.eval.batch_size, titles=validation.titles)
    # First-level-only rows have no single class to calibrate against; the temperature is fitted on the others.
    y = _label_indices(validation.labels, clf.labels)
    known = y >= 0
    fitted = known.sum() >= 2
    temperature = fit_temperature(logits[known], y[known], clf.labels) if fitted else 1.0
    before = expected_calibration_error(softmax(logits[known]), y[known])
    after = expected_calibration_error(level_softmax(logits[known], temperature, clf.labels), y[known])
    update_record(model_dir, temperature=temperature)
    if fitted:
        if known.sum() < MIN_CALIBRATION_DOCS:
            logger.warning(
                "the temperature is fitted on %d validation document(s) only: a rough calibration; give the run a "
                "larger validation split (data.validation_from_train, or a split column)",
                int(known.sum()),
            )
        logger.info(
            "temperature %.3f fitted on %d validation documents (ECE %.3f -> %.3f)",
            temperature,
            int(known.sum()),
            before,
            after,
        )
    else:
        logger.warning(
            "scores NOT calibrated: %d validation document(s) with a label of the model, too few to fit a "
            "temperature; it stays 1.0 and scores (and review thresholds fitted on them) are the raw softmax. "
            "Give the run a larger validation split (data.validation_from_train, or a split column)",
            int(known.sum()),
        )
    return {
        "temperature": temperature,
        "validation_docs": int(known.sum()),
        "validation_ece_before": before,
        "validation_ece_after": after,
    }


def _baseline(train_split: Split | None, cfg: Config):
    """The TF-IDF baseline fitted on the model's training split (title and body, as the model reads them).

    With first-level-only rows in training the baseline learns first-level classes: its full-label figures
    are then None and its first-level ones are the reference.
    """
    if train_split is None or not cfg.eval.baseline:
        return None, False
    from govtopic.baseline import TfidfBaseline

    # Rows labelled at the first level only, of a level that has full labels too: labels that are not classes.
    present = {y for y in train_split.labels if y}
    mixed = not present <= set(LabelScheme().model_labels(list(present)))
    labels = [l1(y) if mixed and y else y for y in train_split.labels]
    base = TfidfBaseline(seed=cfg.train.seed).fit(prepend(train_split.texts, train_split.titles), labels)
    return base, mixed


def _baseline_probs(base, mixed: bool, split: Split, labels: list[str]) -> np.ndarray:

    texts = prepend(split.texts, split.titles)
    if not mixed:
        return base.predict_proba(texts, labels)
    # First-level probabilities shared evenly by each level's classes: first-level decoding is unchanged.
    names = sorted({l1(y) for y in labels})
    p1 = base.predict_proba(texts, names)
    owner = np.array([names.index(l1(y)) for y in labels])
    share = np.bincount(owner, minlength=len(names))[owner]
    return p1[:, owner] / share


def _baseline_metrics(base, mixed: bool, split: Split, labels: list[str], cfg: Config) -> dict | None:
    if base is None:
        return None
    started = time.time()
    probs = _baseline_probs(base, mixed, split, labels)
    metrics = compute_metrics(split.labels, probs, labels, cfg.eval.top_k)
    if mixed:
        for key in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "per_class", "top_k_accuracy", "ece"):
            metrics[key] = None
        metrics["notes"] = metrics.get("notes", []) + ["baseline trained on first-level labels: l1 figures only"]
    metrics["seconds"] = round(time.time() - started, 1)
    metrics["name"] = "char 1-3-gram TF-IDF + LinearSVC" + (" (first level)" if mixed else "")
    metrics["_probs"] = probs
    return metrics


def per_source(split: Split, probs: np.ndarray, labels: list[str], cfg: Config) -> dict:
    """Headline figures for each source of a split (empty when it has one source)."""
    out = {}
    two_level = is_two_level(split.labels, labels)  # the whole set's choice: its full-label rows add up
    for name, rows in source_groups(split.sources).items():
        m = compute_metrics([split.labels[i] for i in rows], probs[rows], labels, cfg.eval.top_k, two_level)
        out[name] = {k: m.get(k) for k in ("n", "n_full", "l1_accuracy", "l1_macro_f1", "accuracy", "macro_f1")}
    return out


def _plots(
    out_dir: Path,
    metrics: dict,
    y_true: list[str],
    probs: np.ndarray,
    labels: list[str],
    bins_before: list,
    bins_after: list,
    ece: tuple[float, float],
) -> dict[str, Path]:
    from govtopic.plots import plot_confusion_matrix, plot_per_class_f1, plot_reliability, setup_cjk_font

    setup_cjk_font()
    _, names, l1_probs = hierarchical_decode(probs, labels)
    pred_l1 = [names[i] for i in l1_probs.argmax(axis=1)]
    gold_l1 = [l1(y) for y in y_true]
    classes = sorted(set(gold_l1) | set(pred_l1))
    return {
        "confusion_l1": plot_confusion_matrix(gold_l1, pred_l1, classes, out_dir / "confusion_l1.png"),
        "f1_l1": plot_per_class_f1(metrics["l1"]["per_class"], out_dir / "f1_l1.png", "Per-class F1 (first level)"),
        "reliability": plot_reliability(bins_before, ece[0], ece[1], out_dir / "reliability.png", bins_after),
    }


def evaluate_split(
    model_dir: Path,
    split: Split,
    out_dir: Path,
    cfg: Config,
    train_split: Split | None = None,
    meta: dict | None = None,
    model_card_dir: Path | None = None,
    long_doc: str | None = None,
    training: dict | None = None,
) -> dict:
    """All figures, plots and reports for one labelled split; returns metrics.json's content. ``training``
    (learning curves and the chosen checkpoint, from govtopic.training) adds a section to the report."""
    from govtopic.modelcard import render_model_card
    from govtopic.report import write_report

    # Before any work: the report folder must be new, empty, or an earlier report (never the user's files).
    out_dir = claim_folder(out_dir, "evaluation report", "--output", legacy=_older_report)
    clf = TopicClassifier(model_dir)
    ld = clf.long_doc if long_doc is None else type(clf.long_doc)(**{**clf.long_doc.__dict__, "strategy": long_doc})
    started = time.time()
    logits, info = clf.document_logits(split.texts, ld, cfg.eval.batch_size, titles=split.titles)
    seconds = time.time() - started
    raw_probs, probs = softmax(logits), level_softmax(logits, clf.temperature, clf.labels)
    metrics = compute_metrics(split.labels, probs, clf.labels, cfg.eval.top_k)
    y = _label_indices(split.labels, clf.labels)
    known = y >= 0
    ece = (expected_calibration_error(raw_probs[known], y[known]), expected_calibration_error(probs[known], y[known]))
    bins = (reliability_bins(raw_probs[known], y[known]), reliability_bins(probs[known], y[known]))
    calibration = {"temperature": clf.temperature, "ece_before": ece[0], "ece_after": ece[1]}
    base, mixed = _baseline(train_split, cfg)
    baseline = _baseline_metrics(base, mixed, split, clf.labels, cfg)
    add_risk_coverage(metrics, baseline, mixed, probs, split.labels, clf.labels)
    if clf.record.thresholds:  # what the stored thresholds let through on these documents, and how right it is
        known = [item["known_ngrams"] for item in info] if info and "known_ngrams" in info[0] else None
        metrics["thresholds"] = held_out(probs, split.labels, clf.labels, clf.record.thresholds, known)
        by_source = thresholds_by_source(probs, split.labels, split.sources, clf.labels, clf.record.thresholds, known)
        if by_source:
            metrics["thresholds"]["per_source"] = by_source
    sources = per_source(split, probs, clf.labels, cfg)
    if sources:
        metrics["per_source"] = sources
        if baseline is not None:
            baseline["per_source"] = per_source(split, baseline["_probs"], clf.labels, cfg)
            if mixed:  # a first-level baseline has no full-label figures
                for figures in baseline["per_source"].values():
                    figures.update(accuracy=None, macro_f1=None)
    if baseline is not None:
        baseline.pop("_probs")
    plots = _plots(out_dir, metrics, split.labels, probs, clf.labels, bins[0], bins[1], ece)
    from govtopic.plots import plot_risk_coverage

    rc_base = (baseline or {}).get("risk_coverage")
    plots["risk_coverage"] = plot_risk_coverage(metrics["risk_coverage"], rc_base, out_dir / "risk_coverage.png")
    confusions = worst_confusions(split.labels, probs, clf.labels, split.titles)
    meta = dict(meta or {})
    # Training evaluates the staged folder; the report names the folder it is moved to.
    shown_dir = meta.pop("final_model_dir", str(model_dir))
    meta = {
        **meta,
        "model_dir": shown_dir,
        "documents": len(split),
        "long_doc": ld.strategy,
        "pooling": ld.pooling,
        "max_length": ld.max_length,
        "docs_per_second": round(len(split) / max(seconds, 1e-9), 1),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    paths = write_report(
        out_dir,
        metrics=metrics,
        baseline_metrics=baseline,
        plots=plots,
        confusions=confusions,
        calibration=calibration,
        meta=meta,
        training=training,
    )
    if model_card_dir is not None:
        atomic_write_text(Path(model_card_dir) / "README.md", render_model_card(metrics, baseline, meta))
    logger.info("evaluation written to %s", ", ".join(str(p) for p in paths.values()))
    return {"metrics": metrics, "baseline": baseline, "calibration": calibration, "meta": meta, "paths": paths}


def evaluate(
    model_dir: str | Path,
    data_file: str | Path,
    output_dir: str | Path | None = None,
    split: str | None = "test",
    baseline: bool | None = None,
    long_doc: str | None = None,
    group_by: str | None = None,
    corrections: list[str | Path] | None = None,
    label_map: str | Path | None = None,
) -> dict:
    """Evaluate a model folder on a labelled file (its test split when it has a split column).

    Args:
        model_dir: the model folder.
        data_file: JSONL, CSV or Parquet with the model's text, title and label columns.
        output_dir: report folder (default: ``eval/DATA_NAME`` beside the model folder).
        split: the rows of this split when the file has a split column (None: every row).
        baseline: train the TF-IDF baseline on the model's training sources (default: as the model's config).
        long_doc: override the model's long-document strategy.
        group_by: a column whose values group the rows in the report's per-source table.
        corrections: id + label files (or Label Studio exports) whose labels replace the file's for the same
            ids, as a training corrections source does; a later file wins.
        label_map: a YAML label map of the file's own spellings, read on top of the one the model learnt with.

    Example:
        >>> evaluate("runs/cpu-official/model", "../shared/data/official.jsonl.gz", group_by="label_source")
        >>> evaluate("runs/cpu-official/model", "../shared/data/regulations.jsonl.gz",
        ...          corrections=["data/regulations_corrections.jsonl"])
    """
    cfg = saved_config(model_dir)
    if baseline is not None:
        cfg.eval.baseline = baseline
    scheme = model_scheme(model_dir, cfg, label_map)
    fix = "The rows training held out are scored in the run's eval/ folder (govtopic train writes it)"
    data, counts = held_out_rows(model_dir, data_file, cfg, split, fix, scheme, group_by, corrections)
    # predict() gives a document with no words (empty, punctuation only) no topic: it is not scored either.
    words = [i for i, (text, title) in enumerate(zip(data.texts, data.titles)) if has_words(text + (title or ""))]
    empty = len(data) - len(words)
    if empty:
        data = data.subset(words)
    train_split = None
    files = [s.file for s in cfg.data.sources] or [cfg.data.train_file]
    if cfg.eval.baseline and all(f and Path(f).is_file() for f in files):
        train_split = load_labelled(cfg.data, cfg.normalize, cfg.train.seed).train
    elif cfg.eval.baseline:
        logger.warning("baseline skipped: the model's training files %s are not all available here", files)
    out = Path(output_dir) if output_dir else default_report_folder(model_dir, data_file)
    meta = {"data_file": str(data_file), "split": split_wording(split, counts["split_column"])}
    left_out = [f"{counts['unlabelled']} row(s) without a label"] if counts["unlabelled"] else []
    left_out += [f"{empty} document(s) with no text (predict() gives them no topic)"] if empty else []
    if left_out:
        meta["left_out"] = "; ".join(left_out)
        logger.warning("%s: not scored: %s", data_file, meta["left_out"])
    if corrections:
        meta["corrections"] = ", ".join(map(str, corrections))
    if label_map is not None:
        meta["label_map"] = str(label_map)
    return evaluate_split(Path(model_dir), data, out, cfg, train_split, meta, long_doc=long_doc)


def default_report_folder(model_dir: str | Path, data_file: str | Path) -> Path:
    """Where ``evaluate`` writes without ``--output``: ``eval/DATA_NAME`` beside the model folder, or
    ``eval/DATA_NAME-2`` (-3, ...) when that folder holds the report of another file of the same name: a
    report is replaced only by a new report of the same file.

    Example:
        >>> default_report_folder("runs/quickstart/model", "../shared/data/gold_dev.jsonl")
        PosixPath('runs/quickstart/eval/gold_dev')
    """
    base = Path(model_dir).parent / "eval"
    stem = Path(data_file).name.split(".")[0] or "data"
    wanted = Path(data_file).resolve()
    n = 1
    while True:
        folder = base / (stem if n == 1 else f"{stem}-{n}")
        try:
            recorded = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["meta"]["data_file"]
        except (OSError, ValueError, KeyError, TypeError):
            return folder  # no report of any file here yet
        if Path(recorded).resolve() == wanted:
            return folder
        logger.info("%s holds the report of another file (%s); this one goes to the next free name", folder, recorded)
        n += 1
