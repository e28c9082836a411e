"""A run folder is govtopic's only when govtopic made it, and it is resumed only by the run that made it."""

import json
import logging
import os

import pytest

from conftest import synthetic_rows, tiny_config
from govtopic import load_config, train
from govtopic.cli import main
from govtopic.data import DataError
from govtopic.runs import MARKER, RunFolderError

FAST = ["train.max_steps=4", "train.evaluate_after=false", "eval.calibrate=false"]


def snapshot(folder):
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "docs.jsonl"
    write_rows(path, synthetic_rows(60))
    return path


def run_config(tmp_path, data_file, *overrides):
    return load_config(tiny_config(tmp_path), [f"data.train_file={data_file}", *FAST, *overrides])


def test_a_folder_govtopic_did_not_make_is_refused_and_left_alone(tmp_path, data_file):
    folder = tmp_path / "run"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "notes.txt").write_text("mine", encoding="utf-8")
    (folder / "thesis.tex").write_text("mine too", encoding="utf-8")
    before = snapshot(folder)
    with pytest.raises(RunFolderError) as info:
        train(run_config(tmp_path, data_file))
    message = str(info.value)
    assert str(folder) in message and "output_dir" in message and MARKER in message
    assert snapshot(folder) == before


def test_a_missing_training_file_leaves_the_run_folder_as_it_was(tmp_path, data_file):
    model_dir = train(run_config(tmp_path, data_file))
    folder = model_dir.parent
    before = snapshot(folder)
    with pytest.raises(DataError, match="data.train_file.*missing.jsonl"):
        train(run_config(tmp_path, tmp_path / "missing.jsonl"))
    assert snapshot(folder) == before


def test_changed_settings_or_data_are_refused_until_overwrite(tmp_path, data_file, caplog):
    model_dir = train(run_config(tmp_path, data_file))
    before = snapshot(model_dir.parent)

    with pytest.raises(RunFolderError) as info:
        train(run_config(tmp_path, data_file, "train.learning_rate=0.002"))
    message = str(info.value)
    assert "train.learning_rate: 0.001 -> 0.002" in message and "--overwrite" in message and "output_dir" in message

    write_rows(data_file, synthetic_rows(61))  # one more document
    with pytest.raises(RunFolderError, match=r"data\.train_file: its contents changed"):
        train(run_config(tmp_path, data_file))
    assert snapshot(model_dir.parent) == before  # nothing was touched

    # The explicit choice: start over in the same folder, on the new data, from step 0.
    caplog.set_level(logging.INFO)
    config = tiny_config(tmp_path)
    code = main(["train", str(config), f"data.train_file={data_file}", *FAST, "--overwrite"])
    assert code == 0 and "resuming from" not in caplog.text
    card = json.loads((model_dir.parent / MARKER).read_text(encoding="utf-8"))
    assert card["made_by"] == "govtopic train"
    state = json.loads(next(model_dir.parent.glob("checkpoints/checkpoint-4/trainer_state.json")).read_text())
    assert state["global_step"] == 4 and len(list(model_dir.parent.glob("checkpoints/checkpoint-*"))) == 1


def test_the_same_run_resumes_when_only_reporting_settings_change(tmp_path, data_file, caplog):
    train(run_config(tmp_path, data_file))
    caplog.set_level(logging.INFO)
    train(run_config(tmp_path, data_file, "train.logging_steps=1", "eval.baseline=true", "train.save_total_limit=3"))
    assert "resuming from" in caplog.text and "checkpoint-4" in caplog.text


def test_an_empty_existing_folder_is_used(tmp_path, data_file):
    (tmp_path / "run").mkdir()
    assert train(run_config(tmp_path, data_file)).is_dir()
    assert (tmp_path / "run" / MARKER).is_file()
    assert os.listdir(tmp_path / "run" / "checkpoints")


def test_an_old_run_folder_without_a_marker_needs_overwrite(tmp_path, data_file):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "govtopic_config.yaml").write_text("output_dir: run\n", encoding="utf-8")
    with pytest.raises(RunFolderError, match="older govtopic.*--overwrite"):
        train(run_config(tmp_path, data_file))
    assert train(run_config(tmp_path, data_file, "train.overwrite=true")).is_dir()
    assert (folder / MARKER).is_file()
