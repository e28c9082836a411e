"""`govtopic evaluate` scores the documents `predict()` would tag, and says what it left out and why."""

import json

import pytest

from govtopic import TopicClassifier
from govtopic.evaluation import evaluate

ROWS = [
    {"id": "a", "text": "城市规划建设管理", "label": "城乡建设、环境保护\\城市规划"},
    {"id": "b", "text": "法院审判司法", "label": "公安、安全、司法\\司法"},
    {"id": "c", "text": "城市规划", "label": "城乡建设、环境保护\\城市规划"},
    {"id": "empty", "text": "", "label": "城乡建设、环境保护\\城市规划"},
    {"id": "dots", "text": "。。。，，", "label": "城乡建设、环境保护\\城市规划"},
    {"id": "nolabel", "text": "城市规划", "label": None},
]


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_empty_and_unlabelled_rows_are_left_out_and_named(tiny_model_dir, tmp_path):
    data = write(tmp_path / "gold.jsonl", ROWS)
    result = evaluate(tiny_model_dir, data, tmp_path / "eval", split=None, baseline=False)
    assert result["meta"]["documents"] == 3
    assert result["meta"]["left_out"] == (
        "1 row(s) without a label; 2 document(s) with no text (predict() gives them no topic)"
    )
    report = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "2 document(s) with no text" in report
    # The figure is the one predict() gives on the documents it tags.
    results = TopicClassifier(tiny_model_dir).predict([r["text"] for r in ROWS[:3]])
    right = sum(res["label"] == row["label"] for res, row in zip(results, ROWS[:3]))
    assert result["metrics"]["accuracy"] == right / 3


def test_a_file_without_a_split_column_says_all_rows_were_scored(tiny_model_dir, tmp_path):
    data = write(tmp_path / "gold.jsonl", ROWS[:3])
    result = evaluate(tiny_model_dir, data, tmp_path / "eval", baseline=False)  # split "test" asked by default
    assert result["meta"]["split"] == "all rows (no split column)" and "left_out" not in result["meta"]


def test_an_unknown_gold_label_names_a_fix_evaluate_can_take(tiny_model_copy, tmp_path):
    """`govtopic evaluate` takes no config: the error must not send the user to data.label_map."""
    from govtopic.data import DataError
    from govtopic.labels import LabelScheme, Taxonomy
    from test_record import edit_settings

    taxonomy = Taxonomy({"城乡建设、环境保护": ["城市规划"], "公安、安全、司法": ["司法"]})
    edit_settings(tiny_model_copy, label_scheme=LabelScheme(taxonomy).to_dict())
    data = write(tmp_path / "gold.jsonl", [{"text": "城市规划管理", "label": "科技教育"}])
    with pytest.raises(DataError) as info:
        evaluate(tiny_model_copy, data, tmp_path / "eval", split=None, baseline=False)
    message = str(info.value)
    assert "'科技教育'" in message and "Correct them in the file" in message and "data.label_map" not in message


def test_a_files_own_spellings_are_read_through_label_map(tiny_model_copy, tmp_path, capsys):
    """A portal's file spells labels its own way: --label-map reads them, without touching the model folder."""
    from govtopic.cli import main
    from govtopic.labels import LabelScheme, Taxonomy
    from test_record import edit_settings

    taxonomy = Taxonomy({"城乡建设、环境保护": ["城市规划"], "公安、安全、司法": ["司法"]})
    edit_settings(tiny_model_copy, label_scheme=LabelScheme(taxonomy).to_dict())
    rows = [
        {"text": "城市规划建设管理", "label": "城规"},  # the portal's spelling of 城乡建设、环境保护\城市规划
        {"text": "法院审判司法", "label": "公安、安全、司法\\司法"},
        {"text": "城市规划", "label": "城规"},
    ]
    data = write(tmp_path / "portal.jsonl", rows)
    before = (tiny_model_copy / "config.json").read_bytes()
    assert main(["evaluate", str(tiny_model_copy), str(data), "--no-baseline", "--output", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "'城规'" in err and "--label-map FILE" in err  # refused, and the message names --label-map as a fix
    mapping = tmp_path / "portal_map.yaml"
    mapping.write_text('version: "p1"\nlabels:\n  城规: 城乡建设、环境保护\\城市规划\n', encoding="utf-8")
    result = evaluate(tiny_model_copy, data, tmp_path / "b", split=None, baseline=False, label_map=mapping)
    assert result["meta"]["documents"] == 3 and result["meta"]["label_map"] == str(mapping)
    # Scored against the mapped labels: the figure is predict()'s agreement with them.
    results = TopicClassifier(tiny_model_copy).predict([r["text"] for r in rows])
    gold = ["城乡建设、环境保护\\城市规划", "公安、安全、司法\\司法", "城乡建设、环境保护\\城市规划"]
    assert result["metrics"]["accuracy"] == sum(r["label"] == g for r, g in zip(results, gold)) / 3
    assert (tiny_model_copy / "config.json").read_bytes() == before  # the model's own map is unchanged


def test_a_label_map_that_is_missing_or_not_a_map_is_named(tiny_model_dir, tmp_path):
    from govtopic.data import DataError

    data = write(tmp_path / "gold.jsonl", ROWS[:3])
    with pytest.raises(DataError, match=r"--label-map .*nope.yaml: no such file"):
        evaluate(tiny_model_dir, data, tmp_path / "eval", split=None, baseline=False, label_map=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"--label-map .*bad.yaml: expected a mapping, got list"):
        evaluate(tiny_model_dir, data, tmp_path / "eval", split=None, baseline=False, label_map=bad)
    bad.write_text("labels:\n  - 公路\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"--label-map .*bad.yaml: labels: expected a mapping of published"):
        evaluate(tiny_model_dir, data, tmp_path / "eval", split=None, baseline=False, label_map=bad)
    bad.write_text("labels:\n  公路: [工业\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"--label-map .*bad.yaml is not a UTF-8 YAML file"):
        evaluate(tiny_model_dir, data, tmp_path / "eval", split=None, baseline=False, label_map=bad)
    bad.write_bytes(b"\xff\xfe\x00labels")
    with pytest.raises(DataError, match=r"--label-map .*bad.yaml is not a UTF-8 YAML file"):
        evaluate(tiny_model_dir, data, tmp_path / "eval", split=None, baseline=False, label_map=bad)


def test_a_label_map_target_outside_the_taxonomy_names_the_file(tiny_model_copy, tmp_path):
    from govtopic.data import DataError
    from govtopic.labels import LabelScheme, Taxonomy
    from test_record import edit_settings

    taxonomy = Taxonomy({"城乡建设、环境保护": ["城市规划"], "公安、安全、司法": ["司法"]})
    edit_settings(tiny_model_copy, label_scheme=LabelScheme(taxonomy).to_dict())
    data = write(tmp_path / "gold.jsonl", [{"text": "城市规划", "label": "城规"}])
    mapping = tmp_path / "map.yaml"
    mapping.write_text("labels:\n  城规: 城建\\城市规划\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        evaluate(tiny_model_copy, data, tmp_path / "eval", split=None, baseline=False, label_map=mapping)
    message = str(info.value)
    assert f"--label-map {mapping} maps '城规'" in message and "'城建' is not in the taxonomy" in message
    assert "data.label_map" not in message


def test_a_corrections_label_outside_the_taxonomy_names_a_fix_evaluate_can_take(tiny_model_copy, tmp_path):
    from govtopic.data import DataError
    from govtopic.labels import LabelScheme, Taxonomy
    from test_record import edit_settings

    taxonomy = Taxonomy({"城乡建设、环境保护": ["城市规划"], "公安、安全、司法": ["司法"]})
    edit_settings(tiny_model_copy, label_scheme=LabelScheme(taxonomy).to_dict())
    data = write(tmp_path / "gold.jsonl", ROWS[:3])
    fixes = write(tmp_path / "fixes.jsonl", [{"id": "a", "label": "城规"}])
    with pytest.raises(DataError) as info:
        evaluate(tiny_model_copy, data, tmp_path / "eval", split=None, baseline=False, corrections=[fixes])
    message = str(info.value)
    assert "'城规'" in message and "--label-map FILE" in message and "data.label_map" not in message


def test_full_label_rows_of_the_sources_add_up_to_the_whole(tiny_model_dir, tmp_path):
    """A source labelled at the first level (a portal publishing 一级 alone) still counts its 其他 rows as full
    labels, as the whole set does, so the per-source table adds up to the headline."""
    rows = [
        {"text": "城市规划建设", "label": "城乡建设、环境保护\\城市规划", "portal": "gov.cn"},
        {"text": "法院审判", "label": "公安、安全、司法\\司法", "portal": "gov.cn"},
        {"text": "医院卫生", "label": "卫生、体育", "portal": "hebei"},
        {"text": "其他事项", "label": "其他", "portal": "hebei"},
        {"text": "其他通知", "label": "其他", "portal": "hebei"},
    ]
    data = write(tmp_path / "gold.jsonl", rows)
    result = evaluate(tiny_model_dir, data, tmp_path / "eval", split=None, baseline=False, group_by="portal")
    per_source = result["metrics"]["per_source"]
    assert result["metrics"]["n_full"] == 4
    assert per_source["gov.cn"]["n_full"] == 2 and per_source["hebei"]["n_full"] == 2


def test_the_headline_ece_is_the_calibration_table_s(tiny_model_dir, tmp_path):
    """One 'ECE after temperature' per report: a gold label the model lacks is left out of both."""
    rows = [dict(r) for r in ROWS[:3]] + [{"text": "体育比赛", "label": "卫生、体育\\体育"}]  # not a model label
    data = write(tmp_path / "gold.jsonl", rows)
    result = evaluate(tiny_model_dir, data, tmp_path / "eval", split=None, baseline=False)
    assert result["metrics"]["ece"] == result["calibration"]["ece_after"]


def test_a_validation_split_too_small_to_calibrate_says_so(tiny_model_copy, caplog):
    from govtopic.config import Config
    from govtopic.data import Split
    from govtopic.evaluation import calibrate_folder

    one = Split(["城市规划建设"], ["城乡建设、环境保护\\城市规划"], [""], ["a"])
    with caplog.at_level("WARNING"):
        result = calibrate_folder(tiny_model_copy, one, Config())
    assert result["temperature"] == 1.0
    assert "scores NOT calibrated: 1 validation document(s)" in caplog.text


def trained_on(tmp_path, data):
    """A tiny model trained on ``data`` (a file without a split column: training holds rows out itself)."""
    from conftest import tiny_config
    from govtopic import load_config, train

    cfg = load_config(
        tiny_config(tmp_path),
        [f"data.train_file={data}", "train.max_steps=2", "train.evaluate_after=false", "eval.calibrate=false"],
    )
    return train(cfg)


def test_the_training_file_without_a_split_column_is_not_scored_as_test_rows(tmp_path):
    from conftest import synthetic_rows
    from govtopic.data import DataError
    from govtopic.thresholds import calibrate_thresholds

    rows = [{k: v for k, v in r.items() if k != "split"} for r in synthetic_rows(40)]
    data = write(tmp_path / "portal.jsonl", rows)
    model_dir = trained_on(tmp_path, data)
    copy = write(tmp_path / "copy.jsonl", rows)  # the same bytes under another name
    for file in (data, copy):
        with pytest.raises(DataError, match=r"trained on \(data\.train_file\).*--split all"):
            evaluate(model_dir, file, tmp_path / "ev", baseline=False)
        with pytest.raises(DataError, match=r"calibrate-thresholds .*--split all"):
            calibrate_thresholds(str(model_dir), str(file))
    assert not (tmp_path / "ev").exists()
    result = evaluate(model_dir, data, tmp_path / "ev", split=None, baseline=False)  # asked for: every row
    assert result["meta"]["split"] == "all rows" and result["meta"]["documents"] == 40
    other = write(tmp_path / "other.jsonl", rows[:10])  # not a training file: all its rows are scored
    assert evaluate(model_dir, other, tmp_path / "ev2", baseline=False)["meta"]["documents"] == 10


def test_a_report_of_another_file_of_the_same_name_is_kept(tiny_model_copy, tmp_path):
    from govtopic.evaluation import default_report_folder

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write(tmp_path / "a" / "gold.jsonl", ROWS[:3])
    second = write(tmp_path / "b" / "gold.jsonl", ROWS[:2])
    evaluate(tiny_model_copy, first, baseline=False)
    evaluate(tiny_model_copy, second, baseline=False)
    eval_dir = tiny_model_copy.parent / "eval"
    kept = json.loads((eval_dir / "gold" / "metrics.json").read_text(encoding="utf-8"))["meta"]
    beside = json.loads((eval_dir / "gold-2" / "metrics.json").read_text(encoding="utf-8"))["meta"]
    assert (kept["data_file"], kept["documents"]) == (str(first), 3)
    assert (beside["data_file"], beside["documents"]) == (str(second), 2)
    # Evaluating a file again replaces its own report, not the other's.
    assert default_report_folder(tiny_model_copy, first) == eval_dir / "gold"
    assert default_report_folder(tiny_model_copy, second) == eval_dir / "gold-2"


def test_a_missing_model_folder_or_a_language_model_is_named(tmp_path):
    from govtopic.modeling import ModelLoadError
    from govtopic.thresholds import calibrate_thresholds

    data = write(tmp_path / "gold.jsonl", ROWS[:3])
    with pytest.raises(ModelLoadError, match="model folder nomodel does not exist"):
        evaluate("nomodel", data)
    with pytest.raises(ModelLoadError, match="is not a model folder"):
        calibrate_thresholds(str(tmp_path), str(data))
    # What govtopic pretrain writes: a masked-language model, to fine-tune before it can tag anything.
    from transformers import BertConfig, BertForMaskedLM

    from conftest import TOKENIZER_DIR

    mlm = tmp_path / "dapt"
    BertForMaskedLM(
        BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(mlm)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (mlm / name).write_bytes((TOKENIZER_DIR / name).read_bytes())
    with pytest.raises(ModelLoadError, match="pre-trained language model .*fine-tune it first"):
        TopicClassifier(mlm)


def test_a_missing_text_column_names_the_fix_evaluate_can_take(tiny_model_dir, tmp_path):
    from govtopic.data import DataError

    data = tmp_path / "portal.csv"
    data.write_text("id,body,label\na,城市规划,城乡建设、环境保护\\城市规划\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        evaluate(tiny_model_dir, data, tmp_path / "ev", split=None, baseline=False)
    message = str(info.value)
    assert "no column 'text'" in message and "rename the file's column to 'text'" in message
    assert "in the config" not in message  # evaluate takes no config


def test_a_label_map_that_reads_a_spelling_otherwise_than_the_model_is_logged(tiny_model_copy, tmp_path, caplog):
    from govtopic.labels import LabelMap, LabelScheme, Taxonomy
    from test_record import edit_settings

    taxonomy = Taxonomy({"城乡建设、环境保护": ["城市规划"], "公安、安全、司法": ["司法"]})
    learnt = LabelMap({"城规": "城乡建设、环境保护\\城市规划"}, version="m1")
    edit_settings(tiny_model_copy, label_scheme=LabelScheme(taxonomy, learnt).to_dict())
    data = write(tmp_path / "gold.jsonl", [{"text": "法院审判", "label": "城规"}])
    mapping = tmp_path / "map.yaml"
    mapping.write_text("labels:\n  城规: 公安、安全、司法\\司法\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="govtopic.evaluation"):
        result = evaluate(tiny_model_copy, data, tmp_path / "eval", split=None, baseline=False, label_map=mapping)
    assert "reads these differently from the model's own map" in caplog.text and "城规" in caplog.text
    # The file's reading wins for the file: its one row is scored against 公安、安全、司法\司法.
    predicted = TopicClassifier(tiny_model_copy).predict("法院审判")["label"]
    assert result["metrics"]["accuracy"] == float(predicted == "公安、安全、司法\\司法")


def test_thresholds_fitted_on_a_file_read_with_a_label_map_say_so(tiny_model_copy, tmp_path):
    from govtopic.thresholds import calibrate_thresholds

    rows = [{"text": "城市规划建设", "label": "城规"}, {"text": "法院审判", "label": "公安、安全、司法\\司法"}] * 5
    data = write(tmp_path / "portal.jsonl", rows)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("labels:\n  城规: 城乡建设、环境保护\\城市规划\n", encoding="utf-8")
    report = calibrate_thresholds(str(tiny_model_copy), str(data), 0.9, None, label_map=str(mapping))
    assert report["documents"] == 10 and report["data"].endswith(f"; labels read with --label-map {mapping}")
