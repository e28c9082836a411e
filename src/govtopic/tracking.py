"""Offline experiment tracking: TensorBoard event files and an MLflow file store inside the run folder.

``train.report_to: [tensorboard, mlflow]`` logs, without any network: the resolved config, the data files'
sha256 and row counts per split, the training loss and validation figures as they come, and the final test
figures. TensorBoard writes to ``RUN/tensorboard`` (``tensorboard --logdir RUN/tensorboard``); MLflow to a file
store in ``RUN/mlruns`` (read with ``MLFLOW_ALLOW_FILE_STORE=true``; see the README).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Tracker name -> (module it needs, pip command that installs it).
TRACKERS = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "mlflow": ("mlflow", "pip install mlflow-skinny"),
}
EXPERIMENT = "govtopic"


def check_trackers(report_to: list[str], problems: list[str]) -> None:
    """A problem for each tracker in ``report_to`` whose package is not installed (config.py's style)."""
    for i, name in enumerate(report_to or []):
        module, pip = TRACKERS.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            problems.append(
                f"train.report_to[{i}]: {name!r} needs the {module} package, which is not installed; run "
                f"`{pip}` or remove {name!r} from train.report_to"
            )


def _flat_params(values: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(values, dict):
        out: dict[str, str] = {}
        for k, v in values.items():
            out.update(_flat_params(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(values, ensure_ascii=False, default=str)[:500]}


class Tracker:
    """The trackers of one run, written only by the main process.

    Args:
        report_to: tracker names ("tensorboard", "mlflow"); an empty list makes every call a no-op.
        run_dir: the run folder; TensorBoard writes to ``run_dir/tensorboard``, MLflow to ``run_dir/mlruns``.
        run_name: the name shown in both.

    Example:
        >>> tracker = Tracker(["tensorboard"], Path("runs/x"), "x")
        >>> tracker.start(cfg.to_dict(), {"data.train_file": "ab12..."}, {"train": 900})
        >>> tracker.log_metrics({"loss": 1.2}, step=10)
        >>> tracker.finish({"test_l1_accuracy": 0.8})
    """

    def __init__(self, report_to: list[str], run_dir: Path, run_name: str):
        self.names = list(report_to or [])
        self.run_dir = Path(run_dir)
        self.run_name = run_name
        self.writer = None
        self.client = None
        self.run_id: str | None = None

    @property
    def tracking_uri(self) -> str:
        return (self.run_dir / "mlruns").resolve().as_uri()

    def start(self, config: dict, data_sha256: dict[str, str], rows: dict[str, int]) -> None:
        import yaml

        text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            self.writer.add_text("config", f"```yaml\n{text}\n```", 0)
            self.writer.add_text("data", json.dumps({"sha256": data_sha256, "rows": rows}, ensure_ascii=False), 0)
            for split, n in rows.items():
                self.writer.add_scalar(f"data/rows_{split}", n, 0)
        if "mlflow" in self.names:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient

            # MLflow 3 keeps the file store (no server, no database) behind this switch; it is the offline store
            # the run folder is meant to hold.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
            self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
            params = {**_flat_params(config), **{f"sha256.{k}": v for k, v in data_sha256.items()}}
            params.update({f"rows.{k}": str(v) for k, v in rows.items()})
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=items[i : i + 100])
            self.client.log_text(self.run_id, text, "config.yaml")
        logger.info("tracking to %s", ", ".join(self.names))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k.replace("eval_", "validation/", 1), v, step)
        if self.client is not None:
            for k, v in values.items():
                self.client.log_metric(self.run_id, k, v, step=step)

    def finish(self, final: dict[str, float] | None = None, step: int = 0) -> None:
        if final:
            self.log_metrics(final, step)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.client is not None:
            self.client.set_terminated(self.run_id)
            self.client = None


def make_callback(tracker: Tracker):
    """A TrainerCallback forwarding the Trainer's logs (loss, learning rate, validation figures) to ``tracker``."""
    from transformers import TrainerCallback

    class TrackingCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                tracker.log_metrics(logs, state.global_step)

    return TrackingCallback()
