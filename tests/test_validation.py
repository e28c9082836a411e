"""Validation during training: the best checkpoint becomes the model, early stopping, learning curves,
reproducible runs, the record's provenance, and the config errors a user can make."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import synthetic_config, tiny_config
from govtopic import load_config, train
from govtopic.config import ConfigError
from govtopic.metrics import compute_metrics
from govtopic.schedule import METRICS
from govtopic.validation import learning_curves, scalar_metrics


def _curves(run_dir):
    return json.loads((run_dir / "training" / "learning_curves.json").read_text(encoding="utf-8"))


def test_every_selectable_metric_is_a_figure_compute_metrics_returns():
    labels = ["甲\\一", "甲\\二", "乙\\三"]
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    figures = scalar_metrics(compute_metrics(["甲\\一", "甲\\一", "乙\\三"], probs, labels))
    assert set(figures) == set(METRICS)
    assert figures["l1_accuracy"] == 1.0 and figures["accuracy"] == pytest.approx(2 / 3)


def test_learning_curves_split_the_log():
    log = [{"step": 2, "loss": 1.5}, {"step": 4, "epoch": 0.5, "eval_l1_macro_f1": 0.4}, {"step": 4, "loss": 1.1}]
    curves = learning_curves(log)
    assert curves["loss"] == [{"step": 2, "loss": 1.5}, {"step": 4, "loss": 1.1}]
    assert curves["validation"] == [{"step": 4, "epoch": 0.5, "l1_macro_f1": 0.4}]


def test_config_errors_are_reported_together(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        load_config(
            tiny_config(tmp_path),
            [
                "train.best_metric=l1_macro_f2",
                "train.eval_steps=2",
                "train.early_stopping_patience=3",
                "train.report_to=[mlflow]",
            ],
        )
    text = str(err.value)
    assert "train.best_metric: unknown validation metric 'l1_macro_f2'; did you mean 'l1_macro_f1'?" in text
    # max_steps 6, an evaluation every 2 steps: 3 evaluations, so a patience of 3 could never stop the run.
    assert "train.early_stopping_patience: 3 evaluations without improvement can never stop a run that" in text
    assert "evaluates 3 time(s)" in text
    assert "train.report_to[0]: 'mlflow' needs the mlflow package" in text and "pip install mlflow-skinny" in text


def test_patience_without_validation_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="train.early_stopping_patience: needs validation during training"):
        load_config(tiny_config(tmp_path), ["train.validate=false", "train.early_stopping_patience=1"])


def _train_evaluating_every_3_steps(tmp_path, best_tolerance: float):
    """A 9-step tiny run evaluated at steps 3, 6 and 9: (model folder, run folder, its training curves)."""
    overrides = ["train.max_steps=9", "train.eval_steps=3", f"train.best_tolerance={best_tolerance}"]
    model_dir = train(load_config(tiny_config(tmp_path), overrides))
    run = tmp_path / "run"
    return model_dir, run, _curves(run)


def _assert_model_is_checkpoint(model_dir, run, step: int) -> None:
    """The model folder's weights are exactly those of the run's checkpoint at ``step``."""
    saved = load_file(run / "checkpoints" / f"checkpoint-{step}" / "model.safetensors")
    final = load_file(model_dir / "model.safetensors")
    for name, value in saved.items():
        np.testing.assert_array_equal(final[name], value)


@pytest.mark.slow
def test_best_checkpoint_becomes_the_model_and_the_report_shows_the_curves(tmp_path):
    # A very high learning rate makes later evaluations worse than the early ones on this small run.
    # train.best_tolerance=0: the strict best (the default, 0.01, is tested below).
    model_dir, run, info = _train_evaluating_every_3_steps(tmp_path, best_tolerance=0)
    validation = info["curves"]["validation"]
    assert [v["step"] for v in validation] == [3, 6, 9]
    values = [v["l1_macro_f1"] for v in validation]
    best_step = validation[int(np.argmax(values))]["step"]  # the first of equal values, as the Trainer keeps
    assert info["best_step"] == best_step and info["best_checkpoint"] == f"checkpoint-{best_step}"
    assert info["best_value"] == pytest.approx(max(values))
    _assert_model_is_checkpoint(model_dir, run, best_step)
    assert (run / "training" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    report = (run / "eval" / "report.md").read_text(encoding="utf-8")
    assert "## Training" in report and "| step | epoch | training loss | validation l1_accuracy" in report
    assert "learning_curves.png" in report
    assert "Learning curves" in (run / "eval" / "report.html").read_text(encoding="utf-8")


def test_a_later_checkpoint_within_the_tolerance_wins_a_near_tie():
    from govtopic.schedule import chosen

    assert not chosen(0.851, 0.857, greater_is_better=True)  # strict best: the earlier one stays the model
    assert chosen(0.851, 0.857, greater_is_better=True, tolerance=0.01)
    assert not chosen(0.840, 0.857, greater_is_better=True, tolerance=0.01)
    assert chosen(0.31, 0.30, greater_is_better=False, tolerance=0.02)  # e.g. ece: lower is better
    assert chosen(0.2, None, greater_is_better=True)  # the first evaluation


def test_a_tolerance_outside_zero_to_one_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"train.best_tolerance: must be from 0 \(the best checkpoint\)"):
        load_config(tiny_config(tmp_path), ["train.best_tolerance=-0.01"])


@pytest.mark.slow
def test_with_a_tolerance_the_latest_near_best_checkpoint_is_the_model(tmp_path):
    # Every figure lies within 0.99 of the best, so each evaluation is chosen in turn and the last checkpoint is
    # the model, the best value reported beside its own.
    model_dir, run, info = _train_evaluating_every_3_steps(tmp_path, best_tolerance=0.99)
    values = [v["l1_macro_f1"] for v in info["curves"]["validation"]]
    assert info["best_step"] == 9 and info["best_checkpoint"] == "checkpoint-9"
    assert info["best_value"] == pytest.approx(values[-1]) and info["top_value"] == pytest.approx(max(values))
    _assert_model_is_checkpoint(model_dir, run, 9)
    report = (run / "eval" / "report.md").read_text(encoding="utf-8")
    if values[-1] < max(values):
        assert "within 0.99 (train.best_tolerance) of the best" in report


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_figures_and_the_record_keeps_provenance(tmp_path):
    from govtopic import runs

    figures = []
    for name in ("a", "b"):
        cfg = load_config(tiny_config(tmp_path), [f"output_dir={tmp_path / name}", "train.eval_steps=3"])
        train(cfg)
        metrics = json.loads((tmp_path / name / "eval" / "metrics.json").read_text(encoding="utf-8"))["metrics"]
        figures.append((scalar_metrics(metrics), _curves(tmp_path / name)["curves"]["validation"]))
    assert figures[0] == figures[1]
    record = json.loads((tmp_path / "a" / "model" / "config.json").read_text(encoding="utf-8"))["govtopic"]
    assert record["version"]
    assert record["data_sha256"] == runs.data_hashes(cfg) and len(record["data_sha256"]["data.train_file"]) == 64
    assert record["git_commit"] == runs.git_commit()
    assert runs.git_commit(tmp_path) is None  # not a git checkout


@pytest.mark.slow
def test_early_stopping_ends_a_run_that_stopped_improving(tmp_path):
    # Three easy topics: validation accuracy reaches 1.0 within a few evaluations and cannot improve after it.
    config = synthetic_config(tmp_path, eval_steps=6, early_stopping_patience=2, best_metric="l1_accuracy")
    cfg = load_config(config, ["model.pooling=mean", "eval.calibrate=false"])
    train(cfg)
    info = _curves(tmp_path / "run")
    assert info["stopped_early"] and info["steps"] < info["planned_steps"]
    values = [v["l1_accuracy"] for v in info["curves"]["validation"]]
    # It stopped after two evaluations no better than the best; the model is the latest checkpoint within the
    # default tolerance (0.01) of the best.
    assert max(values[:-2]) >= max(values[-2:]) and info["top_value"] == pytest.approx(max(values))
    chosen = [v for v in info["curves"]["validation"] if v["l1_accuracy"] >= max(values) - 0.01][-1]
    assert info["best_step"] == chosen["step"] and info["best_value"] == pytest.approx(chosen["l1_accuracy"])
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text(encoding="utf-8"))["metrics"]
    assert metrics["l1_accuracy"] >= 0.9


def test_balanced_class_weights_and_sampling():
    from govtopic.losses import balanced_sample_weights, balanced_weights

    # Three rows of class 0, one of class 1 and one first-level-only row (its level's classes 0 and 2).
    keys = [(0,), (0,), (0,), (1,), (0, 2)]
    weights = balanced_weights(keys)
    assert weights[0] == pytest.approx(5 / 9) and weights[3] == pytest.approx(5 / 3) and weights[4] == weights[3]
    assert sum(weights) == pytest.approx(len(keys))  # mean 1: the loss keeps its scale
    sample = balanced_sample_weights(keys)
    assert sum(w for k, w in zip(keys, sample) if k == (0,)) == pytest.approx(
        sum(w for k, w in zip(keys, sample) if k == (1,))
    )


def test_training_draws_depend_on_the_seed_and_epoch_alone():
    """A resumed run draws the batches of its epoch again in a fresh process: the draws of the balanced
    sampler and of length grouping may not depend on what else used torch's generator before."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from govtopic.validation import EpochSeeded

    def draws(sampler, epoch, noise):
        torch.manual_seed(noise)  # another state of the global generator (dropout, model init, ...)
        torch.rand(noise)
        sampler.set_epoch(epoch)
        return list(sampler)

    for make in (
        lambda: torch.utils.data.WeightedRandomSampler([1.0, 3.0, 1.0, 3.0, 2.0] * 8, 40, replacement=True),
        lambda: LengthGroupedSampler(4, lengths=[(i * 7) % 13 + 1 for i in range(40)]),
    ):
        sampler = EpochSeeded(make(), seed=42)
        assert draws(sampler, 2, 1) == draws(sampler, 2, 5) == draws(EpochSeeded(make(), seed=42), 2, 9)
        assert draws(sampler, 2, 1) != draws(sampler, 3, 1)  # each epoch its own order
        assert draws(sampler, 2, 1) != draws(EpochSeeded(make(), seed=7), 2, 1)
        assert len(sampler) == 40
