"""Hyper-parameter search with Optuna (``govtopic tune CONFIG --trials N [--timeout S]``).

Each trial trains the config with a learning rate, a length of training (epochs, or max_steps when the config
sets it), a window length and a warmup chosen by Optuna, and is scored by its best validation
``train.best_metric``: the test split is never read. The best trial's settings are written as a full config
(``best.yaml``) that ``govtopic train`` takes as it is.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import yaml

from govtopic.config import Config, ConfigError, from_dict, load_config
from govtopic.fsutil import check_claimable, claim_folder, write_output_text

logger = logging.getLogger(__name__)


def search_space(trial, base: Config) -> dict[str, object]:
    """Dotted settings for one trial, around the base config's values.

    Learning rate: log-uniform from a fifth to five times the base. Training length: 1 to twice the base
    epochs (or half to twice ``max_steps`` when set). Window length: half, the same or twice the base
    ``long_doc.max_length`` (32 to 512 tokens). Warmup: 0 to 0.2 of the steps.
    """
    tr, ld = base.train, base.long_doc
    values: dict[str, object] = {
        "train.learning_rate": trial.suggest_float(
            "learning_rate", tr.learning_rate / 5, tr.learning_rate * 5, log=True
        ),
        "train.warmup_ratio": trial.suggest_float("warmup_ratio", 0.0, 0.2),
    }
    if tr.max_steps is not None:
        values["train.max_steps"] = trial.suggest_int("max_steps", max(1, tr.max_steps // 2), tr.max_steps * 2)
    else:
        values["train.epochs"] = float(trial.suggest_int("epochs", 1, max(2, math.ceil(tr.epochs * 2))))
    lengths = sorted({min(512, max(32, n)) for n in (ld.max_length // 2, ld.max_length, ld.max_length * 2)})
    length = trial.suggest_categorical("max_length", lengths)
    values["long_doc.max_length"] = length
    values["long_doc.stride"] = min(ld.stride, length // 4)
    return values


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
        {"metric", "value", "params", "config" (path of best.yaml), "trials"}.

    Example:
        >>> tune("configs/quickstart.yaml", trials=8)["config"]
        PosixPath('runs/quickstart-tune/best.yaml')
    """
    try:
        import optuna
    except ImportError as err:
        raise ConfigError(["govtopic tune needs optuna, which is not installed; run `pip install optuna`"]) from err
    from govtopic.schedule import METRICS
    from govtopic.training import train

    if trials < 1:
        raise ConfigError([f"--trials: must be at least 1, got {trials}"])
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

    def objective(trial) -> float:
        dotted = search_space(trial, base)
        trial_cfg = _with(values, dotted)
        trial_cfg["output_dir"] = str(tune_dir / f"trial-{trial.number}")
        trial_cfg["train"].update({"evaluate_after": False, "overwrite": True, "report_to": []})
        trial_cfg["eval"]["calibrate"] = False
        train(from_dict(trial_cfg, f"trial {trial.number}"))
        info = json.loads((tune_dir / f"trial-{trial.number}" / "training" / "learning_curves.json").read_text())
        if info.get("best_value") is None:
            raise ConfigError(["data: govtopic tune needs validation rows; set data.validation_from_train above 0"])
        trial.set_user_attr("settings", dotted)
        logger.info("trial %d: %s %.4f with %s", trial.number, metric, info["best_value"], dotted)
        return float(info["best_value"])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=base.train.seed)
    study = optuna.create_study(direction="maximize" if METRICS[metric] else "minimize", sampler=sampler)
    study.optimize(objective, n_trials=trials, timeout=timeout)
    best = study.best_trial
    best_values = _with(values, best.user_attrs["settings"])
    best_values["train"]["overwrite"] = False
    path = best_path
    from_dict(best_values, str(path))  # the written config is a valid one
    header = f"# govtopic tune: best validation {metric} {best.value:.4f} of {len(study.trials)} trial(s)\n"
    text = header + yaml.safe_dump(best_values, allow_unicode=True, sort_keys=False)
    write_output_text(path, text, "best config", "--output")
    summary = [
        {"number": t.number, "value": t.value, "settings": t.user_attrs.get("settings"), "state": t.state.name}
        for t in study.trials
    ]
    (tune_dir / "trials.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    logger.info("best config written to %s", path)
    return {
        "metric": metric,
        "value": best.value,
        "params": best.user_attrs["settings"],
        "config": path,
        "trials": len(study.trials),
    }
