"""`govtopic tune`: a two-trial search on the synthetic data writes a full config `govtopic train` accepts."""

from __future__ import annotations

import json

import pytest

from conftest import synthetic_config
from govtopic import load_config
from govtopic.cli import main

pytestmark = pytest.mark.slow


def test_two_trials_write_a_best_config(tmp_path, capsys):
    pytest.importorskip("optuna")
    config = synthetic_config(tmp_path, n=150, epochs=1, eval_steps=4)
    assert main(["tune", str(config), "model.pooling=mean", "--trials", "2"]) == 0
    out = capsys.readouterr().out
    best = tmp_path / "run-tune" / "best.yaml"
    assert f"best config: {best}" in out
    cfg = load_config(best)  # a complete, valid config
    trials = json.loads((tmp_path / "run-tune" / "trials.json").read_text(encoding="utf-8"))
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials)
    winner = max(trials, key=lambda t: t["value"])
    assert cfg.train.learning_rate == pytest.approx(winner["settings"]["train.learning_rate"])
    assert cfg.long_doc.max_length == winner["settings"]["long_doc.max_length"]
    assert cfg.output_dir == str(tmp_path / "run") and cfg.model.pooling == "mean"
    # Trials never score the test split.
    assert not any((tmp_path / "run-tune" / f"trial-{i}" / "eval").exists() for i in range(2))
