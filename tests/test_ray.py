"""Batch prediction on a local Ray instance: the same labels as ``govtopic predict``, one Parquet file per input,
resumed by file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from conftest import SAMPLE  # noqa: E402
from govtopic.batch import predict_files  # noqa: E402
from govtopic.cli import main  # noqa: E402
from govtopic.raybatch import RESULT_COLUMNS, output_path, predict_ray  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def inputs(tmp_path):
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh][:50]
    rows = [{"id": r["id"], "title": r.get("title") or "", "text": r["text"][:600]} for r in rows]
    jsonl = tmp_path / "part-a.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in rows[:30]]
    lines.insert(5, "{not json")  # an unreadable row is reported in its place, not a stop
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    import pyarrow as pa

    parquet = tmp_path / "part-b.parquet"
    pq.write_table(pa.Table.from_pylist(rows[30:]), parquet)
    return [str(jsonl), str(parquet)]


def test_ray_gives_the_labels_of_govtopic_predict_and_resumes_by_file(local_ray, tiny_model_dir, inputs, tmp_path):
    out = tmp_path / "ray-out"
    counts = predict_ray(tiny_model_dir, inputs, out, actors=2, num_cpus=1, batch_docs=8)
    assert counts["files_done"] == 2 and counts["predicted"] == 50 and counts["errors"] == 1

    reference = tmp_path / "cli.jsonl"
    predict_files(inputs, str(tiny_model_dir), reference, progress=False)
    expected = {}
    for line in reference.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        expected[row["source"]] = row
    got = {}
    for f in inputs:
        for row in pq.read_table(output_path(out, Path(f))).to_pylist():
            got[row["source"]] = row
    readable = {s: r for s, r in got.items() if r["error"] is None}
    assert set(readable) == set(expected)
    for source, row in readable.items():
        assert row["label"] == expected[source]["label"], source
        assert row["id"] == expected[source]["id"]
        assert row["score"] == pytest.approx(expected[source]["score"], abs=1e-5)
    assert [r["error"] for r in got.values() if r["error"]] == [
        "malformed JSON (Expecting property name enclosed in double quotes: column 2)"
    ]
    # In input order, as govtopic predict writes them.
    first = pq.read_table(output_path(out, Path(inputs[0]))).column("source").to_pylist()
    assert first == sorted(first, key=lambda s: int(s.rsplit(":", 1)[1]))

    # A rerun skips finished files; a removed output is predicted again, through the command line.
    again = predict_ray(tiny_model_dir, inputs, out)
    assert again["files_skipped"] == 2 and again["files_done"] == 0
    removed = output_path(out, Path(inputs[1]))
    removed.unlink()
    assert main(["predict-ray", str(tiny_model_dir), *inputs, "--output", str(out), "--batch-docs", "8"]) == 0
    assert removed.exists() and pq.read_table(removed).num_rows == 20


def test_ray_reads_rows_without_titles_each_file_once_and_never_its_own_outputs(local_ray, tiny_model_dir, tmp_path):
    import pyarrow as pa

    docs = tmp_path / "docs"
    docs.mkdir()
    mixed = docs / "mixed.jsonl"  # some rows with a title, some without: NaN titles once pandas held them
    rows = [
        {"id": "m1", "title": "关于加强城市规划管理的通知", "text": "各区人民政府"},
        {"id": "m2", "text": "关于做好春季农业生产工作的通知"},
        {"id": "m3", "title": "", "text": ""},
    ]
    mixed.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{not json\n", encoding="utf-8")
    nulls = {"id": ["p1", "p2", "p3"], "title": [None, "关于加强城市规划管理的通知", None]}
    nulls["text"] = ["关于做好春季农业生产工作的通知", None, None]
    pq.write_table(pa.Table.from_pydict(nulls), docs / "nulls.parquet")
    (docs / "t.csv").write_text("id,text\nc1,关于做好春季农业生产工作的通知\n", encoding="utf-8")
    (docs / "notes.txt").write_text("not a table", encoding="utf-8")
    out = docs / "out"  # inside the input folder: its outputs must never become inputs

    # The folder, and one of its files twice (relative and absolute): each file predicted once.
    inputs = [str(docs), str(mixed), str(mixed.resolve())]
    counts = predict_ray(tiny_model_dir, inputs, out, actors=2, num_cpus=1, batch_docs=2)
    assert (counts["files_done"], counts["predicted"], counts["no_topic"], counts["errors"]) == (3, 5, 2, 1)

    reference = tmp_path / "cli.jsonl"
    files = [docs / "mixed.jsonl", docs / "nulls.parquet", docs / "t.csv"]
    predict_files([str(f) for f in files], str(tiny_model_dir), reference, progress=False)
    expected = [json.loads(line) for line in reference.read_text(encoding="utf-8").splitlines()]
    tables = [pq.read_table(output_path(out, f)) for f in files]
    assert all(t.schema.equals(tables[0].schema, check_metadata=True) for t in tables)
    got = [r for r in pa.concat_tables(tables).to_pylist() if r["error"] is None]
    assert [r["source"] for r in got] == [r["source"] for r in expected]
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert [r["reason"] for r in got] == [r.get("reason") for r in expected]
    assert [r["guessed_title"] for r in got] == [r.get("guessed_title") for r in expected]
    assert tables[0].column_names == ["file", "source", "id", "error", *RESULT_COLUMNS]

    # A rerun finds everything done and reads none of its own outputs as documents.
    written = sorted(p.name for p in out.iterdir())
    again = predict_ray(tiny_model_dir, [str(docs)], out)
    assert (again["files_skipped"], again["files_done"]) == (3, 0)
    assert sorted(p.name for p in out.iterdir()) == written
