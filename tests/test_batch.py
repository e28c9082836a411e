"""govtopic predict over files: formats, encodings, unreadable documents, resuming an interrupted run."""

import csv
import json
from pathlib import Path

import pytest

from govtopic.batch import predict_files
from govtopic.inputs import iter_records


def read_jsonl(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("关于加强城市规划管理的通知", encoding="utf-8")
    (folder / "b.txt").write_bytes("关于医院卫生监督的意见".encode("gb18030"))
    (folder / "c.txt").write_bytes(b"\xff\xfe\x00bad \x81")  # neither UTF-8 nor GB18030
    table = tmp_path / "t.jsonl"
    table.write_text(
        '{"id": "x1", "text": "法院审理案件"}\n{"id": "x2", "text": \n{"id": "x3", "body": "无正文"}\n'
        '{"id": "x4", "text": "国防动员"}\n',
        encoding="utf-8",
    )
    with open(tmp_path / "t.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text"])
        w.writeheader()
        w.writerow({"id": "c1", "text": "环境保护条例"})
    return folder, table, tmp_path / "t.csv"


def test_every_format_and_encoding_is_read(inputs):
    folder, table, table_csv = inputs
    recs = list(iter_records([str(folder), str(table), str(table_csv)]))
    texts = {r.source.rsplit("/", 1)[-1]: r for r in recs}
    assert texts["b.txt"].text == "关于医院卫生监督的意见"  # GB18030 decoded
    assert "not UTF-8, GB18030 or Big5" in texts["c.txt"].error
    assert "malformed JSON" in texts["t.jsonl:2"].error
    assert "no 'text' column" in texts["t.jsonl:3"].error
    assert texts["t.jsonl:4"].text == "国防动员" and texts["t.csv:2"].id == "c1"


def test_errors_go_to_a_file_and_the_rest_is_predicted(inputs, tiny_model_dir, tmp_path):
    folder, table, table_csv = inputs
    out = tmp_path / "out" / "pred.jsonl"
    counts = predict_files([str(folder), str(table), str(table_csv)], str(tiny_model_dir), out, progress=False)
    assert counts["predicted"] == 5 and counts["errors"] == 3
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a", "b", "x1", "x4", "c1"]  # input order kept
    errors = read_jsonl(out.with_name("pred.errors.jsonl"))
    assert {e["source"].rsplit("/", 1)[-1] for e in errors} == {"c.txt", "t.jsonl:2", "t.jsonl:3"}


def test_resume_neither_redoes_nor_duplicates(inputs, tiny_model_dir, tmp_path):
    folder, table, _ = inputs
    out = tmp_path / "pred.jsonl"
    predict_files([str(folder), str(table)], str(tiny_model_dir), out, progress=False)
    full = out.read_text(encoding="utf-8").splitlines()
    # Simulate a crash: only the first result survived, and the second was cut mid-line.
    out.write_text(full[0] + "\n" + full[1][:25], encoding="utf-8")
    counts = predict_files([str(folder), str(table)], str(tiny_model_dir), out, progress=False)
    assert counts["skipped_done"] == 1 + 3  # one finished result, three recorded errors
    assert counts["predicted"] == 3
    again = out.read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(x)["source"] for x in again) == sorted(json.loads(x)["source"] for x in full)
    assert len(again) == len(full)


def test_a_rerun_naming_the_inputs_another_way_resumes_without_duplicates(
    inputs, tiny_model_dir, tmp_path, monkeypatch
):
    """The first run is given relative paths, the rerun absolute ones with a trailing slash: nothing is predicted
    twice and no line is written twice."""
    folder, table, _ = inputs
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pred.jsonl"
    first = predict_files([folder.name, table.name], str(tiny_model_dir), out, progress=False)
    lines = out.read_text(encoding="utf-8").splitlines()
    again = predict_files([str(folder) + "/", str(table)], str(tiny_model_dir), out, progress=False)
    assert again["predicted"] == 0 and again["skipped_done"] == first["predicted"] + first["errors"]
    assert out.read_text(encoding="utf-8").splitlines() == lines


def test_no_resume_starts_over(inputs, tiny_model_dir, tmp_path):
    folder, _, _ = inputs
    out = tmp_path / "pred.jsonl"
    predict_files([str(folder)], str(tiny_model_dir), out, progress=False)
    predict_files([str(folder)], str(tiny_model_dir), out, resume=False, progress=False)
    assert len(read_jsonl(out)) == 2


def test_parquet_input(tiny_model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc": ["城市规划", "司法"], "id": ["p1", "p2"]}), tmp_path / "t.parquet")
    out = tmp_path / "p.jsonl"
    counts = predict_files([str(tmp_path / "t.parquet")], str(tiny_model_dir), out, text_column="doc", progress=False)
    assert counts["predicted"] == 2 and [r["id"] for r in read_jsonl(out)] == ["p1", "p2"]


def test_bad_bytes_deep_in_a_csv_are_reported_per_row(tiny_model_dir, tmp_path):
    rows = "".join(f"r{i},城市规划第{i}条\n" for i in range(400)).encode("utf-8")
    (tmp_path / "big.csv").write_bytes(b"id,text\n" + rows + b"r400,\xff\xfe\n" + "r401,司法\n".encode())
    out = tmp_path / "p.jsonl"
    counts = predict_files([str(tmp_path / "big.csv")], str(tiny_model_dir), out, progress=False)
    assert counts["predicted"] == 401 and counts["errors"] == 1
    error = read_jsonl(tmp_path / "p.errors.jsonl")[0]
    assert error["source"].endswith("big.csv:402") and "undecodable" in error["error"]


def test_damaged_parquet_is_an_error_record_not_a_stop(tiny_model_dir, tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    (tmp_path / "ok.txt").write_text("城市规划", encoding="utf-8")
    out = tmp_path / "p.jsonl"
    counts = predict_files(
        [str(tmp_path / "bad.parquet"), str(tmp_path / "ok.txt")], str(tiny_model_dir), out, progress=False
    )
    assert counts["predicted"] == 1 and counts["errors"] == 1


def test_big5_text_is_read_as_traditional_chinese(seed_texts, tmp_path):
    import opencc

    simplified = next(t for name, t in seed_texts.items() if name.startswith("001_"))[:400]
    traditional = opencc.OpenCC("s2tw").convert(simplified)
    traditional = "".join(c for c in traditional if _encodes(c, "big5"))
    assert "來源" in traditional and len(traditional) > 300
    (tmp_path / "big5.txt").write_bytes(traditional.encode("big5"))
    (tmp_path / "big5.csv").write_bytes(f"id,text\nb1,{traditional.splitlines()[0]}\n".encode("big5"))
    recs = list(iter_records([str(tmp_path / "big5.txt"), str(tmp_path / "big5.csv")]))
    assert [r.error for r in recs] == [None, None]
    assert recs[0].text == traditional
    assert recs[1].text == traditional.splitlines()[0]


@pytest.mark.parametrize("length", [12, 20, 60, None])
def test_gb18030_simplified_text_is_not_mistaken_for_big5(seed_texts, tmp_path, length):
    # Short Simplified texts decode as (meaningless) Big5 too: "索引号:" would come back as "坰竘瘍:".
    for name, text in seed_texts.items():
        if name.startswith("002_"):
            continue  # partly Traditional already
        (tmp_path / name).write_bytes(text[:length].encode("gb18030"))
    recs = list(iter_records([str(tmp_path)]))
    assert len(recs) == 4
    for rec in recs:
        assert rec.text == seed_texts[rec.source.rsplit("/", 1)[-1]][:length]


def test_text_in_no_chinese_encoding_is_an_error_naming_the_encodings(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"\xff\xfe\xff\xfe\x81")
    (rec,) = iter_records([str(tmp_path / "x.txt")])
    assert rec.text is None and "not UTF-8, GB18030 or Big5" in rec.error


def _encodes(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
        return True
    except UnicodeEncodeError:
        return False


def _csv(path, text: str):
    path.write_text(text, encoding="utf-8")
    return {r.source.rsplit(":", 1)[-1]: r for r in iter_records([str(path)])}


def test_csv_quote_never_closed_is_an_error_and_the_rows_after_it_are_read(tmp_path):
    rows = _csv(tmp_path / "t.csv", 'id,text\nc1,环境保护条例\nc2,"城市规划\nc3,法院审理案件\nc4,医院卫生\n')
    assert rows["2"].text == "环境保护条例"
    assert "line 3" in rows["3"].error and "quote" in rows["3"].error and rows["3"].text is None
    assert (rows["4"].id, rows["4"].text) == ("c3", "法院审理案件")
    assert (rows["5"].id, rows["5"].text) == ("c4", "医院卫生")


def test_csv_quote_closed_by_a_later_row_is_an_error_not_a_merged_row(tmp_path):
    rows = _csv(tmp_path / "t.csv", 'id,text\nc1,"环境保护\nc2,城市规划\nc3,"法院, 审理"\nc4,医院\n')
    assert "line 2" in rows["2"].error
    assert [(rows[n].id, rows[n].text) for n in "345"] == [("c2", "城市规划"), ("c3", "法院, 审理"), ("c4", "医院")]


def test_csv_quoted_text_over_several_lines_is_one_document(tmp_path):
    rows = _csv(tmp_path / "t.csv", 'id,text\nc1,"第一段\n第二段\n第三段"\nc2,"城市规划"\n\nc3,司法\n')
    assert rows["2"].text == "第一段\n第二段\n第三段"
    assert rows["5"].text == "城市规划" and rows["7"].text == "司法"  # sources name the physical line
    assert all(r.error is None for r in rows.values())


def test_csv_row_with_more_fields_than_the_header_is_an_error(tmp_path):
    rows = _csv(tmp_path / "t.csv", "id,text\nc1,环境,保护\nc2\nc3,司法\n")
    assert "3 fields" in rows["2"].error and "header has 2" in rows["2"].error
    assert "1 field" in rows["3"].error
    assert rows["4"].text == "司法"


def test_a_title_or_id_column_the_user_named_must_be_in_the_table(tiny_model_dir, tmp_path):
    from govtopic.inputs import Columns

    (tmp_path / "t.jsonl").write_text('{"id": "x1", "title": "通知", "text": "法院审理案件"}\n', encoding="utf-8")
    (tmp_path / "t.csv").write_text("id,title,text\nc1,通知,环境保护条例\n", encoding="utf-8")
    tables = [str(tmp_path / "t.jsonl"), str(tmp_path / "t.csv")]
    for named in ({"title": "nope", "named_title": True}, {"id": "nope", "named_id": True}):
        recs = list(iter_records(tables, Columns(**named)))
        assert [r.source.rsplit("/", 1)[-1] for r in recs] == ["t.jsonl", "t.csv"]  # one error per file
        option = "--title-column" if "title" in named else "--id-column"
        assert all(f"'nope' column (use {option})" in r.error for r in recs)
    out = tmp_path / "out.jsonl"
    counts = predict_files(tables, str(tiny_model_dir), out, title_column="nope", progress=False)
    assert counts["predicted"] == 0 and counts["errors"] == 2
    # The model's own title column (not named by the user) may be absent: those tables are read as before.
    (tmp_path / "plain.csv").write_text("id,text\nc1,环境保护条例\n", encoding="utf-8")
    counts = predict_files([str(tmp_path / "plain.csv")], str(tiny_model_dir), tmp_path / "p.jsonl", progress=False)
    assert counts["predicted"] == 1 and counts["errors"] == 0


def test_hidden_and_macos_copies_in_a_folder_are_passed_over(tmp_path):
    folder = tmp_path / "docs"
    (folder / "__MACOSX").mkdir(parents=True)
    (folder / "doc.txt").write_text("城市规划", encoding="utf-8")
    for hidden in ("._doc.txt", "__MACOSX/._doc.txt"):
        (folder / hidden).write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (folder / ".hidden.txt").write_text("法院审理案件", encoding="utf-8")
    recs = list(iter_records([str(folder)]))
    assert [(r.source.rsplit("/", 1)[-1], r.error) for r in recs] == [("doc.txt", None)]


def test_inputs_that_overlap_read_each_file_once(tiny_model_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    Path("in/a.txt").write_text("城市规划", encoding="utf-8")
    Path("in/b.txt").write_text("法院审理案件", encoding="utf-8")
    counts = predict_files(["in/a.txt", "./in", "in/"], str(tiny_model_dir), "dup.jsonl", progress=False)
    assert counts["predicted"] == 2
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "dup.jsonl")) == ["a", "b"]
    assert "already read through an earlier input" in caplog.text


@pytest.mark.parametrize("name", ["og.jsonl.gz", "results.csv", "results.parquet"])
def test_an_output_named_as_another_format_is_refused_before_any_work(tiny_model_dir, tmp_path, name):
    (tmp_path / "a.txt").write_text("城市规划", encoding="utf-8")
    with pytest.raises(ValueError, match="writes results as plain JSON lines; name it .jsonl"):
        predict_files([str(tmp_path / "a.txt")], str(tiny_model_dir), tmp_path / name, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_an_empty_jsonl_or_json_array_is_an_error_like_an_empty_csv(tmp_path):
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    (tmp_path / "none.json").write_text("[]", encoding="utf-8")
    recs = list(iter_records([str(tmp_path / n) for n in ("empty.jsonl", "blank.jsonl", "none.json")]))
    assert [r.source.rsplit("/", 1)[-1] for r in recs] == ["empty.jsonl", "blank.jsonl", "none.json"]
    assert all("the file is empty" in r.error for r in recs)
