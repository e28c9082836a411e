"""govtopic predict never damages a file it did not write: outputs that are inputs, files of other programs,
two runs at once, special files, missing inputs."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from govtopic.batch import predict_files
from govtopic.cli import main

DOCS = [{"id": f"d{i}", "text": "关于加强城市规划管理的通知" * (i % 3 + 1)} for i in range(5)]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def predict(model, *args: str) -> int:
    return main(["predict", str(model), *map(str, args)])


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m govtopic.cli ARGS` in its own process, with a memory cap: a run that reads without end
    fails instead of taking the machine's memory."""

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    return subprocess.run(
        [sys.executable, "-m", "govtopic.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap_memory,
    )


# --- an output or errors file that is also an input -------------------------------------------------------


def test_output_that_is_the_input_table_is_refused_before_anything_is_deleted(tiny_model_dir, tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    before = docs.read_bytes()
    assert predict(tiny_model_dir, docs, "--output", docs, "--no-resume") == 2
    err = capsys.readouterr().err
    assert "is also an input" in err and str(docs) in err
    assert docs.read_bytes() == before


CASES = ["errors", "default-errors", "symlink", "hardlink", "txt-in-folder", "new-txt-in-folder"]


@pytest.mark.parametrize("case", CASES)
def test_errors_file_or_linked_output_that_is_an_input_is_refused(case, tiny_model_dir, tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("关于医院卫生监督的意见", encoding="utf-8")
    inputs, out = [docs], tmp_path / "out.jsonl"
    extra: list = []
    if case == "errors":
        extra = ["--errors", docs]
    elif case == "default-errors":  # OUTPUT.errors.jsonl happens to be an input table
        docs = jsonl(tmp_path / "out.errors.jsonl", DOCS)
        inputs = [docs]
    elif case == "symlink":
        out = tmp_path / "link.jsonl"
        out.symlink_to(docs)
    elif case == "hardlink":
        out = tmp_path / "hard.jsonl"
        os.link(docs, out)
    elif case == "txt-in-folder":
        inputs, docs, out = [folder], folder / "a.txt", folder / "a.txt"
    else:  # a new .txt file in an input folder would be read back as a document
        inputs, docs, out = [folder], folder / "a.txt", folder / "sub" / "results.txt"
    before = docs.read_bytes()
    assert predict(tiny_model_dir, *inputs, "--output", out, *extra, "--no-resume") == 2
    assert "is also an input" in capsys.readouterr().err
    assert docs.read_bytes() == before
    assert case != "new-txt-in-folder" or not out.exists()


def test_output_and_errors_that_are_the_same_file_are_refused(tiny_model_dir, tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.jsonl"
    assert predict(tiny_model_dir, docs, "--output", out, "--errors", tmp_path / "." / "out.jsonl") == 2
    assert "same file" in capsys.readouterr().err
    assert not out.exists()


# --- resuming only into a file govtopic wrote -------------------------------------------------------------


@pytest.mark.parametrize("resume", [True, False])
def test_a_file_govtopic_did_not_write_is_never_changed(resume, tiny_model_dir, tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nthe last line has no newline", encoding="utf-8")
    before = notes.read_bytes()
    args = [docs, "--output", notes] + ([] if resume else ["--no-resume"])
    assert predict(tiny_model_dir, *args) == 2
    err = capsys.readouterr().err
    assert f"{notes} exists and was not written by govtopic" in err and "--output" in err
    assert notes.read_bytes() == before


def test_an_empty_file_is_adopted_and_resumed(tiny_model_dir, tmp_path):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.jsonl"
    out.touch()
    assert predict(tiny_model_dir, docs, "--output", out) == 0
    assert predict(tiny_model_dir, docs, "--output", out) == 0  # resumed: nothing done twice
    assert [json.loads(x)["id"] for x in out.read_text(encoding="utf-8").splitlines()] == [r["id"] for r in DOCS]


def test_an_output_replaced_by_another_program_is_not_resumed_into(tiny_model_dir, tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.jsonl"
    assert predict(tiny_model_dir, docs, "--output", out) == 0
    out.write_text("name,value\nsomething else entirely", encoding="utf-8")
    for extra in ([], ["--no-resume"]):
        assert predict(tiny_model_dir, docs, "--output", out, *extra) == 2
        assert "is not a govtopic result" in capsys.readouterr().err
        assert out.read_text(encoding="utf-8") == "name,value\nsomething else entirely"


# --- two runs writing the same output ---------------------------------------------------------------------

# A real `govtopic predict` run that signals once it holds its output, then waits for a go-ahead before it
# loads the model, so the second run below is sure to start while the first is writing.
HOLDER = """
import importlib, sys, time
from pathlib import Path
from govtopic.cli import main

ready, go = Path(sys.argv[1]), Path(sys.argv[2])
module = importlib.import_module("govtopic.predict")  # the package's `predict` name is the function
real = module.get_classifier

def held(*args, **kwargs):
    ready.touch()
    while not go.exists():
        time.sleep(0.05)
    return real(*args, **kwargs)

module.get_classifier = held
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_a_second_run_on_the_same_output_fails_at_once(tiny_model_dir, tmp_path):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.jsonl"
    ready, go = tmp_path / "ready", tmp_path / "go"
    args = ["predict", str(tiny_model_dir), str(docs), "--output", str(out)]
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ready), str(go), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not ready.exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.time() < deadline, "the first run never started predicting"
            time.sleep(0.05)
        second = run_cli(*args)
        assert first.poll() is None  # the first run was still writing
    finally:
        go.touch()
        _, first_err = first.communicate(timeout=300)
    assert second.returncode == 2
    assert f"{out} is being written by another govtopic run" in second.stderr
    assert first.returncode == 0, first_err[-3000:]
    assert [json.loads(x)["id"] for x in out.read_text(encoding="utf-8").splitlines()] == [r["id"] for r in DOCS]


# --- special files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--output", "--errors"])
@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null", "fifo"])
def test_special_files_are_refused_without_reading_them(special, flag, tiny_model_dir, tmp_path):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    if special == "fifo":
        special = tmp_path / "pipe"
        os.mkfifo(special)
    args = ["--output", tmp_path / "out.jsonl", "--errors", special] if flag == "--errors" else ["--output", special]
    result = run_cli("predict", tiny_model_dir, docs, *args, timeout=90)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{special} is not a regular file" in result.stderr
    assert not list(Path("/dev").glob(".*.govtopic"))


def test_output_that_is_a_folder_or_under_a_file_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    (tmp_path / "results").mkdir()
    assert predict(tiny_model_dir, docs, "--output", tmp_path / "results") == 2
    assert "is a folder" in capsys.readouterr().err
    assert predict(tiny_model_dir, docs, "--output", docs / "out.jsonl") == 2
    err = capsys.readouterr().err
    assert f"{docs} is a file, not a folder" in err and "Traceback" not in err


def test_output_written_as_a_folder_path_is_refused(tiny_model_dir, tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    assert predict(tiny_model_dir, docs, "--output", f"{tmp_path / 'results'}/") == 2
    assert "names a folder; expected a file path (--output)" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_a_run_whose_model_fails_to_load_leaves_no_empty_output(tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.jsonl"
    assert predict(tmp_path / "no-such-model", docs, "--output", out) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("out.errors.jsonl").exists()


def test_output_in_a_new_folder_is_created(tiny_model_dir, tmp_path):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "new" / "deeper" / "out.jsonl"
    counts = predict_files([str(docs)], str(tiny_model_dir), out, progress=False)
    assert counts["predicted"] == len(DOCS) and out.is_file()


# --- inputs that do not exist ----------------------------------------------------------------------------


def test_a_missing_input_is_an_error_before_the_model_loads(tiny_model_dir, tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.jsonl"
    assert predict(tiny_model_dir, docs, tmp_path / "missing.txt", "--output", out) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'missing.txt'}: no such file or folder" in err
    assert not out.exists()
    # The inputs are checked first: a wrong model path is not what is reported.
    assert predict(tmp_path / "no-such-model", tmp_path / "missing.txt", "--output", out) == 2
    assert "missing.txt: no such file or folder" in capsys.readouterr().err


def test_a_device_as_input_is_an_error(tiny_model_dir, tmp_path, capsys):
    assert predict(tiny_model_dir, "/dev/zero", "--output", tmp_path / "out.jsonl") == 2
    assert "/dev/zero: not a regular file or folder" in capsys.readouterr().err


def test_cli_exit_code_for_a_missing_input(tiny_model_dir, tmp_path):
    result = run_cli("predict", tiny_model_dir, tmp_path / "missing.txt", "--output", tmp_path / "x.jsonl")
    assert result.returncode == 2 and "missing.txt" in result.stderr and "Traceback" not in result.stderr


def test_a_read_only_output_is_a_clear_error_before_the_model_loads(tiny_model_dir, tmp_path, capsys):
    docs = jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.jsonl"
    assert predict(tiny_model_dir, docs, "--output", out) == 0
    _make_read_only(out)
    try:
        assert predict(tmp_path / "no-such-model", docs, "--output", out) == 2
    finally:
        _make_writable(out)
    err = capsys.readouterr().err
    assert f"{out} is read-only" in err and "--output" in err


def _make_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o444)
    elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: no file is read-only to this process")


def _make_writable(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o644)
    else:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


# ------------------------------------------------------------------ folders govtopic writes whole
def _user_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes", encoding="utf-8")
    (folder / "metrics.json").write_text('{"mine": 1}', encoding="utf-8")
    return folder, {p.name: p.read_bytes() for p in folder.iterdir()}


def _labelled_file(tmp_path):
    from conftest import LABELS

    rows = [{"id": f"d{i}", "text": f"医院卫生管理第{i}条", "label": LABELS[i % len(LABELS)]} for i in range(6)]
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_evaluate_never_writes_into_a_folder_of_the_users_files(tiny_model_dir, tmp_path):
    from govtopic.evaluation import evaluate
    from govtopic.fsutil import FileSafetyError

    folder, before = _user_folder(tmp_path)
    with pytest.raises(FileSafetyError, match=r"holds files govtopic did not write \(metrics.json, notes.txt\)"):
        evaluate(tiny_model_dir, _labelled_file(tmp_path), folder, split=None, baseline=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # a new folder is govtopic's from then on: evaluating into it again works
    fresh = tmp_path / "report"
    for _ in range(2):
        evaluate(tiny_model_dir, _labelled_file(tmp_path), fresh, split=None, baseline=False)
    assert (fresh / "report.html").is_file()


def test_review_queue_never_writes_into_a_folder_of_the_users_files(tiny_model_dir, tmp_path):
    from govtopic.fsutil import FileSafetyError
    from govtopic.labelstudio import write_review_queue

    folder, before = _user_folder(tmp_path)
    with pytest.raises(FileSafetyError, match="will not write its review queue there"):
        write_review_queue(str(tiny_model_dir), [str(_labelled_file(tmp_path))], str(folder))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_export_never_replaces_a_users_folder_that_holds_a_model_onnx(tiny_model_dir, tmp_path):
    from govtopic.export import export_onnx

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"my own graph")
    with pytest.raises(ValueError, match="is not an earlier export"):
        export_onnx(tiny_model_dir, folder)
    assert (folder / "model.onnx").read_bytes() == b"my own graph"


def test_a_folder_given_for_an_output_file_gets_an_example_of_its_kind(tmp_path):
    from govtopic.fsutil import FileSafetyError, check_claimable

    with pytest.raises(FileSafetyError, match=r"e\.g\. .*/out\.yaml"):
        check_claimable(tmp_path, "best config", "--output")
    with pytest.raises(FileSafetyError, match=r"e\.g\. .*/out\.json$"):
        check_claimable(tmp_path, "coverage report", "--output")
