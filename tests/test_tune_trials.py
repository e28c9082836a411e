"""`govtopic tune` keeps going when a trial cannot train, keeps what it found when interrupted, draws only
valid trial configs, and runs one search per folder at a time."""

from __future__ import annotations

import fcntl
import json

import pytest

from conftest import synthetic_config
from govtopic import load_config
from govtopic.config import ConfigError

optuna = pytest.importorskip("optuna")


def test_trial_settings_are_valid_configs(tmp_path):
    from govtopic.tune import MAX_LEARNING_RATE, search_space, window_lengths

    config = synthetic_config(tmp_path, n=30)
    # head_tail keeps 50 head tokens: a 32-token window cannot hold them, so it is never tried.
    base = load_config(config, ["long_doc.strategy=head_tail", "long_doc.head_tokens=50", "long_doc.max_length=64"])
    assert window_lengths(base) == [64, 128]
    high = load_config(config, ["train.learning_rate=0.4"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rates = [search_space(study.ask(), high)["train.learning_rate"] for _ in range(200)]
    assert max(rates) <= MAX_LEARNING_RATE and min(rates) >= 0.4 / 5


def test_a_second_search_in_the_same_folder_is_refused(tmp_path):
    from govtopic.tune import LOCK_FILE, tune

    config = synthetic_config(tmp_path, n=30)
    from govtopic.fsutil import claim_folder

    folder = claim_folder(tmp_path / "run-tune", "tuning run", "output_dir")  # as the first search made it
    with open(folder / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a search running in this folder
        with pytest.raises(ConfigError, match="another govtopic tune is running in"):
            tune(config, trials=1)
    with pytest.raises(ConfigError, match="--timeout: must be a number of seconds above 0"):
        tune(config, trials=1, timeout=-5)


@pytest.mark.slow
def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    import govtopic.training
    from govtopic.tune import tune

    real = govtopic.training.train

    def train(cfg):  # the second trial cannot train, as a GPU out of memory at a long window would not
        if cfg.output_dir.endswith("trial-1"):
            raise RuntimeError("CUDA out of memory")
        return real(cfg)

    monkeypatch.setattr(govtopic.training, "train", train)
    config = synthetic_config(tmp_path, n=150, epochs=1, eval_steps=4)
    result = tune(config, trials=3)
    assert result["trials"] == 3 and result["failed"] == 1
    trials = json.loads((tmp_path / "run-tune" / "trials.json").read_text(encoding="utf-8"))
    assert [t["state"] for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1]["error"] == "CUDA out of memory"
    assert load_config(result["config"]).output_dir == str(tmp_path / "run")
    assert not (tmp_path / "run-tune" / "trial-0" / "checkpoints").exists()  # a trial keeps its model, not these


@pytest.mark.slow
def test_an_interrupted_search_keeps_the_trials_it_finished(tmp_path, monkeypatch):
    import govtopic.training
    from govtopic.tune import tune

    real = govtopic.training.train

    def train(cfg):  # Ctrl-C during the third trial
        if cfg.output_dir.endswith("trial-2"):
            raise KeyboardInterrupt
        return real(cfg)

    monkeypatch.setattr(govtopic.training, "train", train)
    config = synthetic_config(tmp_path, n=150, epochs=1, eval_steps=4)
    with pytest.raises(KeyboardInterrupt):
        tune(config, trials=5)
    trials = json.loads((tmp_path / "run-tune" / "trials.json").read_text(encoding="utf-8"))
    assert [t["state"] for t in trials[:2]] == ["COMPLETE", "COMPLETE"]
    best = load_config(tmp_path / "run-tune" / "best.yaml")
    winner = max(trials[:2], key=lambda t: t["value"])
    assert best.train.learning_rate == pytest.approx(winner["settings"]["train.learning_rate"])
