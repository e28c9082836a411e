"""Hyper-parameter search with Optuna (``govtopic tune CONFIG --trials N [--timeout S]``).

Each trial trains the config with a learning rate, a length of training (epochs, or max_steps when the config
sets it), a window length and a warmup chosen by Optuna, and is scored by its best validation
``train.best_metric``: the test split is never read. The best trial's settings are written as a full config
(``best.yaml``) that ``govtopic train`` takes as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import yaml

from govtopic.config import Config, ConfigError, from_dict, load_config
from govtopic.fsutil import atomic_write_text, check_claimable, claim_folder, write_output_text

logger = logging.getLogger(__name__)

# The highest learning rate a trial tries (configs allow rates below 1).
MAX_LEARNING_RATE = 0.5
LOCK_FILE = ".tune.lock"


def search_space(trial, base: Config) -> dict[str, object]:
    """Dotted settings for one trial, around the base config's values.

    Learning rate: log-uniform from a fifth to five times the base. Training length: 1 to twice the base
    epochs (or half to twice ``max_steps`` when set). Window length: half, the same or twice the base
    ``long_doc.max_length`` (32 to 512 tokens). Warmup: 0 to 0.2 of the steps.
    """
    tr, ld = base.train, base.long_doc
    values: dict[str, object] = {
        # A rate of 1 or more is not a valid config (nor a useful rate): the range stops below it.
        "train.learning_rate": trial.suggest_float(
            "learning_rate", tr.learning_rate / 5, min(tr.learning_rate * 5, MAX_LEARNING_RATE), log=True
        ),
        "train.warmup_ratio": trial.suggest_float("warmup_ratio", 0.0, 0.2),
    }
    if tr.max_steps is not None:
        values["train.max_steps"] = trial.suggest_int("max_steps", max(1, tr.max_steps // 2), tr.max_steps * 2)
    else:
        values["train.epochs"] = float(trial.suggest_int("epochs", 1, max(2, math.ceil(tr.epochs * 2))))
    length = trial.suggest_categorical("max_length", window_lengths(base))
    values["long_doc.max_length"] = length
    values["long_doc.stride"] = min(ld.stride, length // 4)
    return values


def window_lengths(base: Config) -> list[int]:
    """The window lengths trials choose from: half, the same and twice the base (32 to 512 tokens), each one a
    valid config with the base's other settings (e.g. ``long_doc.head_tokens`` must fit in the window)."""
    from govtopic.config import check_long_doc

    ld = base.long_doc
    valid = []
    for n in sorted({min(512, max(32, n)) for n in (ld.max_length // 2, ld.max_length, ld.max_length * 2)}):
        problems: list[str] = []
        check_long_doc(dataclasses.replace(ld, max_length=n, stride=min(ld.stride, n // 4)), "", problems)
        if not problems:
            valid.append(n)
    return valid or [ld.max_length]


def _with(values: dict, dotted: dict[str, object]) -> dict:
    out = json.loads(json.dumps(values))
    for key, value in dotted.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def tune(
    config: str | Path,
    overrides: list[str] | None = None,
    trials: int = 10,
    timeout: float | None = None,
    output: str | Path | None = None,
) -> dict:
    """Search hyper-parameters on the validation split and write the best full config as YAML.

    Args:
        config: the YAML config to start from.
        overrides: dotted overrides applied first (``train.batch_size=8``).
        trials: how many trials to run.
        timeout: no new trial starts after this many seconds.
        output: where the best config goes (default: ``OUTPUT_DIR-tune/best.yaml``; trials train in
            ``OUTPUT_DIR-tune/trial-N``).

    Returns:
        {"metric", "value", "params", "config" (path of best.yaml), "trials", "failed"}. Trials that cannot train
        (e.g. a learning rate at which the loss is not a number) are recorded as failed in ``trials.json``, with
        their reason, and the search goes on; none finished is an error naming the reasons. Interrupted (Ctrl-C),
        the search writes ``trials.json`` and the best config of the trials it finished.

    Example:
        >>> tune("configs/quickstart.yaml", trials=8)["config"]
        PosixPath('runs/quickstart-tune/best.yaml')
    """
    try:
        import optuna
    except ImportError as err:
        raise ConfigError(["govtopic tune needs optuna, which is not installed; run `pip install optuna`"]) from err
    if trials < 1:
        raise ConfigError([f"--trials: must be at least 1, got {trials}"])
    if timeout is not None and not timeout > 0:
        raise ConfigError([f"--timeout: must be a number of seconds above 0, got {timeout}"])
    base = load_config(config, overrides)
    if not base.train.validate:
        raise ConfigError(["train.validate: govtopic tune scores trials on the validation split; set it to true"])
    values = base.to_dict()
    tune_dir = Path(f"{str(base.output_dir).rstrip('/')}-tune")
    metric = base.train.best_metric
    # Before any trial: the best config and the tuning folder never replace files govtopic did not write.
    best_path = Path(output) if output else tune_dir / "best.yaml"
    check_claimable(best_path, "best config", "--output")
    claim_folder(tune_dir, "tuning run", "output_dir")

    with _locked(tune_dir):
        study = _run_trials(optuna, base, values, tune_dir, trials, timeout, best_path)
    return _write_results(study, values, metric, tune_dir, best_path)


@contextlib.contextmanager
def _locked(tune_dir: Path):
    """One ``govtopic tune`` at a time in a tuning folder: a second one would train into the first one's trials."""
    import fcntl

    with open(tune_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise ConfigError(
                [
                    f"output_dir: another govtopic tune is running in {tune_dir}; wait for it, or tune into another "
                    "output_dir (e.g. output_dir=runs/other)"
                ]
            ) from err
        yield


def _run_trials(
    optuna, base: Config, values: dict, tune_dir: Path, trials: int, timeout: float | None, best_path: Path
):
    """The study: each trial trains in ``trial-N`` and is scored on validation. A trial whose settings are not
    a valid config or whose training fails is recorded as failed, with its reason, and the search goes on;
    ``trials.json`` is rewritten after every trial, so an interrupted search keeps what it found."""
    from govtopic.schedule import METRICS
    from govtopic.training import train

    metric = base.train.best_metric

    def objective(trial) -> float:
        dotted = search_space(trial, base)
        trial.set_user_attr("settings", dotted)
        trial_cfg = _with(values, dotted)
        trial_cfg["output_dir"] = str(tune_dir / f"trial-{trial.number}")
        trial_cfg["train"].update({"evaluate_after": False, "overwrite": True, "report_to": []})
        trial_cfg["eval"]["calibrate"] = False
        try:
            train(from_dict(trial_cfg, f"trial {trial.number}"))
        except (ConfigError, ValueError, FloatingPointError, RuntimeError) as err:
            trial.set_user_attr("error", str(err)[:500])
            logger.warning("trial %d failed with %s: %s", trial.number, dotted, err)
            raise TrialFailed(str(err)) from err
        info = json.loads((tune_dir / f"trial-{trial.number}" / "training" / "learning_curves.json").read_text())
        if info.get("best_value") is None:
            raise ConfigError(["data: govtopic tune needs validation rows; set data.validation_from_train above 0"])
        # Checkpoints are for resuming a trial, which tune never does: most of a trial's disk space.
        shutil.rmtree(tune_dir / f"trial-{trial.number}" / "checkpoints", ignore_errors=True)
        logger.info("trial %d: %s %.4f with %s", trial.number, metric, info["best_value"], dotted)
        return float(info["best_value"])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=base.train.seed)
    study = optuna.create_study(direction="maximize" if METRICS[metric] else "minimize", sampler=sampler)
    try:
        study.optimize(
            objective,
            n_trials=trials,
            timeout=timeout,
            catch=(TrialFailed,),
            callbacks=[lambda study, trial: _write_trials(study, tune_dir)],
        )
    except KeyboardInterrupt:
        _write_trials(study, tune_dir)  # the interrupted trial ran no callback
        if any(t.state.name == "COMPLETE" for t in study.trials):
            _write_results(study, values, metric, tune_dir, best_path)
        raise
    return study


class TrialFailed(Exception):
    """A trial that could not train (its reason is kept in trials.json); the search goes on."""


def _write_trials(study, tune_dir: Path) -> None:
    summary = [
        {
            "number": t.number,
            "value": t.value,
            "settings": t.user_attrs.get("settings"),
            "state": t.state.name,
            **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {}),
        }
        for t in study.trials
    ]
    atomic_write_text(tune_dir / "trials.json", json.dumps(summary, ensure_ascii=False, indent=1) + "\n")


def _write_results(study, values: dict, metric: str, tune_dir: Path, best_path: Path) -> dict:
    """best.yaml of the best complete trial (trials.json is written after every trial); an error naming the
    failures when none completed."""
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not done:
        reasons = sorted({t.user_attrs.get("error", t.state.name) for t in study.trials})
        raise ConfigError(
            [f"no trial finished ({len(study.trials)} tried; see {tune_dir / 'trials.json'}): " + "; ".join(reasons)]
        )
    best = study.best_trial
    best_values = _with(values, best.user_attrs["settings"])
    best_values["train"]["overwrite"] = False
    path = best_path
    from_dict(best_values, str(path))  # the written config is a valid one
    header = f"# govtopic tune: best validation {metric} {best.value:.4f} of {len(study.trials)} trial(s)\n"
    text = header + yaml.safe_dump(best_values, allow_unicode=True, sort_keys=False)
    write_output_text(path, text, "best config", "--output")
    logger.info("best config written to %s", path)
    return {
        "metric": metric,
        "value": best.value,
        "params": best.user_attrs["settings"],
        "config": path,
        "trials": len(study.trials),
        "failed": len(study.trials) - len(done),
    }
