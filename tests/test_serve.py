"""The HTTP service on a real uvicorn server over loopback: batched answers equal predict(), limits, faults,
bad input, metrics and graceful shutdown."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from conftest import SAMPLE  # noqa: E402
from govtopic.predict import TopicClassifier  # noqa: E402
from govtopic.serve import create_app  # noqa: E402
from govtopic.serve_settings import ServeSettings  # noqa: E402

SETTINGS = ServeSettings(max_docs=16, max_doc_chars=4000, max_body_bytes=64_000, max_queue=16, max_wait_ms=20)


class TestModel:
    """The tiny model, failing on documents that contain BOOM and holding a batch with WAIT until released."""

    __test__ = False

    def __init__(self, clf: TopicClassifier):
        self.clf = clf
        self.gate = threading.Event()
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.clf, name)

    def predict(self, docs, **options):
        texts = [d if isinstance(d, str) else d["text"] for d in docs]
        if any("BOOM" in t for t in texts):
            raise RuntimeError("the model failed on this document")
        if any("WAIT" in t for t in texts):
            self.gate.wait(30)
        return self.clf.predict(docs, **options)


class ThreadServer:
    """uvicorn serving ``app`` from a thread on a free loopback port."""

    def __init__(self, app):
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        for _ in range(300):
            if self.server.started:
                break
            time.sleep(0.05)
        assert self.server.started, "the test server did not start within 15 s"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> TestModel:
    return TestModel(TopicClassifier(tiny_model_dir))


@pytest.fixture(scope="module")
def server(model):
    with ThreadServer(create_app(model, SETTINGS)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _sample_docs(n: int) -> list:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    docs = []
    for i, row in enumerate(r for r in rows if r.get("split") == "test"):
        if len(docs) == n:
            break
        text = row["text"][: 300 + 50 * (i % 7)]  # distinct lengths: batches mix short and long documents
        docs.append(text if i % 3 == 0 else {"title": row.get("title") or "", "text": text})
    return docs


def _same(got: dict, want: dict) -> None:
    assert got["label"] == want["label"]
    assert got["windows"] == want["windows"]
    assert got["score"] == pytest.approx(want["score"], abs=1e-5)


def test_concurrent_requests_get_their_own_answers_equal_to_predict(server, model):
    docs = _sample_docs(48)
    expected = [model.clf.predict(d) for d in docs]

    async def send_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            limit = asyncio.Semaphore(16)

            async def one(i):
                async with limit:
                    return i, (await c.post("/predict", json={"document": docs[i]})).json()

            async def many(start):
                body = {"documents": docs[start : start + 4]}
                return start, (await c.post("/predict", json=body)).json()

            singles = await asyncio.gather(*(one(i) for i in range(0, 32)))
            groups = await asyncio.gather(*(many(s) for s in range(32, 48, 4)))
            return singles, groups

    singles, groups = asyncio.run(send_all())
    for i, answer in singles:
        _same(answer["result"], expected[i])
    for start, answer in groups:
        for k, result in enumerate(answer["results"]):
            _same(result, expected[start + k])


def test_documents_of_one_request_are_predicted_as_one_batch(client):
    docs = _sample_docs(8)
    assert client.post("/predict", json={"documents": docs}).status_code == 200
    text = client.get("/metrics").text
    sizes = {
        line.split('le="')[1].split('"')[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("govtopic_batch_size_bucket")
    }
    assert sizes["+Inf"] > sizes["4.0"], "no batch of more than 4 documents was formed"


def test_ids_and_options_come_back(client):
    body = {"documents": [{"id": "a1", "title": "关于城市规划的通知", "text": "城市规划 建设用地"}], "top_k": 3}
    result = client.post("/predict", json=body).json()["results"][0]
    assert result["id"] == "a1"
    assert len(result["top_k"]) == 3
    evidence = client.post("/predict", json={"document": "城市规划 建设用地", "return_evidence": True}).json()
    assert "evidence" in evidence["result"]


def test_a_failing_document_gets_its_own_error_and_the_others_succeed(client, model):
    docs = ["城市规划 建设用地", "BOOM 城市规划", {"title": "医院", "text": "医疗 卫生"}]
    answer = client.post("/predict", json={"documents": docs})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert "the model failed" in results[1]["error"]
    _same(results[0], model.clf.predict(docs[0]))
    _same(results[2], model.clf.predict(docs[2]))
    single = client.post("/predict", json={"document": "BOOM"})
    assert single.status_code == 500 and "the model failed" in single.json()["error"]
    assert client.post("/predict", json={"document": "城市规划"}).status_code == 200


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"documents": ["x"] * 17}, 422, ["17 documents", "limit of 16", "--max-docs"]),
        ({"documents": ["ok", "长" * 4001]}, 422, ["documents[1]", "4001 characters", "--max-doc-chars"]),
        ({"document": "长" * 30_000}, 413, ["limit of 64000", "--max-body-bytes"]),
    ],
)
def test_limits_name_the_limit_and_the_setting(client, body, status, words):
    answer = client.post("/predict", json=body)
    assert answer.status_code == status
    for word in words:
        assert word in answer.json()["error"]


@pytest.mark.parametrize(
    "raw, status, words",
    [
        (b"", 422, ["empty request body"]),
        (b'{"documents": [', 400, ["malformed JSON"]),
        (b'{"document": "\xff\xfe"}', 400, ["not UTF-8", "offset 14"]),
        (b"[1, 2]", 422, ["expected a JSON object"]),
        (b'{"documents": "text"}', 422, ["documents: expected a list"]),
        (b'{"documents": [1]}', 422, ["documents[0]: expected a string", "found 1"]),
        (b'{"documents": [{"title": 5}]}', 422, ["documents[0].title: expected a string"]),
        (b'{"documents": [{"body": "x"}]}', 422, ["documents[0].body: unknown field", "'title', 'text'"]),
        (b'{"document": "x", "topk": 3}', 422, ["topk: unknown field", "'top_k'"]),
        (b'{"document": "x", "top_k": "3"}', 422, ["top_k: expected a whole number"]),
        (b'{"document": "x", "top_k": 0}', 422, ["top_k"]),
        (b'{"document": "x", "long_doc": "all"}', 422, ["long_doc: expected 'head', 'head_tail', 'chunks'"]),
        (b"{}", 422, ["exactly one of 'document'", "neither"]),
    ],
)
def test_bad_input_is_refused_with_the_field_and_the_fix(client, raw, status, words):
    answer = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    for word in words:
        assert word in answer.json()["error"]
    assert client.get("/health").json() == {"status": "ok"}


def test_a_full_queue_answers_503_with_retry_after(server, client, model):
    model.gate.clear()
    with httpx.Client(base_url=server.url, timeout=60) as other:
        held = threading.Thread(target=other.post, args=("/predict",), kwargs={"json": {"document": "WAIT"}})
        held.start()
        try:
            for _ in range(200):  # until the held document is queued
                if client.get("/ready").json()["queued_documents"] >= 1:
                    break
                time.sleep(0.05)
            answer = client.post("/predict", json={"documents": ["城市规划"] * 16})
        finally:
            model.gate.set()
            held.join(30)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert "--max-queue" in answer.json()["error"]
    assert client.post("/predict", json={"documents": ["城市规划"] * 16}).status_code == 200


def test_metrics_info_and_docs(client, model):
    client.post("/predict", json={"document": "城市规划"})
    text = client.get("/metrics").text
    assert 'govtopic_requests_total{endpoint="/predict",status="200"}' in text
    for name in ("govtopic_batch_size_bucket", "govtopic_request_latency_seconds_count", "govtopic_documents_total"):
        assert name in text
    info = client.get("/info").json()
    assert info["labels"] == model.labels
    assert info["long_doc"]["strategy"] == model.long_doc.strategy
    assert {"govtopic_version", "title_rule", "temperature", "ngram_weight"} <= set(info)
    assert client.get("/ready").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


@pytest.mark.slow
def test_sigterm_finishes_accepted_requests_then_exits(tiny_model_dir, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "govtopic.cli", "serve", str(tiny_model_dir), "--port", str(port)]
    # A long batching wait keeps the request in the server when SIGTERM arrives.
    proc = subprocess.Popen(
        [*command, "--max-wait-ms", "3000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        answers = []
        sender = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{url}/predict", json={"document": "城市规划"}, timeout=60))
        )
        sender.start()
        for _ in range(100):
            if httpx.get(f"{url}/ready", timeout=5).json()["queued_documents"] >= 1:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        sender.join(60)
        # uvicorn re-raises the signal once it has finished: the exit status is SIGTERM's, as for any server.
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["result"]["label"] is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
