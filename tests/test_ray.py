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
from govtopic.raybatch import output_path, predict_ray  # noqa: E402

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
