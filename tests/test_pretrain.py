"""`govtopic pretrain`: a model to fine-tune from, written only into a folder it made, from a corpus it was told
to read, with errors that name the fix before anything is written."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from conftest import TAXONOMY, TINY_MODEL, synthetic_rows, tiny_config
from govtopic import load_config, train
from govtopic.cli import main
from govtopic.data import DataError
from govtopic.pretrain import pretrain
from govtopic.runs import MARKER, RunFolderError


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def corpus(tmp_path, n=40, name="corpus.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in synthetic_rows(n)), encoding="utf-8")
    return path


def pretrain_config(tmp_path, files, **extra):
    values = {
        "output_dir": str(tmp_path / "dapt"),
        "model": dict(TINY_MODEL),
        "pretrain": {"files": [str(f) for f in files], "max_length": 32},
        "train": {"max_steps": 2, "batch_size": 4, "learning_rate": "1e-3", "logging_steps": 1},
    }
    for key, value in extra.items():
        values.setdefault(key, {}).update(value)
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return path


def test_pretrained_folder_is_a_starting_point_for_training(tmp_path):
    config = pretrain_config(tmp_path, [corpus(tmp_path)])
    model_dir = pretrain(load_config(config))
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    marker = json.loads((tmp_path / "dapt" / MARKER).read_text(encoding="utf-8"))
    assert marker["made_by"] == "govtopic pretrain"

    (tmp_path / "fine").mkdir()
    fine = tiny_config(tmp_path / "fine")
    cfg = load_config(
        fine,
        [
            f"model.name_or_path={model_dir}",
            "model.from_scratch=false",
            "model.num_hidden_layers=null",
            "model.hidden_size=null",
            "model.num_attention_heads=null",
            "model.intermediate_size=null",
            "train.max_steps=2",
            "train.evaluate_after=false",
        ],
    )
    assert train(cfg).is_dir()


def test_a_folder_of_user_files_is_refused_and_left_alone(tmp_path):
    config = pretrain_config(tmp_path, [corpus(tmp_path)])
    folder = tmp_path / "dapt"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.bin").write_bytes(b"mine")
    (folder / "govtopic_config.yaml").write_text("mine", encoding="utf-8")
    before = snapshot(folder)
    with pytest.raises(RunFolderError, match="Choose a new output_dir"):
        pretrain(load_config(config))
    assert snapshot(folder) == before


def test_another_corpus_is_refused_until_overwrite_and_a_finished_run_is_kept(tmp_path, caplog):
    first = corpus(tmp_path)
    config = pretrain_config(tmp_path, [first])
    pretrain(load_config(config))
    caplog.set_level(logging.INFO)
    weights = (tmp_path / "dapt" / "model" / "model.safetensors").read_bytes()
    pretrain(load_config(config, ["train.logging_steps=2"]))  # reporting only: the same run, already finished
    assert "already finished (checkpoint-2)" in caplog.text
    assert sorted(p.name for p in (tmp_path / "dapt" / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert (tmp_path / "dapt" / "model" / "model.safetensors").read_bytes() == weights

    other = corpus(tmp_path, n=30, name="other.jsonl")
    before = snapshot(tmp_path / "dapt")
    with pytest.raises(RunFolderError, match=r"pretrain\.files\[0\]"):
        pretrain(load_config(config, [f"pretrain.files=[{other}]"]))
    assert snapshot(tmp_path / "dapt") == before
    code = main(["pretrain", str(config), f"pretrain.files=[{other}]", "--overwrite"])
    assert code == 0


def test_output_inside_the_corpus_folder_is_refused(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i, row in enumerate(synthetic_rows(5)):
        (folder / f"{i}.txt").write_text(row["text"], encoding="utf-8")
    config = pretrain_config(tmp_path, [folder])
    with pytest.raises(RunFolderError, match="inside pretrain.files"):
        pretrain(load_config(config, [f"output_dir={folder / 'dapt'}"]))
    assert sorted(p.name for p in folder.iterdir()) == [f"{i}.txt" for i in range(5)]


def test_corpus_problems_are_named_before_a_folder_is_made(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    short = tmp_path / "short.txt"
    short.write_text("通知", encoding="utf-8")
    with pytest.raises(ValueError, match="nothing to pre-train on"):
        pretrain(load_config(pretrain_config(tmp_path, [short])))
    with pytest.raises(DataError, match=r"pretrain\.files\[0\]: .*missing\.txt does not exist"):
        pretrain(load_config(pretrain_config(tmp_path, [tmp_path / "missing.txt"])))
    with pytest.raises(ValueError, match="pretrain.max_length 600 is more than the model's 512 positions"):
        pretrain(load_config(pretrain_config(tmp_path, [corpus(tmp_path)], pretrain={"max_length": 600})))
    assert not (tmp_path / "dapt").exists()


def test_a_split_setting_that_leaves_nothing_out_is_told(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    config = pretrain_config(tmp_path, [corpus(tmp_path)], pretrain={"exclude_splits": ["tset"]})
    pretrain(load_config(config))
    assert "holds test, train, none of pretrain.exclude_splits ['tset']" in caplog.text


def test_sizes_without_from_scratch_are_a_config_error(tmp_path):
    from govtopic.config import ConfigError

    config = pretrain_config(tmp_path, [corpus(tmp_path)])
    with pytest.raises(ConfigError, match="model.hidden_size: applies only to a model built from a config"):
        load_config(config, ["model.from_scratch=false", f"data.taxonomy={TAXONOMY}"])
