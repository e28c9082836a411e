"""Corrections as training sources: a Label Studio export or an id + label table relabels documents by id."""

import json

import pytest

from conftest import TAXONOMY, synthetic_rows
from govtopic.config import DataConfig, SourceConfig
from govtopic.data import DataError, load_labelled

HEALTH, LAW = "卫生、体育\\卫生", "公安、安全、司法\\司法"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _export(path, tasks):
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _task(doc_id, choices, text="", cancelled=False, when="2026-01-02T00:00:00"):
    result = [{"from_name": tag, "to_name": "text", "type": "choices", "value": {"choices": [c]}} for tag, c in choices]
    annotation = {"result": result, "was_cancelled": cancelled, "updated_at": when}
    return {"id": 1, "data": {"doc_id": doc_id, "title": "", "text": text}, "annotations": [annotation]}


def _load(tmp_path, *extra):
    base = _jsonl(tmp_path / "base.jsonl", synthetic_rows(60))
    sources = [SourceConfig(name="base", file=base), *extra]
    data = load_labelled(DataConfig(sources=sources, taxonomy=str(TAXONOMY)), None, 0)
    everything = {}
    for split in ("train", "validation", "test"):
        part = getattr(data, split)
        for i, label in zip(part.ids, part.labels):
            everything[i] = (split, label)
    return data, everything


def test_a_label_studio_export_relabels_documents_and_they_keep_their_split(tmp_path):
    _, before = _load(tmp_path)
    tasks = [
        _task("s0", [("l1", "卫生、体育"), ("l2_3", HEALTH)]),  # s0 is a test document
        _task("s1", [("l1", "公安、安全、司法"), ("l2_0", HEALTH), ("l2_1", LAW)]),  # switched first level
        _task("new1", [("l1", "卫生、体育"), ("l2_3", HEALTH)], text="医院医疗卫生工作。" * 5),
        _task("s2", [("l1", "卫生、体育")], cancelled=True),  # cancelled: not a correction
    ]
    export = SourceConfig(name="reviewed", file=_export(tmp_path / "export.json", tasks))
    data, after = _load(tmp_path, export)
    assert after["s0"] == (before["s0"][0], HEALTH) and before["s0"][0] == "test"
    assert after["s1"][1] == LAW
    assert after["s2"] == before["s2"]
    assert "new1" in after and after["new1"][1] == HEALTH  # a new document with text joins the data
    assert data.skipped["corrections_applied"] == 2 and data.skipped["corrections_unannotated"] == 1


def test_a_later_id_label_table_wins_over_an_earlier_one(tmp_path):
    first = SourceConfig(name="c1", file=_jsonl(tmp_path / "c1.jsonl", [{"id": "s3", "label": LAW}]))
    second = SourceConfig(name="c2", file=_jsonl(tmp_path / "c2.jsonl", [{"id": "s3", "label": "卫生、体育-卫生"}]))
    data, after = _load(tmp_path, first, second)
    assert after["s3"][1] == HEALTH
    assert data.skipped["corrections_applied"] == 2


def test_conflicting_labels_for_one_id_in_one_file_are_an_error_with_counts(tmp_path):
    rows = [{"id": "s4", "label": LAW}, {"id": "s4", "label": HEALTH}, {"id": "s5", "label": LAW}]
    rows += [{"id": "s5", "label": LAW}, {"id": "s6", "label": LAW}, {"id": "s6", "label": HEALTH}]
    bad = SourceConfig(name="bad", file=_jsonl(tmp_path / "bad.jsonl", rows))
    with pytest.raises(DataError, match=r"2 document id\(s\) given different labels in the same file \(4 rows\)"):
        _load(tmp_path, bad)


def test_corrections_for_unknown_ids_without_text_are_counted_not_trained(tmp_path):
    stray = SourceConfig(name="stray", file=_jsonl(tmp_path / "stray.jsonl", [{"id": "nope", "label": LAW}]))
    data, after = _load(tmp_path, stray)
    assert "nope" not in after and data.skipped["corrections_unmatched"] == 1


def test_a_correction_outside_the_taxonomy_is_an_error_naming_it(tmp_path):
    bad = SourceConfig(name="bad", file=_jsonl(tmp_path / "bad.jsonl", [{"id": "s0", "label": "不存在\\类别"}]))
    with pytest.raises(DataError, match="不存在"):
        _load(tmp_path, bad)


def test_the_bundled_regulation_corrections_relabel_what_the_keyword_rules_got_wrong():
    """data/regulations_corrections.jsonl (read by the quickstart and the official recipe) names regulations of
    the bundled sample and moves every 优化营商环境条例 out of environmental protection, where the title-keyword
    rule put it for the 环境 in 营商环境 (business environment)."""
    from conftest import ROOT

    corrections = ROOT / "data" / "regulations_corrections.jsonl"
    sources = [
        SourceConfig(name="regulations", file=str(ROOT / "data" / "regulations_sample.jsonl.gz")),
        SourceConfig(name="corrections", file=str(corrections)),
    ]
    data = load_labelled(DataConfig(sources=sources, taxonomy=str(TAXONOMY)), None, 0)
    wanted = {json.loads(line)["id"] for line in corrections.read_text(encoding="utf-8").splitlines()}
    assert data.skipped["corrections_applied"] == len(wanted) and not data.skipped.get("corrections_unmatched")
    titles = {}
    for split in ("train", "validation", "test"):
        part = getattr(data, split)
        titles.update({t: y for t, y in zip(part.titles, part.labels) if "营商环境" in t})
    assert len(titles) >= len(wanted)
    assert all(y.startswith("国民经济管理、国有资产监管") for y in titles.values()), titles


def test_evaluate_scores_against_corrected_labels_when_given_the_corrections_file(tiny_model_dir, tmp_path, caplog):
    """A model trained with corrections is scored against them too: without the file the wrong published
    labels count as the model's errors; a file that is not corrections is refused, never added as data."""
    from conftest import with_ngram_channel
    from govtopic.evaluation import evaluate

    model = with_ngram_channel(tiny_model_dir, tmp_path / "model", weight=50.0)
    rows = [r for r in synthetic_rows(60) if r["split"] == "test"]
    wrong = [r["id"] for r in rows[:4]]
    published = [{**r, "label": "其他"} if r["id"] in wrong else r for r in rows]
    data = _jsonl(tmp_path / "published.jsonl", published)
    fixes = _jsonl(tmp_path / "fixes.jsonl", [{"id": r["id"], "label": r["label"]} for r in rows[:4]])

    plain = evaluate(model, data, tmp_path / "plain", split=None, baseline=False)["metrics"]
    with caplog.at_level("INFO", logger="govtopic.data"):
        fixed = evaluate(model, data, tmp_path / "fixed", split=None, baseline=False, corrections=[fixes])["metrics"]
    assert plain["l1_accuracy"] == pytest.approx(1 - len(wrong) / len(rows))
    assert fixed["l1_accuracy"] == 1.0
    assert "4 label(s) corrected" in caplog.text and "4 changed" in caplog.text
    assert "fixes.jsonl" in (tmp_path / "fixed" / "report.md").read_text(encoding="utf-8")

    with pytest.raises(DataError, match="not a corrections file"):
        evaluate(model, data, tmp_path / "bad", split=None, baseline=False, corrections=[data])
    with pytest.raises(DataError, match=r"corrections file\(s\) not found: .*nope\.jsonl.*--corrections"):
        evaluate(model, data, tmp_path / "bad", split=None, baseline=False, corrections=[tmp_path / "nope.jsonl"])
