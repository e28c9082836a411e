"""Scoring the validation split during training, the way a finished model is scored.

At every evaluation the live model reads each validation document as ``TopicClassifier`` does: the same
windows and title rule (``govtopic.titles.encode_documents``), window logits pooled per document
(``govtopic.titles.pool``), then ``govtopic.metrics.compute_metrics`` at both taxonomy levels. The Trainer
keeps the checkpoint with the best ``train.best_metric`` and stops early after
``train.early_stopping_patience`` evaluations without a better one.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from govtopic.schedule import METRICS, chosen

logger = logging.getLogger(__name__)


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The figures of ``compute_metrics`` that METRICS names (those that are not None), as plain floats."""
    l1 = metrics.get("l1") or {}
    values = {
        **{k: metrics.get(k) for k in METRICS if not k.startswith("l1_")},
        "l1_accuracy": metrics.get("l1_accuracy"),
        "l1_macro_f1": metrics.get("l1_macro_f1"),
        "l1_micro_f1": l1.get("micro_f1"),
        "l1_weighted_f1": l1.get("weighted_f1"),
    }
    return {k: float(v) for k, v in values.items() if v is not None}


class ValidationScorer:
    """Document-level validation figures of a live model; the documents are tokenized once.

    Args:
        tokenizer: the model's tokenizer.
        split: the validation ``govtopic.data.Split``.
        labels: the model's label names in output order.
        long_doc: the run's ``LongDocConfig`` (prediction windows: ``max_windows``, not ``train_max_windows``).
        batch_size: windows per forward pass.
        precision: the run's ``train.precision`` (half precision on GPUs, as prediction uses it).

    Example:
        >>> scorer = ValidationScorer(tokenizer, data.validation, data.label_names, cfg.long_doc, 64)
        >>> scorer(model)["l1_macro_f1"]
        0.81
    """

    def __init__(self, tokenizer, split, labels: list[str], long_doc, batch_size: int, precision: str = "auto"):
        from govtopic.titles import encode_documents

        self.split, self.labels, self.long_doc, self.batch_size = split, list(labels), long_doc, batch_size
        self.precision = precision
        self.pad = tokenizer.pad_token_id or 0
        self.windows, self.is_title = encode_documents(tokenizer, split.texts, split.titles, long_doc)
        counts = np.bincount(self.windows.doc_index, minlength=len(split))
        self.bounds = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return len(self.split)

    def window_logits(self, model) -> np.ndarray:
        """Logits of every window, batched as prediction batches them (``govtopic.forward.batched_logits``)
        with the run's precision; the live model's own forward (it is training)."""
        from govtopic.forward import batched_logits
        from govtopic.modeling import autocast_dtype

        dtype = autocast_dtype(next(model.parameters()).device, self.precision)
        return batched_logits(model, self.windows.input_ids, len(self.labels), self.batch_size, self.pad, dtype)

    def document_logits(self, model) -> np.ndarray:
        from govtopic.titles import pool

        was_training = model.training
        model.eval()
        try:
            logits = self.window_logits(model)
        finally:
            model.train(was_training)
        pooled = np.zeros((len(self.split), len(self.labels)), dtype=np.float32)
        for d in range(len(self.split)):
            rows = slice(self.bounds[d], self.bounds[d + 1])
            pooled[d] = pool(logits[rows], self.is_title[rows], self.long_doc)
        return pooled

    def __call__(self, model) -> dict[str, float]:
        from govtopic.calibration import softmax
        from govtopic.metrics import compute_metrics

        probs = softmax(self.document_logits(model))
        return scalar_metrics(compute_metrics(self.split.labels, probs, self.labels, top_k=(1,)))


class EpochSeeded(torch.utils.data.Sampler):
    """A sampler whose draws depend on the seed and the epoch alone, so that a run resumed mid-epoch reads the
    same batches as the run it continues.

    transformers' length-grouped sampler draws from torch's global generator when it has none, and the Trainer
    starts the resumed epoch's draw before it restores the checkpoint's generator state: the resumed run read
    other batches from there on, and ended with other weights than the same run uninterrupted. A generator of
    the sampler's own, seeded with ``seed + epoch`` at each epoch (the Trainer calls ``set_epoch``), gives the
    same order both ways, as accelerate's seedable random sampler does for plain random order.

    Args:
        sampler: a sampler with a ``generator`` attribute it draws from (``LengthGroupedSampler``,
            ``WeightedRandomSampler``).
        seed: the run's data seed.

    Example:
        >>> sampler = EpochSeeded(torch.utils.data.WeightedRandomSampler([1.0, 2.0], 2), seed=42)
        >>> sampler.set_epoch(3)
        >>> list(sampler) == list(sampler)
        True
    """

    def __init__(self, sampler, seed: int):
        self.sampler, self.seed, self.epoch = sampler, seed, 0
        self.sampler.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.sampler.generator.manual_seed(self.seed + self.epoch)
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def make_trainer_class():
    """A transformers Trainer whose ``evaluate`` is the document-level ValidationScorer and whose training
    sampler can draw classes evenly (``sample_weights``). Built lazily: importing transformers is slow."""
    from transformers import Trainer

    class GovtopicTrainer(Trainer):
        def __init__(
            self, *args, scorer: ValidationScorer | None = None, sample_weights=None, best_tolerance=0.0, **kwargs
        ):
            super().__init__(*args, **kwargs)
            self.scorer = scorer
            self.sample_weights = sample_weights
            self.best_tolerance = best_tolerance
            if best_tolerance and not callable(getattr(Trainer, "_determine_best_metric", None)):
                # The hook below is where this transformers release picks the best checkpoint; without it the
                # tolerance would be ignored in silence.
                raise RuntimeError(
                    "train.best_tolerance needs the transformers 5.x Trainer this govtopic release was built on; "
                    "set train.best_tolerance=0 or install a transformers version that pyproject.toml allows"
                )

        def _determine_best_metric(self, metrics, trial) -> bool:
            # state.best_metric stays the best value; state.best_global_step (the checkpoint loaded at the end)
            # moves to a later checkpoint within train.best_tolerance of it (govtopic.schedule.chosen).
            best_before = self.state.best_metric
            if super()._determine_best_metric(metrics, trial):
                return True
            value = metrics[self.args.metric_for_best_model]
            if self.best_tolerance and chosen(value, best_before, self.args.greater_is_better, self.best_tolerance):
                self.state.best_global_step = self.state.global_step
                return True
            return False

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
            if self.scorer is None:
                return {}
            figures = self.scorer(self.model)
            best = self.args.metric_for_best_model
            if best and best.removeprefix("eval_") not in figures:
                raise ValueError(
                    f"train.best_metric: {best.removeprefix('eval_')!r} has no value on this validation split "
                    f"(it has only {', '.join(sorted(figures))}; full-label figures need full gold labels). Set "
                    "train.best_metric=l1_macro_f1."
                )
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in figures.items()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def _get_train_sampler(self, train_dataset=None):
            if self.sample_weights is None:
                sampler = super()._get_train_sampler(train_dataset)
            else:
                weights = torch.as_tensor(self.sample_weights, dtype=torch.double)
                sampler = torch.utils.data.WeightedRandomSampler(weights, len(weights), replacement=True)
            # Samplers that draw from a generator of their own (length grouping, balanced draws) get one seeded
            # per epoch; the others (random order: accelerate's seedable sampler) are seeded per epoch already.
            if sampler is not None and hasattr(sampler, "generator") and not hasattr(sampler, "set_epoch"):
                return EpochSeeded(sampler, self.args.data_seed if self.args.data_seed is not None else self.args.seed)
            return sampler

    return GovtopicTrainer


def learning_curves(log_history: list[dict]) -> dict[str, list[dict]]:
    """The Trainer's log as two series: training loss by step and the validation figures by evaluation.

    Example:
        >>> learning_curves([{"step": 2, "loss": 1.3}, {"step": 4, "eval_l1_macro_f1": 0.4, "epoch": 1.0}])
        {'loss': [{'step': 2, 'loss': 1.3}], 'validation': [{'step': 4, 'epoch': 1.0, 'l1_macro_f1': 0.4}]}
    """
    loss, validation = [], []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            loss.append({"step": entry["step"], "loss": entry["loss"]})
        figures = {k[5:]: v for k, v in entry.items() if k.startswith("eval_") and k[5:] in METRICS}
        if figures:
            validation.append({"step": entry.get("step"), "epoch": entry.get("epoch"), **figures})
    return {"loss": loss, "validation": validation}
