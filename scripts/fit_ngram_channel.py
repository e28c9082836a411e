"""Fit (or refit) the n-gram channel of a trained model folder, without training the transformer again.

It reads the model's saved config, loads the same training and validation splits, fits the channel on the
training split, chooses the weights of its two blocks (first level, full labels) on the validation split, fits
the temperature again on the mixed scores, and writes both into the folder (its record in config.json). Useful
after upgrading govtopic, or for a model trained with ``model.ngram_channel: false``.

    python scripts/fit_ngram_channel.py runs/cpu-official/model
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from govtopic.config import ConfigError
from govtopic.data import DataError, load_labelled
from govtopic.evaluation import calibrate_folder, saved_config
from govtopic.modeling import ModelLoadError
from govtopic.training import CONFIG_NAME, fit_ngram_channel


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The channel is fitted on the model's own training data, read through the config training saved: a folder
    # without it is not a govtopic model folder, and nothing is written to it.
    if not (Path(args.model_dir) / CONFIG_NAME).is_file():
        print(
            f"error: {args.model_dir} has no {CONFIG_NAME}: not a model folder written by govtopic train; pass the "
            "model folder of a run (e.g. runs/cpu-official/model)",
            file=sys.stderr,
        )
        return 2
    try:
        cfg = saved_config(args.model_dir)
        data = load_labelled(cfg.data, cfg.normalize, cfg.train.seed)
        chosen, logits = fit_ngram_channel(args.model_dir, data, cfg)
        calibration = (
            calibrate_folder(args.model_dir, data.validation, cfg, logits) if len(data.validation) >= 2 else {}
        )
    except (ConfigError, DataError, ModelLoadError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"n-gram channel written to {args.model_dir}: weight {chosen['weight']} (first level), "
        f"{chosen['full_weight']} (full labels)"
    )
    tried = chosen.get("validation_accuracy_by_weights") or {}
    best = tried.get(f"{chosen['weight']:g}/{chosen['full_weight']:g}")
    if best:
        alone = tried.get("0/0")
        print(f"validation accuracy and macro-F1 (first level, full label) {best}; transformer alone {alone}")
    if calibration:
        print(f"temperature {calibration['temperature']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
