"""Labels in every spelling portals use, taxonomy checks, data files and splits."""

import gzip
import json
from pathlib import Path

import pytest

from conftest import SAMPLE, TAXONOMY
from govtopic.config import DataConfig
from govtopic.data import DataError, load_labelled
from govtopic.labels import Taxonomy, hierarchical_decode, parse_label
from govtopic.tables import read_table


@pytest.mark.parametrize(
    "raw",
    [
        "城乡建设、环境保护\\城市规划",
        "城乡建设、环境保护-城市规划",
        "城乡建设、环境保护/城市规划",
        " 城乡建设、环境保护 / 城市规划 ",
    ],
)
def test_label_spellings_are_one_label(raw):
    assert parse_label(raw) == "城乡建设、环境保护\\城市规划"


def test_first_level_only_and_missing_labels():
    assert parse_label("其他") == "其他"
    assert parse_label(None) is None and parse_label("") is None and parse_label("null") is None


def test_taxonomy_names_the_problem():
    tax = Taxonomy.load(TAXONOMY)
    assert tax.n_first == 22 and tax.n_second == 121
    assert tax.problem("城乡建设、环境保护\\城市规划") is None
    assert "not in the taxonomy" in tax.problem("城乡建设\\城市规划")
    assert "not under '城乡建设、环境保护'" in tax.problem("城乡建设、环境保护\\海关")


def test_hierarchical_decode_keeps_levels_consistent():
    import numpy as np

    labels = ["A\\x", "B\\y", "B\\z"]
    # Full-label argmax is A\x (0.4) but B's children sum to 0.6: the answer is B's best child.
    probs = np.array([[0.4, 0.35, 0.25]])
    idx, names, l1p = hierarchical_decode(probs, labels)
    assert labels[idx[0]] == "B\\y"
    assert names == ["A", "B"] and l1p[0].tolist() == pytest.approx([0.4, 0.6])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(n: int, labels=("财政、金融、审计\\税务", "卫生、体育\\卫生")) -> list[dict]:
    return [{"id": f"d{i}", "title": f"t{i}", "text": f"正文{i}", "label": labels[i % len(labels)]} for i in range(n)]


def test_label_outside_taxonomy_names_the_row(tmp_path):
    data = rows(10)
    data[7]["label"] = "财政金融\\税务"
    cfg = DataConfig(train_file=str(write_jsonl(tmp_path / "d.jsonl", data)), taxonomy=str(TAXONOMY))
    with pytest.raises(DataError, match=r"row 8 \(id d7\): label '财政金融\\\\税务'"):
        load_labelled(cfg, None, 0)


def test_missing_text_column_names_setting(tmp_path):
    cfg = DataConfig(train_file=str(write_jsonl(tmp_path / "d.jsonl", rows(10))), text_column="body")
    with pytest.raises(DataError, match="no column 'body' \\(set by data.text_column\\)"):
        load_labelled(cfg, None, 0)


def test_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "其他"}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        read_table(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])  # blank lines are empty too, not a datasets message
def test_empty_file_is_an_error(tmp_path, content):
    (tmp_path / "e.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="the file is empty"):
        read_table(tmp_path / "e.jsonl")


def test_csv_and_split_column(tmp_path):
    import csv

    path = tmp_path / "d.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["body", "topic", "part"])
        w.writeheader()
        for i in range(12):
            w.writerow({"body": f"文{i}", "topic": ["其他", "国防"][i % 2], "part": "test" if i < 4 else "train"})
    cfg = DataConfig(
        train_file=str(path),
        text_column="body",
        label_column="topic",
        split_column="part",
        title_column=None,
        validation_from_train=0.25,
    )
    data = load_labelled(cfg, None, 0)
    assert len(data.test) == 4 and len(data.train) == 6 and len(data.validation) == 2
    assert data.label_names == ["其他", "国防"]


def test_stratified_split_with_a_singleton_class(tmp_path):
    data = rows(40) + [{"id": "x", "title": "x", "text": "孤例", "label": "国防"}]
    cfg = DataConfig(train_file=str(write_jsonl(tmp_path / "d.jsonl", data)), split_column=None)
    split = load_labelled(cfg, None, 0)
    assert len(split.train) + len(split.validation) + len(split.test) == 41
    assert "国防" in split.train.labels  # the single example stays in training, not lost


def test_bundled_sample_keeps_the_fixed_split():
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    assert {"id", "text", "label", "split"} <= set(first)
    data = load_labelled(DataConfig(train_file=str(SAMPLE), taxonomy=str(TAXONOMY)), None, 42)
    assert len(data.test) == 568  # the labelled test rows of the shared data
    assert data.skipped["unlabelled"] == 366


def test_separate_test_file_never_leaks_into_training(tmp_path):
    data = rows(30)
    for i, r in enumerate(data):
        r["split"] = "test" if i % 3 == 0 else "train"
    path = write_jsonl(tmp_path / "d.jsonl", data)
    cfg = DataConfig(train_file=str(path), test_file=str(path), validation_from_train=0.0)
    split = load_labelled(cfg, None, 0)
    assert len(split.test) == 10  # the test file's own test rows
    assert not set(split.train.texts) & set(split.test.texts)
    assert split.skipped["train_rows_also_in_test_file"] == 10


def test_gb18030_training_file_names_the_fix(tmp_path):
    path = tmp_path / "gb.jsonl"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows(5)).encode("gb18030"))
    with pytest.raises(DataError, match="not UTF-8.*iconv -f GB18030"):
        read_table(path)


def test_missing_label_column_names_setting(tmp_path):
    data = [{k: v for k, v in r.items() if k != "label"} for r in rows(6)]
    cfg = DataConfig(train_file=str(write_jsonl(tmp_path / "d.jsonl", data)))
    with pytest.raises(DataError, match="no column 'label' \\(set by data.label_column\\)"):
        load_labelled(cfg, None, 0)


def _source_file(tmp_path, rows):
    import json

    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _two_topics(n: int) -> list[dict]:
    """``n`` city-planning rows and ``n`` justice rows, ids d0.. and s0.."""
    rows = [{"id": f"d{i}", "text": f"城市规划{i}", "label": "城乡建设、环境保护"} for i in range(n)]
    return rows + [{"id": f"s{i}", "text": f"法院司法{i}", "label": "公安、安全、司法"} for i in range(n)]


def _refusal(tmp_path, rows) -> str:
    """The DataError message training's data loading gives for ``rows``."""
    from govtopic.config import DataConfig
    from govtopic.data import DataError, load_labelled

    cfg = DataConfig(train_file=str(_source_file(tmp_path, rows)), taxonomy=None, title_column=None)
    with pytest.raises(DataError) as info:
        load_labelled(cfg, None, 0)
    return str(info.value)


def test_one_document_id_with_two_labels_is_an_error_naming_it(tmp_path):
    rows = [*_two_topics(10), {"id": "d3", "text": "城市规划3", "label": "其他"}]
    message = _refusal(tmp_path, rows)
    assert "1 document id(s) given different labels (id d3: 其他, 城乡建设、环境保护 (rows 4, 21))" in message


def test_a_training_file_of_one_class_is_refused_before_training(tmp_path):
    message = _refusal(tmp_path, _two_topics(20)[:20])  # the city-planning rows alone: one class
    assert "only one class (城乡建设、环境保护); a classifier needs at least two" in message


def test_labels_dropped_as_unknown_are_counted_once(tmp_path):
    from govtopic.config import DataConfig
    from govtopic.data import load_labelled

    rows = _two_topics(10) + [{"id": f"u{i}", "text": f"未知{i}", "label": "不存在的类"} for i in range(3)]
    rows += [{"id": f"n{i}", "text": f"无标签{i}", "label": None} for i in range(2)]
    cfg = DataConfig(
        train_file=str(_source_file(tmp_path, rows)),
        taxonomy="data/taxonomy.yaml",
        title_column=None,
        unknown_labels="drop",
    )
    assert load_labelled(cfg, None, 0).skipped == {"unknown_labels": 3, "unlabelled": 2}


def test_a_train_file_of_titles_alone_is_read_with_text_column_null(tmp_path):
    from govtopic.config import load_config
    from govtopic.data import load_labelled

    rows = [{"id": f"a{i}", "title": f"关于城市规划的通知{i}", "label": "城乡建设、环境保护"} for i in range(15)]
    rows += [{"id": f"b{i}", "title": f"关于法院审判工作的意见{i}", "label": "公安、安全、司法"} for i in range(15)]
    path = _source_file(tmp_path, rows)
    cfg = load_config(None, [f"data.train_file={path}", "data.text_column=null", "data.taxonomy=data/taxonomy.yaml"])
    data = load_labelled(cfg.data, cfg.normalize, 0)
    assert len(data.train) + len(data.validation) + len(data.test) == 30
    assert all(t.startswith("关于") for t in data.train.titles) and set(data.train.texts) == {""}
