"""Offline tracking: a tiny run logs to TensorBoard event files and an MLflow file store, read back here."""

from __future__ import annotations

import pytest

from conftest import tiny_config
from govtopic import load_config, train

pytestmark = pytest.mark.slow


def test_tensorboard_and_mlflow_offline(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from govtopic import runs

    # Any network use fails here: both trackers must write locally.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    cfg = load_config(tiny_config(tmp_path), ["train.eval_steps=3", "train.report_to=[tensorboard, mlflow]"])
    train(cfg)
    run_dir = tmp_path / "run"

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss", "validation/l1_macro_f1", "test_l1_accuracy", "data/rows_train"} <= scalars
    assert [e.step for e in events.Scalars("validation/l1_macro_f1")] == [3, 6]
    assert {"config", "data"} <= {tag.split("/")[0] for tag in events.Tags()["tensors"]}

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("govtopic")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED"
    params = found.data.params
    assert params["train.max_steps"] == "6" and params["train.eval_steps"] == "3"
    assert params["sha256.data.train_file"] == runs.data_hashes(cfg)["data.train_file"]
    assert int(params["rows.train"]) > 0 and int(params["rows.validation"]) > 0
    metrics = found.data.metrics
    assert 0 <= metrics["test_l1_accuracy"] <= 1 and "eval_l1_macro_f1" in metrics and "loss" in metrics
    history = client.get_metric_history(found.info.run_id, "eval_l1_macro_f1")
    assert [m.step for m in history] == [3, 6]
