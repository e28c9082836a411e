"""Training from a YAML config for a few steps, then predicting and loading the result as a user would."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_config
from govtopic import load_config, predict, train

pytestmark = pytest.mark.slow


def test_train_from_yaml_then_predict(tmp_path):
    cfg = load_config(tiny_config(tmp_path), ["train.evaluate_after=false"])
    model_dir = train(cfg)
    assert model_dir == tmp_path / "run" / "model"
    files = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "govtopic_config.yaml", "tokenizer.json"} <= files
    assert not (tmp_path / "run" / "model.partial").exists()
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert "城乡建设、环境保护" in config["id2label"].values()
    assert config["govtopic"]["long_doc"]["strategy"] == "chunks"
    saved = load_config(model_dir / "govtopic_config.yaml")
    assert saved.train.max_steps == 6 and saved.data.label_level == "l1"
    res = predict(["第一条 为了加强城市规划管理，制定本条例。", ""], model=model_dir, top_k=2)
    assert res[0]["label"] in config["id2label"].values() and res[1]["label"] is None


def test_cli_train_evaluate_predict(tmp_path):
    """The three commands a user runs, through the console entry point."""
    config = tiny_config(tmp_path, eval={"baseline": True, "calibrate": True})
    run = [sys.executable, "-m", "govtopic.cli"]
    out = subprocess.run(
        [*run, "train", str(config), "train.max_steps=4"], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    model_dir = tmp_path / "run" / "model"
    assert f"model folder: {model_dir}" in out.stdout
    report = tmp_path / "run" / "eval"
    assert {"metrics.json", "report.md", "report.html"} <= {p.name for p in report.iterdir()}
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["metrics"]["n"] == 568 and 0 <= metrics["metrics"]["l1_accuracy"] <= 1
    assert (model_dir / "README.md").read_text(encoding="utf-8").startswith("---")

    ev = subprocess.run(
        [
            *run,
            "evaluate",
            str(model_dir),
            str(ROOT / "data" / "gold_dev.jsonl"),
            "--output",
            str(tmp_path / "gold"),
            "--no-baseline",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "documents: 91" in ev.stdout and (tmp_path / "gold" / "report.html").is_file()

    pred = subprocess.run(
        [*run, "predict", str(model_dir), str(ROOT / "data" / "seeds"), "--output", str(tmp_path / "seeds.jsonl")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert pred.returncode == 0, pred.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "seeds.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 5 and all(r["label"] for r in rows)


def test_cli_config_error_is_readable(tmp_path):
    config = tiny_config(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "govtopic.cli", "train", str(config), "train.epochz=1", "train.batch_size=big"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2
    assert "train.epochz: unknown key (did you mean 'epochs'?)" in out.stderr
    assert "train.batch_size: expected an integer, got 'big'" in out.stderr
    assert "Traceback" not in out.stderr
