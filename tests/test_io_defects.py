"""Documents a user hands to `govtopic predict` or `govtopic train` are never lost, dropped or misread in silence."""

import gzip
import json
import os
import re

import pytest

from govtopic.batch import predict_files
from govtopic.cli import main
from govtopic.data import DataError
from govtopic.inputs import Columns, iter_records
from govtopic.tables import read_table


def read_jsonl(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def by_name(records):
    return {r.source.rsplit("/", 1)[-1]: r for r in records}


def test_a_file_named_in_gbk_is_predicted_and_resumed_not_a_crash(tiny_model_dir, tmp_path):
    # Zips made on Chinese Windows unpack on Linux with GBK-encoded names: not UTF-8, so Python sees surrogates.
    folder = tmp_path / "docs"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/" + "关于通知".encode("gbk") + b".txt", "wb") as fh:
        fh.write("关于加强城市规划管理的通知".encode())
    (folder / "ok.txt").write_text("医院卫生监督", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    counts = predict_files([str(folder)], str(tiny_model_dir), out, progress=False)
    assert counts["predicted"] == 2 and counts["errors"] == 0
    rows = read_jsonl(out)
    assert len(rows) == 2 and all(r["label"] for r in rows)
    again = predict_files([str(folder)], str(tiny_model_dir), out, progress=False)
    assert again["predicted"] == 0 and again["skipped_done"] == 2  # the odd name is recognised on resume
    assert len(read_jsonl(out)) == 2


def test_files_in_a_folder_that_are_not_txt_are_reported_not_skipped(tiny_model_dir, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("城市规划", encoding="utf-8")
    (folder / "通知.docx").write_bytes(b"PK\x03\x04word/document.xml")
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4\n")
    (folder / "b.txt.gz").write_bytes(gzip.compress("医院卫生".encode()))
    (folder / ".DS_Store").write_bytes(b"\x00\x00")
    out = folder / "pred.jsonl"  # the output inside the input folder is not a document
    counts = predict_files([str(folder)], str(tiny_model_dir), out, progress=False)
    assert counts["predicted"] == 2 and counts["errors"] == 2
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b"]
    errors = {e["source"].rsplit("/", 1)[-1]: e["error"] for e in read_jsonl(folder / "pred.errors.jsonl")}
    assert set(errors) == {"通知.docx", "scan.pdf"}
    assert "not a .txt file (.docx)" in errors["通知.docx"] and "save the document as .txt" in errors["通知.docx"]
    again = predict_files([str(folder)], str(tiny_model_dir), out, progress=False)
    assert again["predicted"] == 0 and again["errors"] == 0  # its own output and errors file are not inputs


def test_a_word_file_passed_by_name_is_an_error_not_a_topic(tmp_path):
    docx = tmp_path / "通知.docx"
    docx.write_bytes(b"PK\x03\x04\x14\x00\x06\x00word/document.xml")  # would decode as GB18030 nonsense
    (rec,) = iter_records([str(docx)])
    assert rec.text is None and "a Word, Excel, WPS or zip file, not plain text" in rec.error


def test_a_tsv_table_is_read_row_by_row_not_as_one_document(tmp_path):
    table = tmp_path / "docs.tsv"
    table.write_text("id\ttext\nt1\t城市规划\nt2\t医院卫生\n", encoding="utf-8")
    recs = list(iter_records([str(table)]))
    assert [(r.id, r.text) for r in recs] == [("t1", "城市规划"), ("t2", "医院卫生")]


def test_a_json_array_file_is_read_as_its_documents(tmp_path):
    table = tmp_path / "docs.json"
    rows = [{"id": "a1", "text": "城市规划"}, {"id": "a2", "title": "关于医院的通知"}, 5]
    table.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    recs = list(iter_records([str(table)], Columns(title="title")))
    assert [(r.id, r.text, r.error) for r in recs[:1]] == [("a1", "城市规划", None)]
    assert recs[1].title == "关于医院的通知" and "not an object" in recs[2].error
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "a1", "text": "x"},\n{"id": ]', encoding="utf-8")
    (rec,) = iter_records([str(broken)])
    assert "malformed JSON array" in rec.error and "line 2" in rec.error


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_text_saved_as_unicode_by_windows_notepad_is_read(encoding, tmp_path):
    text = "关于加强城市规划管理的通知\r\n各区人民政府："
    (tmp_path / "a.txt").write_bytes(text.encode(encoding))  # with a byte-order mark
    (tmp_path / "t.csv").write_bytes("id,text\nc1,城市规划\n".encode(encoding))
    (tmp_path / "t.jsonl").write_bytes('{"id": "j1", "text": "医院"}\n{"id": "j2", "text": "法院"}\n'.encode(encoding))
    recs = by_name(iter_records([str(tmp_path / n) for n in ("a.txt", "t.csv", "t.jsonl")]))
    assert recs["a.txt"].text == text
    assert recs["t.csv:2"].text == "城市规划"
    assert recs["t.jsonl:1"].text == "医院" and recs["t.jsonl:2"].text == "法院"


def test_a_document_fixed_after_a_run_is_predicted_by_the_rerun(tiny_model_dir, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("城市规划", encoding="utf-8")
    (folder / "c.txt").write_bytes(b"\xff\xfe\x00bad \x81")
    out = tmp_path / "pred.jsonl"
    first = predict_files([str(folder)], str(tiny_model_dir), out, progress=False)
    assert first["errors"] == 1
    (folder / "c.txt").write_text("医院卫生监督", encoding="utf-8")  # the user saves it again as UTF-8
    again = predict_files([str(folder)], str(tiny_model_dir), out, progress=False)
    assert again["predicted"] == 1 and again["skipped_done"] == 1
    assert [r["id"] for r in read_jsonl(out)] == ["a", "c"]
    assert read_jsonl(tmp_path / "pred.errors.jsonl") == []  # its old error is gone
    still = predict_files([str(folder)], str(tiny_model_dir), out, progress=False)
    assert still["predicted"] == 0 and still["skipped_done"] == 2


def test_tables_without_documents_are_reported(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "header.csv").write_text("id,text\n", encoding="utf-8")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), tmp_path / "e.parquet"
    )
    (tmp_path / "twice.csv").write_text("id,text,text\nd1,城市规划,医院\n", encoding="utf-8")
    names = ("header.csv", "empty.csv", "e.parquet", "twice.csv")
    recs = by_name(iter_records([str(tmp_path / n) for n in names]))
    assert "no rows below the header" in recs["header.csv"].error
    assert "the file is empty" in recs["empty.csv"].error
    assert "no rows" in recs["e.parquet"].error
    assert "['text'] more than once" in recs["twice.csv"].error


def test_ctrl_c_keeps_the_finished_results_and_says_how_to_resume(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import govtopic.batch as batch

    table = tmp_path / "docs.jsonl"
    table.write_text("".join(json.dumps({"id": f"d{i}", "text": "城市规划"}) + "\n" for i in range(300)))
    out = tmp_path / "pred.jsonl"
    flush, calls = batch._flush, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        flush(*args)

    monkeypatch.setattr(batch, "_flush", interrupted)
    assert main(["predict", str(tiny_model_dir), str(table), "--output", str(out)]) == 130
    assert "run the same command again" in capsys.readouterr().err
    assert len(read_jsonl(out)) == 256  # the first chunk of 256 was written before Ctrl-C
    monkeypatch.setattr(batch, "_flush", flush)
    counts = predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    assert counts["skipped_done"] == 256 and counts["predicted"] == 44


def csv_file(tmp_path, body: str, encoding: str = "utf-8"):
    path = tmp_path / "labelled.csv"
    path.write_bytes(("id,text,label\n" + body).encode(encoding))
    return path


def test_training_csv_keeps_ids_as_written_and_reads_excel_gbk(tmp_path):
    rows = read_table(csv_file(tmp_path, "007,城市规划,其他\n0100,医院卫生,其他\n", "gbk"))
    assert [(r["id"], r["text"]) for r in rows] == [("007", "城市规划"), ("0100", "医院卫生")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('r1,城市规划,其他\nr2,"医院,其他\nr3,法院,其他\n', "line 3: malformed CSV"),
        ("r1,城市规划,其他\nr2,医院,卫生,其他\n", "line 3: 4 field(s), but the header has 3"),
        ("r1,城市规划,其他\nr2,医院\n", "line 3: 2 field(s), but the header has 3"),
    ],
)
def test_training_csv_problems_name_the_line(body, message, tmp_path):
    with pytest.raises(DataError, match=re.escape(message)):
        read_table(csv_file(tmp_path, body))


def test_a_tsv_table_trains_as_predict_reads_it(tmp_path):
    """A spreadsheet's tab-separated export: commas inside a field stay in it, a row short of a field is named."""
    path = tmp_path / "labelled.tsv"
    path.write_text("id\ttext\tlabel\n007\t城市规划,建设管理\t其他\n0100\t医院卫生\t其他\n", encoding="utf-8")
    rows = read_table(path)
    assert [(r["id"], r["text"]) for r in rows] == [("007", "城市规划,建设管理"), ("0100", "医院卫生")]
    path.write_text("id\ttext\tlabel\nr1\t城市规划\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: 2 field[(]s[)], but the header has 3; put text that holds tabs"):
        read_table(path)
    with pytest.raises(DataError, match=r"unsupported file type; use \.jsonl, \.json, \.csv, \.tsv or \.parquet"):
        read_table(path.rename(tmp_path / "labelled.xlsx"))


def test_training_csv_in_an_unknown_encoding_names_the_line(tmp_path):
    path = csv_file(tmp_path, "r1,城市规划,其他\n")
    path.write_bytes(path.read_bytes() + b"r2,\xff\xfe,\xe5\n")
    with pytest.raises(DataError, match="line 3: bytes that are not UTF-8 or GB18030"):
        read_table(path)


def test_ctrl_c_before_anything_was_written_does_not_claim_results_were_kept(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    import govtopic.batch as batch

    table = tmp_path / "docs.jsonl"
    table.write_text("".join(json.dumps({"id": f"d{i}", "text": "城市规划"}) + "\n" for i in range(10)))
    out = tmp_path / "pred.jsonl"

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "_flush", interrupted)
    assert main(["predict", str(tiny_model_dir), str(table), "--output", str(out)]) == 130
    err = capsys.readouterr().err
    assert "no document was finished yet" in err and "kept in" not in err
