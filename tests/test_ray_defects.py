"""predict-ray's checks and conversions that need no Ray: options, model folder, inputs and settings are refused
before Ray starts; missing titles, output columns and counts are those of ``govtopic predict``."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from govtopic.modeling import ModelLoadError  # noqa: E402
from govtopic.raybatch import (  # noqa: E402
    RESULT_COLUMNS,
    _Predictor,
    _table,
    _write,
    input_files,
    output_path,
    predict_ray,
    run_settings_of,
)

ROW_COLUMNS = ["file", "source", "id", "error"]


def _ray_started() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture
def table(tmp_path) -> Path:
    path = tmp_path / "in" / "a.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"id": "1", "text": "关于做好春季农业生产工作的通知"}, ensure_ascii=False) + "\n")
    return path


@pytest.mark.parametrize(
    "option, expected",
    [
        ({"batch_docs": 0}, "--batch-docs must be a whole number of at least 1"),
        ({"actors": 0}, "--actors must be a whole number of at least 1"),
        ({"top_k": 0}, "--top-k must be a whole number of at least 1"),
        ({"batch_size": -1}, "--batch-size must be a whole number of at least 1"),
        ({"num_cpus": -1}, "--num-cpus must be a number of at least 0"),
        ({"num_gpus": 1.5}, "--num-gpus above 1 must be a whole number"),
        ({"long_doc": "middle"}, "long_doc strategy must be one of"),
    ],
)
def test_a_bad_option_is_refused_before_ray_starts_naming_it(option, expected, table, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=expected):
        predict_ray(tmp_path / "no-model", [str(table)], out, **option)
    assert not out.exists() and not _ray_started()


def test_an_output_that_is_a_file_and_a_missing_input_are_refused(table, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ValueError, match=r"--output .*afile is a file; predict-ray writes one Parquet file"):
        predict_ray(tmp_path / "no-model", [str(table)], afile)
    assert afile.read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="no such file or folder: .*nothere"):
        predict_ray(tmp_path / "no-model", [str(tmp_path / "nothere")], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _ray_started()


def test_a_path_that_is_not_a_model_folder_is_refused_in_the_driver(table, tmp_path):
    run = tmp_path / "run"  # a run folder, not its model/ subfolder
    run.mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"hello": 1}')
    (foreign / "model.safetensors").write_bytes(b"")
    cases = [
        (run, "has no config.json, so it is not a model folder"),
        (foreign, "its config.json is not a model's configuration"),
        (table, "is a file; pass the model folder"),
        (tmp_path / "gone" / "model", "does not exist"),
    ]
    for model, expected in cases:
        with pytest.raises(ModelLoadError, match=expected):
            predict_ray(model, [str(table)], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _ray_started()


def test_each_real_file_is_read_once_and_outputs_never(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    folder = Path("in")
    folder.mkdir()
    for name in ("a.jsonl", "b.csv", "c.tsv.gz", "d.parquet", "notes.txt", ".hidden.jsonl"):
        (folder / name).write_text("x")
    (folder / "out").mkdir()  # an --output inside the input folder
    (folder / "out" / ("a.jsonl" + ".predictions.parquet")).write_text("x")
    (folder / "out" / "b.csv.predictions.parquet.partial").write_text("x")
    with caplog.at_level(logging.INFO, logger="govtopic.raybatch"):
        files = input_files(["in/a.jsonl", os.path.abspath("in/a.jsonl"), "in", "in"])
    assert files == [Path("in/a.jsonl"), Path("in/b.csv"), Path("in/c.tsv.gz"), Path("in/d.parquet")]
    log = caplog.text
    assert "is the same file as in/a.jsonl, listed before: each file is read once" in log
    assert "1 file(s) of in were listed before" in log and "folder in was listed before" in log
    assert "notes.txt" in log and "use `govtopic predict` for .txt documents" in log
    assert "(govtopic's own outputs, never read as documents): out/a.jsonl.predictions.parquet" in log
    assert "hidden or system files" in log


def test_a_folder_with_nothing_to_read_is_named_not_a_silent_zero(tmp_path, caplog):
    folder = tmp_path / "tc"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="no files to predict in .*tc: predict-ray reads JSONL, JSON, CSV and TSV"):
        predict_ray(tmp_path / "no-model", [str(folder)], tmp_path / "out")
    assert "notes.txt" in caplog.text and not (tmp_path / "out").exists()


def test_missing_titles_and_texts_are_read_as_predict_reads_them(tiny_model_dir):
    from govtopic.predict import TopicClassifier

    nan = float("nan")
    docs = [
        ("关于加强城市规划管理的通知", "各区人民政府"),
        (nan, "关于做好春季农业生产工作的通知"),  # a row without a title, once pandas held the column
        (None, "关于做好春季农业生产工作的通知"),
        ("关于加强城市规划管理的通知", nan),
        (nan, nan),
    ]
    batch = pd.DataFrame(
        {
            "file": ["f"] * 6,
            "source": [f"f:{i}" for i in range(6)],
            "id": [str(i) for i in range(6)],
            "title": [t for t, _ in docs] + ["x"],
            "text": [x for _, x in docs] + ["x"],
            "error": [None] * 5 + ["malformed JSON"],
        }
    )
    got = _Predictor(str(tiny_model_dir), {"batch_size": 8, "top_k": 2, "long_doc": None})(batch)
    clf = TopicClassifier(tiny_model_dir)
    plain = [{"title": t if isinstance(t, str) else "", "text": x if isinstance(x, str) else ""} for t, x in docs]
    expected = clf.predict(plain, top_k=2)
    assert list(got.columns) == ROW_COLUMNS + RESULT_COLUMNS
    for (_, row), want in zip(got.iterrows(), expected):
        assert set(want) <= set(RESULT_COLUMNS)  # every field predict gives has its column
        assert row["label"] == want["label"] and row["reason"] == want.get("reason")
        assert row["top_k"] == (json.dumps(want["top_k"], ensure_ascii=False) if "top_k" in want else None)
    assert got["label"].iloc[4] is None and got["reason"].iloc[4] == "empty document"
    assert got["error"].iloc[5] == "malformed JSON" and got["label"].iloc[5] is None


def test_every_output_has_one_schema_and_counts_what_was_predicted(tmp_path):
    settings = {"top_k": 1}
    errors_only = pd.DataFrame({"file": ["a"], "source": ["a:1"], "id": [None], "error": ["malformed JSON"]})
    results = pd.DataFrame(
        {
            "file": ["b"] * 3,
            "source": ["b:1", "b:2", "b:3"],
            "id": ["1", None, "3"],
            "error": [None, None, "bad"],
            "label": ["A\\x", None, None],
            "score": [0.5, math.nan, None],
            "windows": [2.0, 0.0, math.nan],  # ints held as floats beside NaN
            "truncated": [False, False, None],
            "needs_review": [True, None, None],
            "reason": [None, "empty document", None],
        }
    )
    first, second = _table(errors_only, settings), _table(results, settings)
    assert first.schema.equals(second.schema, check_metadata=True)
    assert first.column_names == ROW_COLUMNS + RESULT_COLUMNS
    both = pa.concat_tables([first, second])
    assert both.column("windows").to_pylist() == [None, 2, 0, None]
    assert both.column("needs_review").to_pylist() == [None, True, None, None]

    counts = {"predicted": 0, "no_topic": 0, "errors": 0, "files_done": 0}
    _write(results, tmp_path / "b.predictions.parquet", settings, counts)
    assert counts == {"predicted": 1, "no_topic": 1, "errors": 1, "files_done": 1}
    assert not list(tmp_path.glob("*.partial"))


def test_resuming_with_other_settings_or_another_model_is_refused(tiny_model_dir, tiny_model_copy, table, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = run_settings_of(str(tiny_model_dir), 1, None, "text", None, "id")
    frame = pd.DataFrame({"file": [str(table)], "source": [f"{table}:1"], "id": ["1"], "error": [None]})
    _write(frame, output_path(out, table), before, {"predicted": 0, "no_topic": 0, "errors": 0, "files_done": 0})

    # The same settings: nothing left to do, and Ray is not even started.
    again = predict_ray(tiny_model_dir, [str(table)], out)
    assert again["files_skipped"] == 1 and again["files_done"] == 0 and not _ray_started()
    with pytest.raises(ValueError, match=r"other settings: top_k was 1, now 3 \(in a.jsonl.predictions.parquet\)"):
        predict_ray(tiny_model_dir, [str(table)], out, top_k=3)
    with pytest.raises(ValueError, match="model was .*, now .*delete those files .* or choose another --output"):
        predict_ray(tiny_model_copy, [str(table)], out)
    assert sorted(p.name for p in out.iterdir()) == ["a.jsonl.predictions.parquet"]


def test_damaged_weights_are_refused_in_the_driver_not_in_every_actor(tiny_model_copy, table, tmp_path):
    weights = tiny_model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="could not load weights"):
        predict_ray(str(tiny_model_copy), [str(table)], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _ray_started()
