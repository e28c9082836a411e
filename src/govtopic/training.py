"""Fine-tuning with the transformers Trainer, from a validated Config to a complete model folder.

A run folder holds ``checkpoints/`` (for resuming), ``model/`` (the finished model, written atomically:
it only appears once it is complete), ``eval/`` (the reports on the test split) and ``training/`` (the learning
curves: training loss and validation figures by step, as JSON and PNG).

With a validation split the model is scored during training (govtopic.validation) and the checkpoint with the
best ``train.best_metric`` becomes the model; ``train.early_stopping_patience`` stops a run that stopped
improving.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np

from govtopic import __version__, runs
from govtopic.config import Config, ConfigError
from govtopic.data import LabelledData, load_labelled
from govtopic.fsutil import replace_dir
from govtopic.losses import MixedDepthLoss, balanced_sample_weights, balanced_weights
from govtopic.modeling import (
    autocast_dtype,
    build_for_training,
    check_model_sources,
    default_device,
    load_tokenizer,
)
from govtopic.record import CONFIG_FILE

logger = logging.getLogger(__name__)

CONFIG_NAME = CONFIG_FILE  # the name older scripts import from here


def window_dataset(tokenizer, split, label_names: list[str], cfg: Config, scheme=None):
    """(datasets.Dataset of training windows, TargetTable): every window of a document (its title window
    too, under ``long_doc.title: window``) carries the document's target: its label, or all classes of its
    level for a first-level-only label, with its source's weight (times its class's weight under
    ``train.class_weights: balanced``)."""
    from datasets import Dataset

    from govtopic.labels import LabelScheme
    from govtopic.losses import TargetTable
    from govtopic.titles import encode_documents

    scheme = scheme or LabelScheme()
    table = TargetTable(len(label_names))
    allowed_sets = []
    for label in split.labels:
        allowed = scheme.targets(label, label_names)
        if not allowed:
            raise ValueError(f"label {label!r} is not among the model's classes; this is a bug in the label set")
        allowed_sets.append(tuple(sorted(allowed)))
    class_weight = [1.0] * len(allowed_sets)
    if cfg.train.class_weights == "balanced":
        class_weight = balanced_weights(allowed_sets)
    targets = [
        table.index(list(allowed), weight * cw)
        for allowed, weight, cw in zip(allowed_sets, split.weights, class_weight)
    ]
    windows, _ = encode_documents(
        tokenizer, split.texts, split.titles, cfg.long_doc, max_windows=cfg.long_doc.train_max_windows
    )
    ids = windows.input_ids
    dataset = Dataset.from_dict(
        {"input_ids": ids, "labels": [targets[d] for d in windows.doc_index], "length": [len(x) for x in ids]}
    )
    return dataset, table


def training_arguments(cfg: Config, checkpoint_dir: Path, eval_every: int | None = None):
    """The Trainer's arguments for ``cfg``. With ``eval_every`` (steps) the validation split is scored and a
    checkpoint written at every evaluation, and the best one (``train.best_metric``) is loaded at the end."""
    from transformers import TrainingArguments

    from govtopic.schedule import METRICS

    tr = cfg.train
    device = default_device()
    dtype = autocast_dtype(device, tr.precision)
    save_steps = eval_every or tr.save_steps or None
    validation = (
        {
            "eval_strategy": "steps",
            "eval_steps": eval_every,
            "load_best_model_at_end": True,
            "metric_for_best_model": f"eval_{tr.best_metric}",
            "greater_is_better": METRICS[tr.best_metric],
        }
        if eval_every
        else {"eval_strategy": "no"}
    )
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=tr.epochs,
        max_steps=tr.max_steps if tr.max_steps is not None else -1,
        learning_rate=tr.learning_rate,
        per_device_train_batch_size=tr.batch_size,
        per_device_eval_batch_size=tr.eval_batch_size,
        gradient_accumulation_steps=tr.gradient_accumulation_steps,
        weight_decay=tr.weight_decay,
        warmup_steps=tr.warmup_ratio,
        seed=tr.seed,
        data_seed=tr.seed,
        bf16=dtype is not None and dtype.is_floating_point and str(dtype) == "torch.bfloat16",
        fp16=dtype is not None and str(dtype) == "torch.float16",
        # Length grouping under several processes trained measurably worse here (tests/test_distributed.py:
        # 0.67 against 1.0 accuracy): it is used in single-process runs only.
        train_sampling_strategy="group_by_length" if tr.group_by_length and _world_size() == 1 else "random",
        logging_steps=tr.logging_steps,
        save_strategy="steps" if save_steps else "epoch",
        save_steps=save_steps or 500,
        save_total_limit=tr.save_total_limit,
        **validation,
        # Label smoothing is applied by govtopic.losses (the loss of rows of either depth).
        label_smoothing_factor=0.0,
        dataloader_num_workers=tr.dataloader_num_workers,
        report_to="none",
        ddp_find_unused_parameters=False,
        use_cpu=device.type == "cpu",
        disable_tqdm=False,
    )


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def last_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a run killed while
    saving leaves a folder without it, which is skipped (resuming from it would fail)."""
    if not checkpoint_dir.is_dir():
        return None
    found = []
    for path in checkpoint_dir.glob("checkpoint-*"):
        step = path.name.rsplit("-", 1)[-1]
        if step.isdigit() and (path / "trainer_state.json").is_file():
            found.append((int(step), path))
    return str(max(found)[1]) if found else None


def _title_column(cfg: Config) -> str | None:
    if cfg.long_doc.title == "none":
        return None
    columns = [s.title_column for s in cfg.data.sources] or [cfg.data.title_column]
    return next((c for c in columns if c), None)


def save_model_folder(
    model, tokenizer, cfg: Config, folder: Path, temperature: float = 1.0, scheme=None, provenance: dict | None = None
) -> None:
    """Weights (safetensors), tokenizer, id2label and the govtopic settings the predictor needs, with
    ``provenance`` (``data_sha256``, ``git_commit``: see govtopic.record.ModelRecord) when given."""
    model.config.govtopic = {
        "version": __version__,
        "long_doc": _asdict(cfg.long_doc),
        "normalize": _asdict(cfg.normalize),
        "temperature": temperature,
        "precision": cfg.train.precision,
        # govtopic predict reads this column of a table as the title, by the rule in long_doc.title.
        "title_column": _title_column(cfg),
        "label_scheme": scheme.to_dict() if scheme is not None else None,
        **(provenance or {}),
    }
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    cfg.save(folder / CONFIG_NAME)


def _asdict(obj) -> dict:
    import dataclasses

    return dataclasses.asdict(obj)


def train(cfg: Config) -> Path:
    """Train, calibrate, evaluate and save; returns the finished model folder.

    Args:
        cfg: a validated Config (``govtopic.load_config``).

    Example:
        >>> model_dir = train(load_config("configs/quickstart.yaml"))
    """
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, set_seed

    from govtopic.tracking import Tracker, make_callback
    from govtopic.validation import make_trainer_class

    started = time.time()
    check_model_sources(cfg.model)
    set_seed(cfg.train.seed)
    run_dir = Path(cfg.output_dir)
    checkpoint_dir = run_dir / "checkpoints"
    args = training_arguments(cfg, checkpoint_dir)
    # Nothing in output_dir changes before the data files are found and the folder is this run's (govtopic.runs);
    # under several processes the first one prepares it and the others check after it.
    with args.main_process_first(local=False, desc="preparing the run folder"):
        runs.prepare(cfg, main=args.process_index == 0)
    cfg.save(run_dir / CONFIG_NAME)
    data = load_labelled(cfg.data, cfg.normalize, cfg.train.seed)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.revision)
    model = build_for_training(cfg.model, data.label_names, cfg.long_doc.max_length)
    # The loss is govtopic.losses' (it divides by the Trainer's count of rows itself); the model's own loss
    # is never used.
    model.accepts_loss_kwargs = False
    train_set, targets = window_dataset(tokenizer, data.train, data.label_names, cfg, data.scheme)
    logger.info("%d training windows from %d documents (%s)", len(train_set), len(data.train), cfg.long_doc.strategy)
    scorer, eval_every = _validation_plan(cfg, data, tokenizer, len(train_set))
    if eval_every:
        args = training_arguments(cfg, checkpoint_dir, eval_every)
    callbacks = []
    if eval_every and cfg.train.early_stopping_patience:
        # Patience counts evaluations without a new best value; which checkpoint becomes the model is
        # train.best_tolerance's rule (GovtopicTrainer), so a plateau still stops the run.
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    provenance = _provenance(cfg)
    tracker = Tracker(cfg.train.report_to if args.process_index == 0 else [], run_dir, run_dir.name)
    if tracker.names:
        rows = {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)}
        tracker.start(cfg.to_dict(), provenance["data_sha256"], rows)
        callbacks.append(make_callback(tracker))
    sample_weights = None
    if cfg.train.sampler == "balanced":
        sample_weights = balanced_sample_weights([tuple(targets.masks[i]) for i in train_set["labels"]])
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        # Never read: evaluation is the scorer's (documents, not windows); the Trainer only wants one set.
        eval_dataset=train_set.select([0]) if scorer is not None else None,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_loss_func=MixedDepthLoss(targets, cfg.train.label_smoothing),
        callbacks=callbacks,
        scorer=scorer,
        sample_weights=sample_weights,
        best_tolerance=cfg.train.best_tolerance,
    )
    _run(trainer, cfg, checkpoint_dir)
    if not trainer.is_world_process_zero():
        return run_dir / "model"
    training = _write_curves(trainer, cfg, run_dir)
    model_dir = finish(
        trainer.model, tokenizer, cfg, data, run_dir, time.time() - started, provenance=provenance, training=training
    )
    tracker.finish(_test_figures(run_dir), trainer.state.global_step)
    return model_dir


def _run(trainer, cfg: Config, checkpoint_dir: Path) -> None:
    resume = last_checkpoint(checkpoint_dir) if cfg.train.resume else None
    if resume:
        logger.info("resuming from %s", resume)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except RuntimeError as err:
        if resume and "size mismatch" in str(err):
            raise ValueError(
                f"the checkpoint {resume} was made with another model size or label set than this config. "
                f"Delete {checkpoint_dir} (or choose another output_dir), or set train.resume=false."
            ) from err
        raise


def _validation_plan(cfg: Config, data: LabelledData, tokenizer, n_windows: int):
    """(ValidationScorer or None, evaluation interval in steps or None). Raises ConfigError when early stopping
    could never trigger on this data."""
    from govtopic.schedule import patience_problem, planned_evaluations
    from govtopic.validation import ValidationScorer

    tr = cfg.train
    if not tr.validate:
        return None, None
    if not len(data.validation):
        logger.warning("no validation rows: the model is the last step's weights (no best checkpoint)")
        if tr.early_stopping_patience:
            raise ConfigError(
                [
                    "train.early_stopping_patience: the data has no validation rows to stop on; set "
                    "data.validation_from_train above 0 or train.early_stopping_patience=null"
                ]
            )
        return None, None
    per_step = tr.batch_size * tr.gradient_accumulation_steps * _world_size()
    steps_per_epoch = max(1, math.ceil(n_windows / per_step))
    planned = planned_evaluations(cfg, steps_per_epoch)
    if tr.early_stopping_patience and planned is not None and tr.early_stopping_patience >= planned:
        raise ConfigError([patience_problem(tr.early_stopping_patience, planned)])
    every = tr.eval_steps or tr.save_steps or steps_per_epoch
    scorer = ValidationScorer(
        tokenizer, data.validation, data.label_names, cfg.long_doc, tr.eval_batch_size, tr.precision
    )
    logger.info("validation: %d documents scored every %d steps (best by %s)", len(scorer), every, tr.best_metric)
    return scorer, every


def _provenance(cfg: Config) -> dict:
    return {"data_sha256": runs.data_hashes(cfg), "git_commit": runs.git_commit()}


def _write_curves(trainer, cfg: Config, run_dir: Path) -> dict:
    """Learning curves (training/learning_curves.json and .png) and how the model was chosen."""
    from govtopic.plots import plot_learning_curves
    from govtopic.validation import learning_curves

    state = trainer.state
    curves = learning_curves(state.log_history)
    out = run_dir / "training"
    out.mkdir(parents=True, exist_ok=True)
    best = state.best_model_checkpoint
    # With train.best_tolerance the model may be a later checkpoint than the best value's: report its own.
    model_value = next(
        (e.get(cfg.train.best_metric) for e in curves["validation"] if e.get("step") == state.best_global_step),
        state.best_metric,
    )
    info = {
        "best_metric": cfg.train.best_metric if curves["validation"] else None,
        "best_value": model_value if curves["validation"] else None,
        "top_value": state.best_metric if curves["validation"] else None,
        "best_tolerance": cfg.train.best_tolerance,
        "best_checkpoint": Path(best).name if best else None,
        "best_step": state.best_global_step if curves["validation"] else None,
        "steps": state.global_step,
        "planned_steps": state.max_steps,
        "stopped_early": bool(curves["validation"]) and state.global_step < state.max_steps,
        "curves": curves,
    }
    (out / "learning_curves.json").write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if curves["loss"] or curves["validation"]:
        info["plot"] = str(plot_learning_curves(curves, cfg.train.best_metric, out / "learning_curves.png"))
    if info["best_checkpoint"]:
        near = info["top_value"] != info["best_value"]
        logger.info(
            "%s %.4f at step %s: the model is %s%s%s",
            cfg.train.best_metric,
            info["best_value"],
            info["best_step"],
            info["best_checkpoint"],
            f" (within train.best_tolerance {cfg.train.best_tolerance:g} of the best, {info['top_value']:.4f})"
            if near
            else " (the best)",
            f" (stopped early at step {state.global_step} of {state.max_steps})" if info["stopped_early"] else "",
        )
    return info


def _test_figures(run_dir: Path) -> dict[str, float]:
    from govtopic.validation import scalar_metrics

    path = run_dir / "eval" / "metrics.json"
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text(encoding="utf-8")).get("metrics") or {}
    return {f"test_{k}": v for k, v in scalar_metrics(metrics).items()}


def fit_ngram_channel(folder: Path, data: LabelledData, cfg: Config) -> tuple[dict, np.ndarray | None]:
    """Fit the n-gram channel (first-level and full-label blocks) on the training split, choose the weights of
    its two blocks on the validation split (``govtopic.ngram.choose_weights``), and keep both in
    ``folder``. Returns what was chosen, for the run's report, and the validation documents' logits with the
    channel mixed in (None without a validation split), so that calibration need not run the model over the
    validation split again."""
    from govtopic.evaluation import update_record
    from govtopic.ngram import NgramChannel, choose_weights, mix
    from govtopic.predict import TopicClassifier
    from govtopic.titles import read_titles

    clf = TopicClassifier(folder)
    channel = NgramChannel(seed=cfg.train.seed).fit(
        data.train.texts,
        data.train.labels,
        read_titles(data.train.titles, cfg.long_doc, data.train.texts),
        classes=clf.labels,
    )
    channel.save(folder)
    if not len(data.validation):
        logger.warning("no validation split: the n-gram channel keeps weight 1.0 (full-label block 0) without a check")
        update_record(folder, ngram_weight=1.0, ngram_full_weight=0.0)
        return {"weight": 1.0, "full_weight": 0.0}, None
    val = data.validation
    logits, _ = clf.document_logits(val.texts, clf.long_doc, cfg.eval.batch_size, titles=val.titles, ngram=False)
    first, full = channel.parts(val.texts, read_titles(val.titles, clf.long_doc, val.texts), clf.labels)
    weight, full_weight, tried = choose_weights(logits, first, full, val.labels, clf.labels)
    update_record(folder, ngram_weight=weight, ngram_full_weight=full_weight)
    best = tried.get(f"{weight:g}/{full_weight:g}")
    logger.info(
        "n-gram channel weights %g (first level) and %g (full labels): validation [first-level, full-label "
        "accuracy, first-level, full-label macro-F1] %s (transformer alone: %s)",
        weight,
        full_weight,
        best,
        tried.get("0/0"),
    )
    chosen = {"weight": weight, "full_weight": full_weight, "validation_accuracy_by_weights": tried}
    return chosen, mix(logits, first, full, weight, full_weight, clf.labels)


def finish(
    model,
    tokenizer,
    cfg: Config,
    data: LabelledData,
    run_dir: Path,
    train_seconds: float,
    provenance: dict | None = None,
    training: dict | None = None,
) -> Path:
    """Write the model folder to a temporary place, calibrate and evaluate it there, then move it in place.
    ``training`` (learning curves and the chosen checkpoint) goes into the evaluation report."""
    from govtopic.evaluation import calibrate_folder, evaluate_split

    staging = run_dir / "model.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model = model.to("cpu") if default_device().type == "cpu" else model
    save_model_folder(model, tokenizer, cfg, staging, scheme=data.scheme, provenance=provenance)
    meta = {
        "final_model_dir": str(run_dir / "model"),
        "train_seconds": round(train_seconds, 1),
        "train_docs": len(data.train),
        "validation_docs": len(data.validation),
        "test_docs": len(data.test),
        "classes": len(data.label_names),
        "skipped_rows": data.skipped,
        "data_file": cfg.data.train_file,
    }
    meta.update({"version": __version__, **(provenance or {})})
    if training and training.get("best_checkpoint"):
        meta["selected"] = (
            f"{training['best_checkpoint']} (best validation {training['best_metric']} {training['best_value']:.4f}"
            f" at step {training['best_step']} of {training['steps']}"
            + (", stopped early)" if training.get("stopped_early") else ")")
        )
    validation_logits = None
    if cfg.model.ngram_channel:
        meta["ngram_channel"], validation_logits = fit_ngram_channel(staging, data, cfg)
    if cfg.eval.calibrate and len(data.validation) >= 2:
        meta["calibration"] = calibrate_folder(staging, data.validation, cfg, validation_logits)
    if cfg.train.evaluate_after and len(data.test):
        evaluate_split(
            staging,
            data.test,
            run_dir / "eval",
            cfg,
            train_split=data.train,
            meta=meta,
            model_card_dir=staging,
            training=training,
        )
    model_dir = run_dir / "model"
    replace_dir(staging, model_dir)
    logger.info("model folder written to %s", model_dir)
    return model_dir
