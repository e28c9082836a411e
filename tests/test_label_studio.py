"""The review queue: JSONL and Label Studio files, least certain first, and an export read back as corrections."""

import json
import xml.etree.ElementTree as ET

import pytest

from conftest import LABELS, TAXONOMY
from govtopic.cli import main
from govtopic.config import DataConfig, SourceConfig
from govtopic.corrections import read_export
from govtopic.evaluation import update_record
from govtopic.labelstudio import labelling_config, taxonomy_classes

DOCS = ["关于加强城市规划管理的通知。" * 3, "法院审理案件。", "医院卫生监督工作。" * 8, "其他事项", "", "环境监测"]


@pytest.fixture
def queue(tiny_model_copy, tmp_path):
    # Thresholds only the first level of 城乡建设 reaches: everything else needs a person.
    th = {"precision": 0.95, "margin": 0.0, "l1": {"城乡建设、环境保护": 0.0}, "full": {}}
    update_record(tiny_model_copy, thresholds=th)
    inbox = tmp_path / "inbox.jsonl"
    rows = [{"id": f"d{i}", "title": "", "text": t} for i, t in enumerate(DOCS)]
    inbox.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "queue"
    code = main(["review", str(tiny_model_copy), str(inbox), "--output", str(out), "--taxonomy", str(TAXONOMY)])
    assert code == 0
    return out


def test_queue_lists_documents_least_certain_first_with_alternatives_and_why(queue):
    items = [json.loads(x) for x in (queue / "queue.jsonl").read_text(encoding="utf-8").splitlines()]
    ranked = [x for x in items if x["rank"] is not None]
    assert len(ranked) == 5 and [x["rank"] for x in ranked] == [1, 2, 3, 4, 5]
    assert {x["doc_id"] for x in items} == {f"d{i}" for i in range(6)}
    empty = next(x for x in items if x["doc_id"] == "d4")
    assert empty["rank"] is None and empty["why"].startswith("not read")  # empty: listed last, not ranked
    for x in ranked:
        assert x["needs_review"] is True and x["why"] and x["evidence"]["text"] is not None
        assert len(x["top_k"]) == 5 and x["review_reason"] in ("second_level_unsure", "class_never_reaches_precision")
        if x["review_reason"] == "second_level_unsure":
            assert x["label"] == "城乡建设、环境保护" and x["label_suggested"] in LABELS[:2]
    gaps = [
        (x["top_k"] if x["review_reason"] == "second_level_unsure" else x["top_k_l1"])[0]["score"]
        - (x["top_k"] if x["review_reason"] == "second_level_unsure" else x["top_k_l1"])[1]["score"]
        for x in ranked
    ]
    assert gaps == sorted(gaps)


def test_label_studio_config_shows_second_levels_per_first_level(queue):
    root = ET.fromstring((queue / "label_studio_config.xml").read_text(encoding="utf-8"))
    choices = {c.get("name"): c for c in root.iter("Choices")}
    first = [c.get("value") for c in choices["l1"]]
    classes = taxonomy_classes(LABELS, str(TAXONOMY))
    assert first == list(classes) and len(first) == 22
    second = [c for name, c in choices.items() if name != "l1"]
    assert len(second) == sum(1 for v in classes.values() if v)
    for c in second:
        assert c.get("visibleWhen") == "choice-selected" and c.get("whenTagName") == "l1"
        parent = c.get("whenChoiceValue")
        assert all(ch.get("alias") == f"{parent}\\{ch.get('value')}" for ch in c)
    tasks = json.loads((queue / "label_studio_tasks.json").read_text(encoding="utf-8"))
    assert len(tasks) == 5 and all(t["data"]["text"] and t["data"]["why"] for t in tasks)
    for t in tasks:  # pre-annotations use the config's tag names and values
        for part in t["predictions"][0]["result"]:
            tag = choices[part["from_name"]]
            values = {ch.get("alias") or ch.get("value") for ch in tag}
            assert part["value"]["choices"][0] in values


def test_an_annotated_export_of_the_queue_is_a_training_source(queue, tmp_path):
    from govtopic.data import read_source

    tasks = json.loads((queue / "label_studio_tasks.json").read_text(encoding="utf-8"))
    for t in tasks:  # a reviewer accepts the model's guess, as Label Studio exports it
        t["annotations"] = [{"result": t["predictions"][0]["result"], "was_cancelled": False}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    rows = read_export(str(export))
    assert [r["label"] for r in rows] == [t["data"]["model_label"] for t in tasks]
    source = SourceConfig(name="reviewed", file=str(export))
    read = read_source(source, DataConfig(sources=[source], taxonomy=str(TAXONOMY)), {})
    assert len(read) == 5 and all(r["_correction"] and r["_text"] for r in read)


def test_review_without_thresholds_says_how_to_fit_them(tiny_model_copy, tmp_path, capsys):
    inbox = tmp_path / "a.txt"
    inbox.write_text("法院审理案件。", encoding="utf-8")
    assert main(["review", str(tiny_model_copy), str(inbox), "--output", str(tmp_path / "q")]) == 2
    assert "govtopic calibrate-thresholds" in capsys.readouterr().err


def test_labelling_config_escapes_names():
    xml = labelling_config({'A&B "x"': ["<c>"]})
    root = ET.fromstring(xml)
    assert [c.get("value") for c in root.iter("Choice")] == ['A&B "x"', "<c>"]
