"""The review queue drops nothing a user gave: unreadable documents, repeated ids, a wrong --taxonomy or a
read-only --output are all reported, the last two before any work."""

import json
import logging
import os
from pathlib import Path

import pytest

from conftest import TAXONOMY
from govtopic.cli import main
from govtopic.evaluation import update_record
from govtopic.fsutil import FileSafetyError
from govtopic.labelstudio import write_review_queue

# Thresholds nothing reaches: every readable document needs a person.
NOBODY_PASSES = {"precision": 0.99, "margin": 0.0, "l1": {}, "full": {}}


@pytest.fixture
def model(tiny_model_copy):
    update_record(tiny_model_copy, thresholds=NOBODY_PASSES)
    return tiny_model_copy


@pytest.fixture
def untouched(monkeypatch):
    """Fail a test whose run loads the model, i.e. starts work that a check should have prevented."""
    from govtopic.predict import TopicClassifier

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the problem was reported")

    monkeypatch.setattr(TopicClassifier, "__init__", refuse)


def _write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _json(row: dict) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8")


def _queue(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "queue.jsonl").read_text(encoding="utf-8").splitlines()]


def test_documents_that_cannot_be_read_are_listed_last_unranked_with_their_error(model, tmp_path, caplog):
    inbox = _write_lines(
        tmp_path / "inbox.jsonl",
        [
            _json({"id": "a", "text": "法院审理案件。"}),
            _json({"id": "int", "text": 5}),
            b'{"id": "cut", "text": ',
            _json({"id": "b", "text": ""}),
            b'{"id": "enc", "text": "\xff\xfe\x80abc"}',
            _json({"id": "c", "text": "医院卫生监督工作。" * 4}),
        ],
    )
    out = tmp_path / "queue"
    with caplog.at_level(logging.WARNING):
        counts = write_review_queue(str(model), [str(inbox)], str(out), taxonomy=str(TAXONOMY))
    assert counts["read_errors"] == 3 and counts["documents"] == 3 and counts["no_topic"] == 1
    items = _queue(out)
    assert len(items) == 6  # every line of the input is in the queue
    assert [x["rank"] for x in items] == [1, 2, None, None, None, None]
    unranked = items[2:]
    # In input order; each names its line, and why it is there.
    assert [x["source"] for x in unranked] == [f"{inbox}:{n}" for n in (2, 3, 4, 5)]
    errors = {x["source"].rsplit(":", 1)[1]: x for x in unranked if "error" in x}
    assert set(errors) == {"2", "3", "5"}
    assert errors["2"]["doc_id"] == "int" and "'text' is int" in errors["2"]["error"]
    assert errors["3"]["doc_id"] == f"{inbox}:3" and "malformed JSON" in errors["3"]["error"]
    assert "not UTF-8" in errors["5"]["error"]
    for x in errors.values():
        assert x["text"] is None and x["label"] is None and x["why"] == f"not read: {x['error']}"
        assert x["reason"] == x["error"]
    # Only documents with text to label are Label Studio tasks.
    tasks = json.loads((out / "label_studio_tasks.json").read_text(encoding="utf-8"))
    assert [t["data"]["doc_id"] for t in tasks] == [x["doc_id"] for x in items[:2]]
    assert all(t["data"]["text"] for t in tasks)
    assert "3 document(s) could not be read" in caplog.text and "queue.jsonl" in caplog.text


def test_the_cli_summary_counts_unreadable_documents_listed_in_the_queue(model, tmp_path, capsys):
    inbox = _write_lines(tmp_path / "inbox.jsonl", [_json({"id": "a", "text": "法院审理案件。"}), b"not json"])
    out = tmp_path / "queue"
    assert main(["review", str(model), str(inbox), "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    items = _queue(out)
    assert summary["read_errors"] == 1 == sum("error" in x for x in items)
    assert items[-1]["rank"] is None and items[-1]["source"] == f"{inbox}:2"


def test_repeated_ids_are_counted_and_warned_about(model, tmp_path, caplog):
    inbox = _write_lines(
        tmp_path / "inbox.jsonl",
        [
            _json({"id": "a", "text": "法院审理案件。"}),
            _json({"id": "b", "text": "医院卫生监督工作。"}),
            _json({"id": "a", "text": "关于加强城市规划管理的通知。"}),
            _json({"id": "a", "text": 7}),  # unreadable, still queued under its id
        ],
    )
    out = tmp_path / "queue"
    with caplog.at_level(logging.WARNING):
        counts = write_review_queue(str(model), [str(inbox)], str(out))
    assert counts["duplicate_ids"] == 2
    assert [x["doc_id"] for x in _queue(out)].count("a") == 3  # nothing is dropped or renamed
    warning = next(r.getMessage() for r in caplog.records if "repeat the id" in r.getMessage())
    assert "2 document(s)" in warning and f"{inbox}:1" in warning and f"{inbox}:3" in warning
    assert "--id-column" in warning


def test_an_input_named_twice_never_gives_silent_duplicates(model, tmp_path):
    """Whether a repeated input is read once or twice, every id the queue repeats is counted."""
    inbox = _write_lines(tmp_path / "inbox.jsonl", [_json({"id": "a", "text": "法院审理案件。"}), b"{"])
    out = tmp_path / "queue"
    counts = write_review_queue(str(model), [str(inbox), str(inbox)], str(out))
    ids = [x["doc_id"] for x in _queue(out)]
    assert len(ids) - len(set(ids)) == counts["duplicate_ids"]
    tasks = json.loads((out / "label_studio_tasks.json").read_text(encoding="utf-8"))
    task_ids = [t["data"]["doc_id"] for t in tasks]
    assert len(task_ids) - len(set(task_ids)) <= counts["duplicate_ids"]


def test_a_missing_taxonomy_fails_before_any_work_naming_the_option(untouched, tmp_path, capsys):
    inbox = _write_lines(tmp_path / "inbox.jsonl", [_json({"id": "a", "text": "法院审理案件。"})])
    out = tmp_path / "queue"
    missing = tmp_path / "nosuch.yaml"
    code = main(["review", "no-model-needed", str(inbox), "--output", str(out), "--taxonomy", str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and f"--taxonomy {missing}: no such file" in err
    assert not out.exists()  # nothing was written either


def test_a_malformed_taxonomy_is_an_error_naming_the_option(untouched, tmp_path, capsys):
    inbox = _write_lines(tmp_path / "inbox.jsonl", [_json({"id": "a", "text": "法院审理案件。"})])
    for name, text in (("broken.yaml", "a: [b, c\n"), ("list.yaml", "- a\n- b\n")):
        bad = tmp_path / name
        bad.write_text(text, encoding="utf-8")
        out = tmp_path / f"queue-{name}"
        code = main(["review", "no-model-needed", str(inbox), "--output", str(out), "--taxonomy", str(bad)])
        assert code == 2 and f"--taxonomy {bad}:" in capsys.readouterr().err


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """A folder on what looks like a read-only file system: ``os.access`` says no writes (as it does there,
    even for root, who may write a folder whose mode says read-only)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).absolute() == folder.absolute():
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return folder


@pytest.mark.parametrize("inside", [True, False])
def test_a_read_only_output_folder_fails_before_any_work_naming_it_and_the_fix(untouched, read_only, inside):
    inbox = _write_lines(read_only.parent / "inbox.jsonl", [_json({"id": "a", "text": "法院审理案件。"})])
    out = read_only / "q" if inside else read_only
    with pytest.raises(FileSafetyError) as err:
        write_review_queue("no-model-needed", [str(inbox)], str(out))
    message = str(err.value)
    assert "read-only" in message and str(out) in message and "--output" in message
    assert list(read_only.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="a folder's mode binds only users, not root")
def test_a_folder_without_write_permission_is_refused(untouched, tmp_path):
    inbox = _write_lines(tmp_path / "inbox.jsonl", [_json({"id": "a", "text": "法院审理案件。"})])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(FileSafetyError, match="read-only"):
            write_review_queue("no-model-needed", [str(inbox)], str(locked / "q"))
    finally:
        locked.chmod(0o755)


def test_a_write_that_fails_on_a_read_only_file_system_names_the_folder(model, tmp_path, monkeypatch):
    """Should the file system turn read-only after the checks, the error still names the folder and the fix."""
    import errno

    import govtopic.labelstudio as labelstudio

    def read_only_fs(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(labelstudio, "atomic_write_text", read_only_fs)
    inbox = _write_lines(tmp_path / "inbox.jsonl", [_json({"id": "a", "text": "法院审理案件。"})])
    out = tmp_path / "queue"
    with pytest.raises(FileSafetyError, match=rf"review queue folder {out} cannot be written .*--output"):
        write_review_queue(str(model), [str(inbox)], str(out))


def test_a_model_without_thresholds_is_refused_and_leaves_no_folder(tiny_model_dir, tmp_path):
    from govtopic.labelstudio import write_review_queue

    inbox = tmp_path / "inbox.jsonl"
    inbox.write_text('{"id": "a", "text": "城市规划"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="no review thresholds"):
        write_review_queue(str(tiny_model_dir), [str(inbox)], str(tmp_path / "review"))
    assert not (tmp_path / "review").exists()
