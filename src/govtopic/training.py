"""Fine-tuning with the transformers Trainer, from a validated Config to a complete model folder.

A run folder holds ``checkpoints/`` (for resuming), ``model/`` (the finished model, written atomically:
it only appears once it is complete) and ``eval/`` (the reports on the test split).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from govtopic import __version__
from govtopic.config import Config
from govtopic.data import LabelledData, load_labelled
from govtopic.fsutil import replace_dir
from govtopic.modeling import autocast_dtype, build_for_training, default_device, load_tokenizer
from govtopic.windows import encode

logger = logging.getLogger(__name__)

CONFIG_NAME = "govtopic_config.yaml"


def window_dataset(tokenizer, texts: list[str], labels: list[str], label2id: dict[str, int], cfg: Config):
    """A datasets.Dataset of training windows, each labelled with its document's label."""
    from datasets import Dataset

    windows = encode(tokenizer, texts, cfg.long_doc, max_windows=cfg.long_doc.train_max_windows)
    ids = windows.input_ids
    return Dataset.from_dict(
        {
            "input_ids": ids,
            "labels": [label2id[labels[d]] for d in windows.doc_index],
            "length": [len(x) for x in ids],
        }
    )


def training_arguments(cfg: Config, checkpoint_dir: Path):
    from transformers import TrainingArguments

    tr = cfg.train
    device = default_device()
    dtype = autocast_dtype(device, tr.precision)
    save_steps = tr.save_steps or None
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
        eval_strategy="no",
        label_smoothing_factor=tr.label_smoothing,
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


def save_model_folder(model, tokenizer, cfg: Config, folder: Path, temperature: float = 1.0) -> None:
    """Weights (safetensors), tokenizer, id2label and the govtopic settings the predictor needs."""
    model.config.govtopic = {
        "version": __version__,
        "long_doc": _asdict(cfg.long_doc),
        "normalize": _asdict(cfg.normalize),
        "temperature": temperature,
        "precision": cfg.train.precision,
        # govtopic predict puts the title before the body as in training when a table has this column.
        "title_column": cfg.data.title_column if cfg.data.prepend_title else None,
    }
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    cfg.save(folder / CONFIG_NAME)


def _asdict(obj) -> dict:
    import dataclasses

    return dataclasses.asdict(obj)


def train(cfg: Config) -> Path:
    """Train, calibrate, evaluate and save; returns the finished model folder."""
    from transformers import DataCollatorWithPadding, Trainer, set_seed

    started = time.time()
    set_seed(cfg.train.seed)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / CONFIG_NAME)
    data = load_labelled(cfg.data, cfg.normalize, cfg.train.seed)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.revision)
    model = build_for_training(cfg.model, data.label_names, cfg.long_doc.max_length)
    # The Trainer would otherwise pass num_items_in_batch and skip its own averaging over accumulation
    # steps and processes, which this loss does not do: gradients would grow with both.
    model.accepts_loss_kwargs = False
    label2id = model.config.label2id
    train_set = window_dataset(tokenizer, data.train.texts, data.train.labels, label2id, cfg)
    logger.info("%d training windows from %d documents (%s)", len(train_set), len(data.train), cfg.long_doc.strategy)
    checkpoint_dir = run_dir / "checkpoints"
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, checkpoint_dir),
        train_dataset=train_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
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
    if not trainer.is_world_process_zero():
        return run_dir / "model"
    model_dir = finish(trainer.model, tokenizer, cfg, data, run_dir, time.time() - started)
    return model_dir


def finish(model, tokenizer, cfg: Config, data: LabelledData, run_dir: Path, train_seconds: float) -> Path:
    """Write the model folder to a temporary place, calibrate and evaluate it there, then move it in place."""
    from govtopic.evaluation import calibrate_folder, evaluate_split

    staging = run_dir / "model.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model = model.to("cpu") if default_device().type == "cpu" else model
    save_model_folder(model, tokenizer, cfg, staging)
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
    if cfg.eval.calibrate and len(data.validation) >= 2:
        meta["calibration"] = calibrate_folder(staging, data.validation, cfg)
    if cfg.train.evaluate_after and len(data.test):
        evaluate_split(
            staging, data.test, run_dir / "eval", cfg, train_split=data.train, meta=meta, model_card_dir=staging
        )
    model_dir = run_dir / "model"
    replace_dir(staging, model_dir)
    logger.info("model folder written to %s", model_dir)
    return model_dir
