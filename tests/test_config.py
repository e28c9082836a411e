"""Config loading: typed values, every problem at once with dotted paths, overrides, saved configs."""

from pathlib import Path

import pytest
import yaml

from govtopic.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_configs_load():
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"quickstart", "cpu-recipe", "cpu-dapt", "dapt-small", "bert-base-chinese"}
    for path in paths:
        cfg = load_config(path)
        assert cfg.output_dir.startswith("runs/"), path


def test_pooling_is_checked():
    assert load_config(None).model.pooling == "cls"
    assert load_config(ROOT / "configs" / "quickstart.yaml").model.pooling == "mean"
    with pytest.raises(ConfigError, match="model.pooling"):
        load_config(None, ["model.pooling=average"])


def test_yaml_float_without_dot_is_a_float(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  learning_rate: 2e-5\n"))
    assert cfg.train.learning_rate == pytest.approx(2e-5)
    assert isinstance(cfg.train.learning_rate, float)


def test_all_problems_reported_at_once_with_dotted_paths(tmp_path):
    path = write(tmp_path, "train:\n  learning_rate: fast\n  epochz: 3\nlong_doc:\n  strategy: chunk\nmodle: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "train.learning_rate: expected a float, got 'fast'" in message
    assert "train.epochz: unknown key (did you mean 'epochs'?)" in message
    assert "long_doc.strategy" in message and "did you mean 'chunks'?" in message
    assert "modle: unknown key (did you mean 'model'?)" in message
    assert len(info.value.problems) == 4
    assert str(path) in message


def test_dotted_overrides_are_typed(tmp_path):
    cfg = load_config(
        write(tmp_path, "train:\n  epochs: 1\n"),
        ["train.epochs=3", "long_doc.strategy=head", "data.taxonomy=null", "train.resume=false"],
    )
    assert cfg.train.epochs == 3.0
    assert cfg.long_doc.strategy == "head"
    assert cfg.data.taxonomy is None
    assert cfg.train.resume is False


def test_bad_override_is_named():
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer"):
        load_config(None, ["train.batch_size=many"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["train.epochs"])


def test_cross_field_check_names_the_fix():
    with pytest.raises(ConfigError, match="long_doc.stride: must be at least 0 and below max_length - 2"):
        load_config(None, ["long_doc.max_length=64", "long_doc.stride=100"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=2", "model.num_hidden_layers=2"])
    cfg.save(tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text(encoding="utf-8"))["train"]["epochs"] == 2.0


def test_defaults_are_a_valid_config():
    assert load_config(None) == Config()


def test_missing_file_says_where_to_look(tmp_path):
    with pytest.raises(FileNotFoundError, match="configs/"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_code_tags_are_refused(tmp_path):
    path = write(tmp_path, "output_dir: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_values_that_would_fail_late_are_caught_early():
    with pytest.raises(ConfigError) as info:
        load_config(
            None, ["train.warmup_ratio=2", "eval.batch_size=0", "pretrain.mlm_probability=15", "train.epochs=-1"]
        )
    assert len(info.value.problems) == 4
