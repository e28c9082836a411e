"""The govtopic settings a model folder keeps in config.json: checked on load, each problem named with its path."""

import json

import pytest

from conftest import LABELS
from govtopic import TopicClassifier
from govtopic.modeling import ModelLoadError


def edit_settings(folder, **changes) -> None:
    """Merge ``changes`` into config.json's govtopic settings (one level deep for sections)."""
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    settings = config["govtopic"]
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key].update(value)
        else:
            settings[key] = value
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"temperature": 0}, "config.json govtopic.temperature: expected a finite value above 0, got 0.0"),
        ({"temperature": -1.5}, "config.json govtopic.temperature: expected a finite value above 0, got -1.5"),
        ({"temperature": float("nan")}, "config.json govtopic.temperature: expected a finite value above 0, got nan"),
        ({"temperature": "warm"}, "config.json govtopic.temperature: expected a float, got 'warm'"),
        ({"long_doc": {"max_windows": 0}}, "config.json govtopic.long_doc.max_windows: must be at least 1, got 0"),
        ({"long_doc": {"stride": 100}}, "config.json govtopic.long_doc.stride: must be at least 0 and below"),
        ({"long_doc": {"max_length": 2}}, "config.json govtopic.long_doc.max_length: expected 16..8192 tokens"),
        ({"long_doc": {"strategy": "all"}}, "config.json govtopic.long_doc.strategy: expected one of 'head'"),
        ({"colour": "blue"}, "config.json govtopic.colour: unknown key"),
        ({"long_doc": {"windowz": 3}}, "config.json govtopic.long_doc.windowz: unknown key"),
        ({"precision": "fp8"}, "config.json govtopic.precision: expected one of 'auto'"),
        ({"normalize": {"nfkc": "maybe"}}, "config.json govtopic.normalize.nfkc: expected true or false"),
        ({"long_doc": "chunks"}, "config.json govtopic.long_doc: expected a mapping of settings"),
        ({"label_scheme": "l1"}, "config.json govtopic.label_scheme: expected a mapping or null, got 'l1'"),
        ({"labels": ["a"]}, "config.json govtopic.labels: unknown key (the label names are config.json's id2label)"),
        (
            {"thresholds": {"precision": "x", "margin": 0.0, "l1": {}, "full": {}}},
            "config.json govtopic.thresholds.precision: expected a value above 0 and at most 1, got 'x'",
        ),
        (
            {"thresholds": {"precision": 0.9, "margin": 0.0, "l1": 5, "full": {}}},
            "config.json govtopic.thresholds.l1: expected a mapping of class to threshold, got 5",
        ),
        (
            {"thresholds": {"precision": 0.9, "margin": 0.0, "l1": {"城乡建设、环境保护": "0.5"}, "full": {}}},
            "govtopic.thresholds.l1.城乡建设、环境保护: expected a score from 0 to 1 or null, got '0.5'",
        ),
        (
            {"thresholds": {"precision": 0.9, "margin": "abc", "l1": {}, "full": {}}},
            "govtopic.thresholds.margin: expected a value from 0 to 1 (or null), got 'abc'",
        ),
        (
            {"thresholds": {"precision": 0.9, "margin": 0.0, "l1": {"无此类": 0.5}, "full": {}}},
            "govtopic.thresholds.l1.无此类: not a class of this model",
        ),
        ({"label_scheme": {"level": "foo"}}, "config.json govtopic.label_scheme.level: expected 'full' or 'l1'"),
        (
            {"label_scheme": {"level": "full", "taxonomy": ["工业、交通"]}},
            "config.json govtopic.label_scheme.taxonomy: expected a mapping of first-level class",
        ),
    ],
)
def test_bad_settings_are_refused_with_their_path(tiny_model_copy, changes, problem):
    edit_settings(tiny_model_copy, **changes)
    with pytest.raises(ModelLoadError) as info:
        TopicClassifier(tiny_model_copy)
    message = str(info.value)
    assert problem in message, message
    assert str(tiny_model_copy) in message and "train" in message  # where, and the fix


def test_every_problem_is_reported_at_once(tiny_model_copy):
    edit_settings(tiny_model_copy, temperature=0, long_doc={"max_windows": 0, "stride": 100})
    with pytest.raises(ModelLoadError) as info:
        TopicClassifier(tiny_model_copy)
    assert "3 problem(s)" in str(info.value)


def _edit_labels(folder, id2label: dict) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["id2label"] = id2label
    config["label2id"] = {v: int(k) for k, v in id2label.items()}
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")


def test_label_ids_with_a_gap_are_refused(tiny_model_copy):
    _edit_labels(tiny_model_copy, {str(i): label for i, label in zip([0, 1, 2, 3, 7], LABELS)})
    with pytest.raises(ModelLoadError, match=r"id2label: expected ids 0\.\.4, got 0, 1, 2, 3, 7"):
        TopicClassifier(tiny_model_copy)


def test_a_label_given_twice_is_refused(tiny_model_copy):
    _edit_labels(tiny_model_copy, {str(i): label for i, label in enumerate([*LABELS[:4], LABELS[0]])})
    with pytest.raises(ModelLoadError, match=r"id2label: .*城市规划.* more than once"):
        TopicClassifier(tiny_model_copy)


def test_record_reads_what_training_saved(tiny_model_dir):
    from govtopic.record import ModelRecord

    clf = TopicClassifier(tiny_model_dir)
    saved = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))["govtopic"]
    record = ModelRecord.from_config(clf.model.config, str(tiny_model_dir))
    written = record.to_dict()
    assert {k: written[k] for k in saved} == saved  # what training saved reads back unchanged
    assert record.labels == LABELS and record.long_doc.max_length == 64 and record.temperature == 1.0
    assert clf.long_doc == record.long_doc and clf.labels == LABELS


def test_a_folder_without_govtopic_settings_gets_the_defaults(tiny_model_copy):
    """A folder fine-tuned with another tool: no govtopic settings and none of the files govtopic writes."""
    path = tiny_model_copy / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    del config["govtopic"]
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    (tiny_model_copy / "govtopic_config.yaml").unlink()
    clf = TopicClassifier(tiny_model_copy)
    assert clf.temperature == 1.0 and clf.long_doc.strategy == "chunks" and clf.predict("城市规划")["label"]


def remove_settings(folder, *names) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for name in names:
        if name is None:
            del config["govtopic"]
        else:
            del config["govtopic"][name]
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize(
    "removed, problem",
    [
        ("long_doc", "config.json govtopic.long_doc: missing (every govtopic release writes it)"),
        ("normalize", "config.json govtopic.normalize: missing (every govtopic release writes it)"),
        (None, "config.json govtopic: missing, but the folder holds govtopic_config.yaml"),
    ],
)
def test_settings_cut_from_a_govtopic_folder_are_refused_not_replaced_by_defaults(tiny_model_copy, removed, problem):
    """Without them the folder would predict with other windows (512 tokens instead of training's) in silence."""
    remove_settings(tiny_model_copy, removed)
    with pytest.raises(ModelLoadError) as info:
        TopicClassifier(tiny_model_copy)
    assert problem in str(info.value)


def test_stored_thresholds_as_calibration_writes_them_load(tiny_model_copy):
    edit_settings(
        tiny_model_copy,
        thresholds={
            "precision": 0.95,
            "margin": 0.05,
            "l1": {"城乡建设、环境保护": 0.4, "公安、安全、司法": None},
            "full": {},
        },
    )
    assert TopicClassifier(tiny_model_copy).record.thresholds["l1"]["城乡建设、环境保护"] == 0.4


def test_the_folder_keeps_its_taxonomy_so_evaluation_anywhere_refuses_unknown_gold_labels(
    tiny_model_copy, tmp_path, monkeypatch
):
    """The training config names the taxonomy by a path relative to where training ran; from any other folder
    that path is gone, so the folder's own copy is what checks the gold labels."""
    from govtopic.data import DataError
    from govtopic.evaluation import evaluate
    from govtopic.labels import LabelScheme, Taxonomy

    taxonomy = Taxonomy({"城乡建设、环境保护": ["城市规划", "环境监测、保护与治理"], "公安、安全、司法": ["司法"]})
    edit_settings(tiny_model_copy, label_scheme=LabelScheme(taxonomy).to_dict())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = elsewhere / "gold.jsonl"
    data.write_text(
        '{"text": "城市规划管理", "label": "不存在的类"}\n{"text": "法院司法", "label": "公安、安全、司法"}\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError) as info:
        evaluate(tiny_model_copy, data, elsewhere / "eval", split=None, baseline=False)
    assert "不存在的类" in str(info.value)
