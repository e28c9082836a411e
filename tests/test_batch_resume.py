"""Resuming `govtopic predict` into the same output after the inputs, the settings or the model changed: no
document is skipped, predicted twice or credited to another, and results of other settings are never mixed."""

import json

import pytest

from govtopic.batch import kept_after_interrupt, predict_files


def read_jsonl(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


DOCS = [{"id": "a", "text": "城市规划建设"}, {"id": "b", "text": "法院审理案件"}, {"id": "c", "text": "医院卫生监督"}]


def ids_by_line(out):
    return {r["source"].rsplit(":", 1)[1]: r["id"] for r in read_jsonl(out)}


def test_a_document_added_at_the_top_of_a_table_is_predicted_and_none_is_credited_twice(tiny_model_dir, tmp_path):
    table = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "pred.jsonl"
    predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    write_jsonl(table, [{"id": "new", "text": "国防动员"}, *DOCS])
    counts = predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    assert counts["predicted"] == 4 and counts["changed"] == 3
    assert ids_by_line(out) == {"1": "new", "2": "a", "3": "b", "4": "c"}
    assert len(read_jsonl(out)) == 4  # no stale line left beside its replacement
    again = predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    assert again["predicted"] == 0 and again["skipped_done"] == 4


def test_a_document_removed_from_a_table_takes_its_stale_result_with_it(tiny_model_dir, tmp_path):
    table = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "pred.jsonl"
    predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    write_jsonl(table, DOCS[1:])
    predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    assert ids_by_line(out) == {"1": "b", "2": "c"} and len(read_jsonl(out)) == 2


def test_a_document_that_no_longer_reads_loses_its_result_for_an_error_line(tiny_model_dir, tmp_path):
    table = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "pred.jsonl"
    predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    lines = table.read_text(encoding="utf-8").splitlines(keepends=True)
    table.write_text(lines[0] + '{"id": "b", "text": \n' + lines[2], encoding="utf-8")
    counts = predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    assert counts["errors"] == 1 and counts["predicted"] == 0
    assert ids_by_line(out) == {"1": "a", "3": "c"}
    assert [e["source"].rsplit(":", 1)[1] for e in read_jsonl(tmp_path / "pred.errors.jsonl")] == ["2"]


def test_a_run_stopped_while_redoing_changed_documents_is_finished_by_the_next(tiny_model_dir, tmp_path, monkeypatch):
    import govtopic.resume as resume

    table = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "pred.jsonl"
    predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    write_jsonl(table, [{"id": "new", "text": "国防动员"}, *DOCS])
    tidy = resume.Done.tidy
    monkeypatch.setattr(resume.Done, "tidy", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # the new results are written, the stale ones not yet removed
        predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    monkeypatch.setattr(resume.Done, "tidy", tidy)
    counts = predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    assert counts["predicted"] == 0
    assert ids_by_line(out) == {"1": "new", "2": "a", "3": "b", "4": "c"} and len(read_jsonl(out)) == 4


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"top_k": 3}, "top_k was 1, now 3"), ({"long_doc": "chunks"}, "long_doc was None, now 'chunks'")],
)
def test_resuming_with_other_settings_is_refused_naming_them(tiny_model_dir, tmp_path, settings, named):
    table = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "pred.jsonl"
    predict_files([str(table)], str(tiny_model_dir), out, chunk_docs=1, progress=False)
    before = out.read_bytes()
    write_jsonl(table, [*DOCS, {"id": "d", "text": "国防动员"}])
    with pytest.raises(ValueError, match="other settings") as err:
        predict_files([str(table)], str(tiny_model_dir), out, progress=False, **settings)
    assert named in str(err.value) and "--no-resume" in str(err.value) and "another --output" in str(err.value)
    assert out.read_bytes() == before
    counts = predict_files([str(table)], str(tiny_model_dir), out, resume=False, progress=False, **settings)
    assert counts["predicted"] == 4


def test_resuming_with_another_model_is_refused(tiny_model_dir, tiny_model_copy, tmp_path):
    table = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "pred.jsonl"
    predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    with pytest.raises(ValueError, match=f"model was '{tiny_model_dir}', now '{tiny_model_copy}'"):
        predict_files([str(table)], str(tiny_model_copy), out, progress=False)
    copy_out = tmp_path / "copy.jsonl"
    predict_files([str(table)], str(tiny_model_copy), copy_out, progress=False)
    config = tiny_model_copy / "config.json"  # the same folder, trained again
    config.write_text(config.read_text(encoding="utf-8").replace("{", '{"retrained": true, ', 1), encoding="utf-8")
    with pytest.raises(ValueError, match="config.json changed since"):
        predict_files([str(table)], str(tiny_model_copy), copy_out, progress=False)


def test_an_output_written_by_the_earlier_release_still_resumes(tiny_model_dir, tmp_path):
    """Results written before fingerprints and the settings file existed are taken as done, as they were."""
    table = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "pred.jsonl"
    predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    old = [{k: v for k, v in r.items() if k != "fingerprint"} for r in read_jsonl(out)][:2]
    write_jsonl(out, old)
    (tmp_path / ".pred.jsonl.settings.json").unlink(missing_ok=True)
    counts = predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    assert counts["skipped_done"] == 2 and counts["predicted"] == 1
    assert ids_by_line(out) == {"1": "a", "2": "b", "3": "c"}


def test_a_file_error_is_removed_once_the_file_reads(tiny_model_dir, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("id,body\nd1,城市规划\n", encoding="utf-8")
    empty = tmp_path / "docs"
    empty.mkdir()
    out = tmp_path / "pred.jsonl"
    first = predict_files([str(table), str(empty)], str(tiny_model_dir), out, progress=False)
    assert first["errors"] == 2  # no 'text' column; a folder without .txt files
    table.write_text("id,text\nd1,城市规划\n", encoding="utf-8")
    (empty / "a.txt").write_text("法院审理案件", encoding="utf-8")
    again = predict_files([str(table), str(empty)], str(tiny_model_dir), out, progress=False)
    assert again["predicted"] == 2
    assert read_jsonl(tmp_path / "pred.errors.jsonl") == []


def test_an_interrupted_run_says_whether_anything_was_kept(tmp_path):
    out = tmp_path / "r2.jsonl"
    assert "no document was finished yet" in kept_after_interrupt(out)
    out.write_text('{"source": "a.txt", "id": "a"}\n', encoding="utf-8")
    assert f"finished so far are kept in {out}" in kept_after_interrupt(out)


def test_a_users_file_where_the_settings_are_kept_is_never_overwritten(tiny_model_dir, tmp_path):
    from govtopic.fsutil import FileSafetyError

    table = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "pred.jsonl"
    mine = tmp_path / ".pred.jsonl.settings.json"
    mine.write_text("a user's own file", encoding="utf-8")
    with pytest.raises(FileSafetyError, match="will not overwrite it"):
        predict_files([str(table)], str(tiny_model_dir), out, progress=False)
    assert mine.read_text(encoding="utf-8") == "a user's own file" and not out.exists()
    mine.unlink()
    predict_files([str(table)], str(tiny_model_dir), out, progress=False)  # govtopic's own record: resumed
    assert predict_files([str(table)], str(tiny_model_dir), out, progress=False)["skipped_done"] == len(DOCS)
