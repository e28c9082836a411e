"""Killing `govtopic train` mid-run and running it again continues from the last checkpoint and ends
where an uninterrupted run ends."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, tiny_config
from govtopic import TopicClassifier

pytestmark = pytest.mark.slow
DOCS = ["第一条 为了加强城市规划管理，制定本条例。", "人民法院审理刑事案件。", "医疗机构卫生监督管理。"]


def train_cmd(config, out_dir, *extra):
    return [
        sys.executable,
        "-m",
        "govtopic.cli",
        "train",
        str(config),
        f"output_dir={out_dir}",
        "train.max_steps=20",
        "train.save_steps=4",
        "train.evaluate_after=false",
        "eval.calibrate=false",
        *extra,
    ]


def logits(model_dir):
    clf = TopicClassifier(model_dir)
    return clf.document_logits(DOCS, clf.long_doc, 8)[0]


# Killed in the first epoch (120 documents: 20 steps are one epoch), and in a later one (12 documents: about 5
# steps an epoch), where the batches of the resumed epoch are drawn again: the model must be the same both ways.
# The model is the last step's weights (no validation), so that an early best checkpoint cannot hide a difference.
@pytest.mark.parametrize("documents", [120, 12])
def test_killed_run_resumes_to_the_same_model(tmp_path, documents):
    config = tiny_config(tmp_path)
    extra = (f"data.max_train_samples={documents}", "train.validate=false")
    whole = subprocess.run(train_cmd(config, tmp_path / "whole", *extra), cwd=ROOT, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        train_cmd(config, run, *extra), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "checkpoint-8" / "trainer_state.json").exists():
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model").exists()  # no half-written model folder that looks complete
    epoch = json.loads((run / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())["epoch"]
    assert (epoch < 1) == (documents == 120)  # each case is killed in the epoch it stands for

    again = subprocess.run(train_cmd(config, run, *extra), cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stderr and "checkpoint-" in again.stderr
    np.testing.assert_allclose(logits(run / "model"), logits(tmp_path / "whole" / "model"), atol=1e-4)


def test_a_checkpoint_cut_short_by_a_kill_is_skipped(tmp_path):
    from govtopic.training import last_checkpoint

    for step, complete in ((4, True), (8, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        if complete:
            (folder / "trainer_state.json").write_text("{}", encoding="utf-8")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    assert last_checkpoint(tmp_path / "missing") is None
