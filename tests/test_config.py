"""Config loading: typed values, every problem at once with dotted paths, overrides, saved configs."""

import subprocess
import sys
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


BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
train:
  epochs: *i
eval:
  top_k: *i
"""

# Loads a config in a child process with at most 2 GB of memory, so a hang or a blow-up cannot hurt the machine.
LOAD_IN_CHILD = """\
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from govtopic.config import ConfigError, load_config
try:
    load_config(sys.argv[1])
except ConfigError as err:
    print(err)
"""


def _load_in_child(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LOAD_IN_CHILD, str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    out = _load_in_child(write(tmp_path, BILLION_LAUGHS))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "aliases" in out.stdout and "expand" in out.stdout
    assert len(out.stdout) < 2000  # the expanded value is not echoed


def test_recursive_yaml_alias_is_refused(tmp_path):
    out = _load_in_child(write(tmp_path, "eval:\n  top_k: &a [1, *a]\n"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "recursive alias" in out.stdout


def test_config_file_over_a_megabyte_is_refused(tmp_path):
    path = write(tmp_path, "output_dir: runs/x\n" + "# padding\n" * 120_000)
    with pytest.raises(ConfigError, match="larger than 1 MB"):
        load_config(path)


def test_a_few_aliases_still_work(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  learning_rate: &lr 3.0e-4\n  weight_decay: *lr\n"))
    assert cfg.train.weight_decay == pytest.approx(3.0e-4)


def test_long_values_are_cut_short_in_messages(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "train:\n  epochs: [" + ", ".join(["123456789"] * 5000) + "]\n"))
    message = str(info.value)
    assert "train.epochs: expected a float" in message
    assert len(message) < 400


@pytest.mark.parametrize(
    "override, path",
    [
        ("train.epochs=.nan", "train.epochs"),
        ("train.epochs=.inf", "train.epochs"),
        ("data.max_train_samples=-5", "data.max_train_samples"),
        ("train.label_smoothing=1.5", "train.label_smoothing"),
        ("train.label_smoothing=-0.1", "train.label_smoothing"),
        ("train.logging_steps=-1", "train.logging_steps"),
        ("train.save_steps=-10", "train.save_steps"),
        ("train.learning_rate=.nan", "train.learning_rate"),
        ("train.learning_rate=.inf", "train.learning_rate"),
        ("train.weight_decay=.nan", "train.weight_decay"),
        ("train.seed=-1", "train.seed"),
        ("train.save_total_limit=0", "train.save_total_limit"),
    ],
)
def test_values_training_would_misuse_are_refused(override, path):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(f"{path}: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "CONFIG", "--overwrite", "train.epochz=3"],
        ["tune", "CONFIG", "--trials", "2", "train.epochz=3"],
        ["pretrain", "CONFIG", "train.epochz=3"],
    ],
)
def test_dotted_overrides_after_the_options_are_read(argv, tmp_path, capsys):
    """`govtopic tune CONFIG --trials 2 key=value` reads the override like `govtopic tune CONFIG key=value
    --trials 2`: the misspelt key is named by the config check, not refused by the argument parser."""
    from govtopic.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run")}), encoding="utf-8")
    assert main([str(path) if a == "CONFIG" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert "train.epochz" in err and "did you mean 'epochs'" in err
    assert "unrecognized arguments" not in err


def test_words_that_are_not_overrides_are_still_refused(tmp_path, capsys):
    from govtopic.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "MODEL", "DATA", "train.epochs=3"])  # evaluate takes no overrides
    assert exc.value.code == 2
    assert "unrecognized arguments: train.epochs=3" in capsys.readouterr().err


def test_a_shortened_option_is_refused_not_taken_for_overwrite(tmp_path, capsys):
    """`--overwrit` (a typo) must not run `--overwrite`, which deletes the run folder."""
    from govtopic.cli import main

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "keep.txt").write_text("a user's file", encoding="utf-8")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(run)}), encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["train", str(path), "--overwrit"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --overwrit" in capsys.readouterr().err
    assert (run / "model" / "keep.txt").read_text(encoding="utf-8") == "a user's file"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("train:\n  epochs: 2\n  epochs: 3\n", "'epochs' is given twice in one section (lines 2 and 3)"),
        ("train:\n  learning_rate: 0.001\nmodel:\n  pooling: mean\ntrain:\n  epochs: 1\n", "'train' is given twice"),
    ],
)
def test_a_key_given_twice_is_an_error_not_the_last_one_silently(tmp_path, text, named):
    """YAML itself keeps the last of two equal keys: a second `train:` section would drop the first's settings."""
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert named in str(exc.value)


def test_merge_keys_still_override_as_yaml_means(tmp_path):
    from govtopic.config import _read_yaml

    path = tmp_path / "c.yaml"
    path.write_text("x: &t {epochs: 2, learning_rate: 0.001}\ntrain:\n  <<: *t\n  epochs: 3\n", encoding="utf-8")
    assert _read_yaml(path, str(path))["train"] == {"epochs": 3, "learning_rate": 0.001}
