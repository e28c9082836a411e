"""The training loss for labels of either depth, with source weights.

A row labelled with a full label (``一级\\二级``) is trained as usual. A row labelled with a first level only
(a portal that publishes ``工业、交通`` alone) is trained through the summed probability of that level's
classes: its loss is ``-log Σ_{j ∈ level} p_j``, which moves probability into the level without favouring
any one child (no invented second level, no separate model). Each row's loss is multiplied by its source's
weight.

Rows are passed to the Trainer as an index into a table of targets (the allowed classes as a mask, and a
weight), so the dataset stays a plain ``labels`` column.
"""

from __future__ import annotations

import torch


class TargetTable:
    """Distinct (allowed classes, weight) pairs; a row's ``labels`` value is its index here.

    Example:
        >>> table = TargetTable(n_labels=3)
        >>> table.index([0], 1.0), table.index([1, 2], 1.0), table.index([0], 1.0)
        (0, 1, 0)
    """

    def __init__(self, n_labels: int):
        self.n_labels = n_labels
        self._index: dict[tuple, int] = {}
        self.masks: list[list[int]] = []
        self.weights: list[float] = []

    def index(self, allowed: list[int], weight: float = 1.0) -> int:
        key = (tuple(sorted(allowed)), float(weight))
        if key not in self._index:
            self._index[key] = len(self.masks)
            self.masks.append(list(key[0]))
            self.weights.append(float(weight))
        return self._index[key]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.zeros(len(self.masks), self.n_labels, dtype=torch.bool)
        for i, allowed in enumerate(self.masks):
            mask[i, allowed] = True
        return mask, torch.tensor(self.weights, dtype=torch.float32)


def set_loss(logits: torch.Tensor, mask: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-row ``-log Σ_{allowed} p``, with label smoothing ``smoothing`` spread over all classes."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    allowed = torch.logsumexp(log_p.masked_fill(~mask, float("-inf")), dim=-1)
    loss = -allowed
    if smoothing:
        loss = (1 - smoothing) * loss - smoothing * log_p.mean(dim=-1)
    return loss


class MixedDepthLoss:
    """``compute_loss_func`` for the Trainer: set loss per row, times the row's weight, summed and divided by
    the number of rows in the (accumulated, all-process) batch as the Trainer expects."""

    def __init__(self, table: TargetTable, smoothing: float = 0.0):
        self.mask, self.weights = table.tensors()
        self.smoothing = smoothing

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        idx = labels.to(self.mask.device)
        loss = set_loss(logits, self.mask[idx].to(logits.device), self.smoothing)
        loss = loss * self.weights[idx].to(logits.device)
        if num_items_in_batch is None:
            return loss.mean()
        return loss.sum() / num_items_in_batch


def balanced_weights(keys: list) -> list[float]:
    """Per-row weights inverse to the frequency of each row's class: ``n / (classes × rows of its class)``,
    so every class carries the same share of the loss and the mean weight is 1 (the loss keeps its scale).

    A key is whatever names a row's target: a class index for a full label, the tuple of its level's
    classes for a first-level-only row (which then gets its level's weight).

    Args:
        keys: one hashable target per row (document).

    Example:
        >>> balanced_weights([0, 0, 0, 1])
        [0.6666666666666666, 0.6666666666666666, 0.6666666666666666, 2.0]
    """
    from collections import Counter

    counts = Counter(keys)
    n, k = len(keys), len(counts)
    return [n / (k * counts[key]) for key in keys]


def balanced_sample_weights(keys: list) -> list[float]:
    """Sampling weights that draw every class (``keys``, one per training window) about equally often.

    Example:
        >>> balanced_sample_weights(["a", "a", "b"])
        [0.5, 0.5, 1.0]
    """
    from collections import Counter

    counts = Counter(keys)
    return [1.0 / counts[key] for key in keys]
