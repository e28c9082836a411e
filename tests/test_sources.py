"""Learning from the labels portals publish: several sources, labels of either depth, label spellings, titles,
and the n-gram channel."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, TAXONOMY, TINY_MODEL, TOPIC_WORDS, synthetic_rows
from govtopic.config import from_dict
from govtopic.data import DataError, load_labelled
from govtopic.labels import LabelMap, LabelScheme, Taxonomy
from govtopic.losses import MixedDepthLoss, TargetTable, set_loss

LABEL_MAP = ROOT / "data" / "label_map.yaml"
OFFICIAL = ROOT / "data" / "official.jsonl.gz"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def data_config(**data) -> object:
    return from_dict({"data": {"taxonomy": str(TAXONOMY), **data}}).data


# ------------------------------------------------------------------ the loss for rows of either depth
def test_first_level_row_moves_mass_into_its_level_without_favouring_a_child():
    labels = ["工业、交通\\公路", "工业、交通\\其他", "卫生、体育\\卫生"]
    mask = torch.zeros(1, 3, dtype=torch.bool)
    mask[0, LabelScheme().targets("工业、交通", labels)] = True
    logits = torch.tensor([[0.1, 0.1, 0.9]], requires_grad=True)
    set_loss(logits, mask).sum().backward()
    p = torch.softmax(logits.detach(), -1)[0]
    step = torch.softmax(logits.detach() - logits.grad, -1)[0]
    assert step[:2].sum() > p[:2].sum() and step[2] < p[2]  # the level gains what the other class loses
    assert torch.isclose(step[0], step[1])  # and neither child gains more than the other
    # the loss does not care how the level's mass is shared among its children
    a = set_loss(torch.tensor([[2.0, -1.0, 0.5]]), mask)
    b = set_loss(torch.tensor([[-1.0, 2.0, 0.5]]), mask)
    assert torch.isclose(a, b)


def test_full_label_row_is_plain_cross_entropy_and_weights_scale_the_loss():
    logits = torch.randn(4, 5)
    table = TargetTable(5)
    idx = torch.tensor([table.index([2]), table.index([0]), table.index([2], 2.0), table.index([4])])
    loss = MixedDepthLoss(table)({"logits": logits}, idx)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([2, 0, 2, 4]), reduction="none")
    assert torch.isclose(loss, (ce * torch.tensor([1.0, 1.0, 2.0, 1.0])).mean(), atol=1e-6)


# ------------------------------------------------------------------ label schemes
def test_published_spellings_map_to_the_taxonomy():
    scheme = LabelScheme(Taxonomy.load(TAXONOMY), LabelMap.load(str(LABEL_MAP)))
    assert scheme.read(["其他\\其他", "其他/其他", "公路", "工业、交通-公路", "卫生、体育"]) == [
        "其他",
        "其他",
        "工业、交通\\公路",
        "工业、交通\\公路",
        "卫生、体育",
    ]
    assert scheme.label_map.version == "2026-11-1"


def test_unknown_spellings_are_listed_with_counts_and_the_fix(tmp_path):
    rows = [
        {"id": f"r{i}", "title": f"标题{i}", "text": "正文", "label": lab}
        for i, lab in enumerate(["公路", "公路", "其他\\其他", "卫生、体育\\卫生"] * 3)
    ]
    cfg = data_config(train_file=str(write_jsonl(tmp_path / "d.jsonl", rows)))
    with pytest.raises(DataError) as err:
        load_labelled(cfg, None, 0)
    message = str(err.value)
    assert "'公路' (6 row(s))" in message and "'其他\\\\其他' (3 row(s))" in message
    assert "data.label_map" in message and "unknown_labels: drop" in message


def test_drop_policy_counts_what_it_drops(tmp_path):
    rows = [
        {"id": f"r{i}", "title": f"标题{i}", "text": "正文", "label": lab, "split": "train"}
        for i, lab in enumerate(["公路", "卫生、体育\\卫生", "国防\\国防建设", "卫生、体育\\卫生"] * 3)
    ]
    cfg = data_config(train_file=str(write_jsonl(tmp_path / "d.jsonl", rows)), unknown_labels="drop")
    data = load_labelled(cfg, None, 0)
    assert data.skipped["unknown_labels"] == 3
    assert "公路" not in data.train.labels


def test_a_mapping_outside_the_taxonomy_is_an_error(tmp_path):
    rows = [{"title": "t", "text": "x", "label": "公路"}] * 4
    cfg = data_config(train_file=str(write_jsonl(tmp_path / "d.jsonl", rows)), label_map={"公路": "交通\\公路"})
    with pytest.raises(DataError, match="maps '公路' to '交通\\\\\\\\公路'.*not in the taxonomy"):
        load_labelled(cfg, None, 0)


@pytest.mark.parametrize(
    ("rows", "settings", "match"),
    [
        ([{"title": "t", "text": "x", "label": 3}], {}, r"row 1: label 3 is int.*topic names"),
        ([{"title": 5, "text": "x", "label": "其他"}], {}, r"row 1: title_column column 'title' holds int"),
        ([{"text": "x", "label": "其他"}], {}, r"no column 'title' \(set by data.sources\[\].title_column\)"),
        ([{"title": "t", "text": "x", "topic": "其他"}], {}, r"no column 'label'"),
        ([{"title": "", "text": "", "label": "其他"}], {}, r"no usable rows"),
    ],
)
def test_bad_sources_name_the_file_row_or_key(tmp_path, rows, settings, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows * 3)
    cfg = data_config(sources=[{"file": str(path), **settings}])
    with pytest.raises(DataError, match=match) as err:
        load_labelled(cfg, None, 0)
    assert "bad.jsonl" in str(err.value)


def test_two_sources_one_split_with_every_source_in_test():
    cfg = data_config(
        label_map=str(LABEL_MAP),
        sources=[
            {"name": "official", "file": str(OFFICIAL), "weight": 2.0},
            {"name": "regulations", "file": str(ROOT / "data" / "regulations_sample.jsonl.gz")},
        ],
    )
    data = load_labelled(cfg, None, 0)
    assert set(data.test.sources) == {"official", "regulations"}
    assert data.test.sources.count("official") == 417  # the fixed test split of official
    # Hebei's title-only rows are documents; their first-level labels stay first-level
    hebei = [i for i, ident in enumerate(data.train.ids) if ident.startswith("hebei-")]
    assert all(not data.train.texts[i] and data.train.titles[i] for i in hebei)
    assert hebei and all("\\" not in data.train.labels[i] or data.train.labels[i].endswith("公路") for i in hebei)
    assert {data.train.weights[i] for i in hebei} == {2.0}
    # a first-level label of a level with children is not a class of its own; 其他 (no children) is
    assert "工业、交通" not in data.label_names and "其他" in data.label_names


# ------------------------------------------------------------------ titles
def test_title_keeps_its_weight_on_a_long_body(tiny_model_dir):
    from govtopic.predict import TopicClassifier
    from govtopic.titles import encode_documents

    clf = TopicClassifier(tiny_model_dir)
    body = "关于城市规划建设管理的若干意见。" * 400  # dozens of windows
    title = "关于加强医院卫生管理的通知"
    ld = dataclasses.replace(clf.long_doc, max_windows=64)  # every window read: the title is one among many
    logits, info = clf.document_logits([body], ld, 16, titles=[title])
    windows, is_title = encode_documents(clf.tokenizer, [body], [title], ld)
    rows = clf.window_logits(windows, 16)
    assert info[0]["windows"] > 20 and is_title.sum() == 1
    w = ld.title_weight
    expected = w * rows[is_title][0] + (1 - w) * rows[~is_title].mean(axis=0)
    np.testing.assert_allclose(logits[0], expected, rtol=1e-5, atol=1e-5)


def test_documents_with_title_body_or_both(tiny_model_dir):
    from govtopic import predict

    out = predict(
        [
            {"title": "关于加强医院卫生管理的通知"},
            {"text": "医院应当加强管理。"},
            {"title": "通知", "text": "医院。"},
            "医院。",
        ],
        model=tiny_model_dir,
    )
    assert [r["windows"] for r in out] == [1, 1, 2, 1]
    assert all(r["label"] for r in out)
    one = predict({"title": "关于加强医院卫生管理的通知", "text": ""}, model=tiny_model_dir)
    assert one == out[0]
    evidence = predict(
        {"title": "关于加强医院卫生管理的通知", "text": "医院。"}, model=tiny_model_dir, return_evidence=True
    )["evidence"]
    assert evidence["in"] in ("title", "text") and evidence["text"]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"title": 3, "text": "x"}, "'title' is int"),
        ({"tittle": "x"}, "unknown key"),
    ],
)
def test_bad_documents_name_the_problem(tiny_model_dir, bad, match):
    from govtopic import predict

    with pytest.raises(TypeError, match=match):
        predict([bad], model=tiny_model_dir)


def test_dataframe_and_bad_numbers_are_errors_that_name_the_fix(tiny_model_dir):
    pd = pytest.importorskip("pandas")
    from govtopic import predict

    with pytest.raises(TypeError, match=r"DataFrame.*df\['text'\]"):
        predict(pd.DataFrame({"text": ["医院"]}), model=tiny_model_dir)
    with pytest.raises(ValueError, match="batch_size.*2.5"):
        predict(["医院"], model=tiny_model_dir, batch_size=2.5)
    with pytest.raises(ValueError, match="top_k.*'3'"):
        predict(["医院"], model=tiny_model_dir, top_k="3")


# ------------------------------------------------------------------ the n-gram channel
def test_ngram_channel_round_trips_through_the_folder(tmp_path):
    from govtopic.ngram import NgramChannel

    rows = synthetic_rows(60)
    channel = NgramChannel().fit([r["text"] for r in rows], [r["label"] for r in rows])
    channel.save(tmp_path)
    loaded = NgramChannel.load(tmp_path)
    texts = ["医院 医疗 卫生", "法院 审判"]
    np.testing.assert_allclose(loaded.scores(texts), channel.scores(texts), rtol=1e-5, atol=1e-5)
    assert loaded.classes == sorted({r["label"].split("\\")[0] for r in rows})
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.bin"))


def test_damaged_ngram_channel_is_a_load_error(tiny_model_copy):
    from govtopic.modeling import ModelLoadError
    from govtopic.ngram import VOCAB_FILE, WEIGHTS_FILE, NgramChannel
    from govtopic.predict import TopicClassifier

    rows = synthetic_rows(30)
    NgramChannel().fit([r["text"] for r in rows], [r["label"] for r in rows]).save(tiny_model_copy)
    (tiny_model_copy / VOCAB_FILE).write_text("{", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="n-gram channel"):
        TopicClassifier(tiny_model_copy)
    (tiny_model_copy / VOCAB_FILE).unlink()
    (tiny_model_copy / WEIGHTS_FILE).unlink()
    config = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))
    config["govtopic"]["ngram_weight"] = 2.0
    (tiny_model_copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="no ngram_channel.safetensors"):
        TopicClassifier(tiny_model_copy)


@pytest.mark.slow
def test_two_sources_train_with_titles_ngram_channel_and_per_source_report(tmp_path):
    """Title-only first-level rows and body-only full-label rows train one model; the report gives every
    figure per source, and the n-gram channel (chosen on validation) makes an easy signal near perfect."""
    from govtopic import predict
    from govtopic.training import train

    titled = []
    for i, r in enumerate(synthetic_rows(150, seed=1)):
        words = TOPIC_WORDS[r["label"]].split()
        titled.append(
            {
                "id": f"t{i}",
                "title": f"关于{words[i % 6]}{words[(i + 1) % 6]}工作的通知",
                "text": "",
                "label": r["label"].split("\\")[0],
                "split": r["split"],
            }
        )
    bodies = [{**r, "title": None} for r in synthetic_rows(150)]
    values = {
        "output_dir": str(tmp_path / "run"),
        "model": {**TINY_MODEL, "pooling": "mean", "ngram_channel": True},
        "data": {
            "taxonomy": str(TAXONOMY),
            "sources": [
                {"name": "titles", "file": str(write_jsonl(tmp_path / "titles.jsonl", titled)), "text_column": None},
                {"name": "bodies", "file": str(write_jsonl(tmp_path / "bodies.jsonl", bodies))},
            ],
        },
        "long_doc": {"strategy": "chunks", "max_length": 64, "stride": 8, "train_max_windows": 2},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 3.0e-3},
        "eval": {"baseline": True, "calibrate": True},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    from govtopic.config import load_config

    model_dir = train(load_config(path))
    report = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text(encoding="utf-8"))
    per_source = report["metrics"]["per_source"]
    assert set(per_source) == {"titles", "bodies"}
    assert per_source["titles"]["n_full"] == 0 and per_source["bodies"]["n_full"] == per_source["bodies"]["n"]
    assert set(report["baseline"]["per_source"]) == {"titles", "bodies"}
    assert report["metrics"]["l1_accuracy"] >= 0.9
    assert (model_dir / "ngram_channel.safetensors").is_file()
    record = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["govtopic"]
    assert record["ngram_weight"] >= 0 and record["long_doc"]["title"] == "window"
    report_md = (tmp_path / "run" / "eval" / "report.md").read_text(encoding="utf-8")
    assert "# Per source" in report_md.replace("##", "#")
    assert "## N-gram channel" in report_md and "weight of the full-label block" in report_md
    assert record["ngram_full_weight"] >= 0
    out = predict({"title": "关于医院医疗工作的通知"}, model=model_dir)
    assert out["label_l1"] == "卫生、体育"


def test_cli_reads_titles_by_the_same_rule_as_predict(tiny_model_dir, tmp_path):
    from govtopic import predict
    from govtopic.batch import predict_files

    docs = [
        {"id": "a", "title": "关于加强医院卫生管理的通知", "text": "医院应当加强管理。"},
        {"id": "b", "title": "关于法院审判工作的意见", "text": ""},
        {"id": "c", "text": "城市规划建设。"},
    ]
    table = write_jsonl(tmp_path / "docs.jsonl", docs)
    predict_files([str(table)], str(tiny_model_dir), tmp_path / "out.jsonl", title_column="title", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = predict([{k: v for k, v in d.items() if k != "id"} for d in docs], model=tiny_model_dir)
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    assert [r["score"] for r in rows] == pytest.approx([e["score"] for e in expected], abs=1e-6)
    assert [r["windows"] for r in rows] == [2, 1, 1]


def test_gold_labels_outside_the_taxonomy_are_an_error_naming_them():
    from govtopic.data import load_eval_file

    gold = ROOT / "data" / "gold_dev.jsonl"
    with pytest.raises(DataError, match=r"(?s)label '公路' \(1 row\(s\)\).*data.label_map"):
        load_eval_file(gold, data_config(), None, None)
    mapped = load_eval_file(gold, data_config(label_map=str(LABEL_MAP)), None, None)
    assert "工业、交通\\公路" in mapped.labels and len(mapped) == 91
