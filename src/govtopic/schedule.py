"""When validation runs during training and what it selects on: the metric names a run can be selected by,
how many evaluations a run makes, which checkpoint becomes the model (``chosen``), and the config checks for
``train.best_metric``, ``train.best_tolerance``, ``train.eval_steps`` and ``train.early_stopping_patience``.
Plain rules with no model code, so that config checking and training read them from one place
(``govtopic.validation`` does the scoring).

Example:
    >>> problems = []; check_validation(cfg, problems)  # appends "train.best_metric: unknown ..." etc.
"""

from __future__ import annotations

import math

# Validation figures a run can be selected on, and whether larger is better. Each is a number that
# govtopic.metrics.compute_metrics returns (first-level ones also under its "l1" part).
METRICS: dict[str, bool] = {
    "l1_accuracy": True,
    "l1_macro_f1": True,
    "l1_micro_f1": True,
    "l1_weighted_f1": True,
    "accuracy": True,
    "macro_f1": True,
    "micro_f1": True,
    "weighted_f1": True,
    "ece": False,
    "level_disagreement": False,
}


def check_validation(cfg, problems: list[str]) -> None:
    """Config checks for validation and early stopping, appended to ``problems`` (config.py's style)."""
    import difflib

    tr = cfg.train
    if tr.best_metric not in METRICS:
        hint = difflib.get_close_matches(str(tr.best_metric), list(METRICS), n=1)
        extra = f"did you mean {hint[0]!r}? " if hint else ""
        problems.append(
            f"train.best_metric: unknown validation metric {tr.best_metric!r}; {extra}expected one of "
            + ", ".join(METRICS)
        )
    if tr.eval_steps < 0:
        problems.append(f"train.eval_steps: must be 0 (once per epoch) or more, got {tr.eval_steps}")
    if not 0 <= tr.best_tolerance < 1:
        problems.append(
            f"train.best_tolerance: must be from 0 (the best checkpoint) to below 1, got {tr.best_tolerance}; "
            "it is a difference in train.best_metric, e.g. 0.01"
        )
    patience = tr.early_stopping_patience
    if patience is None:
        return
    if patience < 1:
        problems.append(f"train.early_stopping_patience: must be at least 1 (or null for off), got {patience}")
    elif not tr.validate:
        problems.append(
            "train.early_stopping_patience: needs validation during training; set train.validate=true or "
            "train.early_stopping_patience=null"
        )
    else:
        planned = planned_evaluations(cfg)
        if planned is not None and patience >= planned:
            problems.append(patience_problem(patience, planned))


def planned_evaluations(cfg, steps_per_epoch: int | None = None) -> int | None:
    """How many evaluations a run makes (None when that depends on the data and ``steps_per_epoch`` is not
    given)."""
    tr = cfg.train
    every = tr.eval_steps or tr.save_steps
    if tr.max_steps is not None:
        if every:
            return math.ceil(tr.max_steps / every)
        if steps_per_epoch is None:
            return None
        return max(1, math.ceil(tr.max_steps / steps_per_epoch))
    if not every:
        return math.ceil(tr.epochs)
    if steps_per_epoch is None:
        return None
    return math.ceil(math.ceil(tr.epochs * steps_per_epoch) / every)


def patience_problem(patience: int, planned: int) -> str:
    return (
        f"train.early_stopping_patience: {patience} evaluations without improvement can never stop a run that "
        f"evaluates {planned} time(s); "
        + (f"lower it below {planned}, " if planned > 1 else "")
        + "evaluate more often (train.eval_steps), train for more epochs, or set it to null (no early stopping)"
    )


def chosen(value: float, best: float | None, greater_is_better: bool, tolerance: float = 0.0) -> bool:
    """Whether a checkpoint scoring ``value`` becomes the model, ``best`` being the best value before it: a
    better value always, and with a ``tolerance`` (``train.best_tolerance``) one within it of the best, so the
    later checkpoint wins a near tie.

    Example:
        >>> chosen(0.851, 0.857, True), chosen(0.851, 0.857, True, tolerance=0.01)
        (False, True)
    """
    if best is None:
        return True
    if greater_is_better:
        return value > best or (tolerance > 0 and value >= best - tolerance)
    return value < best or (tolerance > 0 and value <= best + tolerance)
