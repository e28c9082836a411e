"""Several processes through accelerate (CPU, gloo): training as good as one process, prediction merged
in input order."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, synthetic_config

pytestmark = pytest.mark.slow


def accelerate(*args: str) -> list[str]:
    # --multi_gpu makes accelerate start one process per rank through torchrun; without CUDA they run on the
    # CPU with gloo (--cpu alone would start a single process unless MPI is installed).
    exe = shutil.which("accelerate", path=str(ROOT / ".venv" / "bin")) or shutil.which("accelerate")
    return [
        exe,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "govtopic.cli",
        *args,
    ]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def test_two_processes_train_as_well_as_one(tmp_path):
    config = synthetic_config(tmp_path)
    run([sys.executable, "-m", "govtopic.cli", "train", str(config), f"output_dir={tmp_path / 'one'}"])
    # The same global batch (2 processes x 8 = 16): the same number of steps, each averaged over both.
    run(accelerate("train", str(config), f"output_dir={tmp_path / 'two'}", "train.batch_size=8"))
    one = json.loads((tmp_path / "one" / "eval" / "metrics.json").read_text(encoding="utf-8"))["metrics"]
    two = json.loads((tmp_path / "two" / "eval" / "metrics.json").read_text(encoding="utf-8"))["metrics"]
    # Two processes really shared the work: with half the per-process batch, as many steps as one process.
    steps = [_final_step(tmp_path / name) for name in ("one", "two")]
    assert abs(steps[1] - steps[0]) <= 3, steps
    assert one["accuracy"] >= 0.9, one["accuracy"]
    assert two["accuracy"] >= 0.9 and abs(one["accuracy"] - two["accuracy"]) <= 0.05, (one["accuracy"], two["accuracy"])


def _final_step(run_dir) -> int:
    states = (run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json")
    return max(json.loads(p.read_text(encoding="utf-8"))["global_step"] for p in states)


def test_two_processes_predict_in_input_order(tiny_model_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    lines = [json.dumps({"id": f"d{i}", "text": "城市规划" * (i % 7 + 1)}, ensure_ascii=False) for i in range(23)]
    lines.insert(5, "{broken")
    docs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run(
        [
            sys.executable,
            "-m",
            "govtopic.cli",
            "predict",
            str(tiny_model_dir),
            str(docs),
            "--output",
            str(tmp_path / "one.jsonl"),
        ]
    )
    run(accelerate("predict", str(tiny_model_dir), str(docs), "--output", str(tmp_path / "two.jsonl")))
    one = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text(encoding="utf-8").splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in two] == [f"d{i}" for i in range(23)]
    assert [r["label"] for r in two] == [r["label"] for r in one]
    errors = (tmp_path / "two.errors.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(errors) == 1 and "malformed JSON" in errors[0]
    assert not list(tmp_path.glob("*.part*"))
