"""The HTTP service on a real uvicorn server over loopback: batched answers equal predict(), limits, faults,
bad input, metrics and graceful shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
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
from govtopic.serve_batching import Batcher  # noqa: E402
from govtopic.serve_settings import ServeSettings  # noqa: E402

SETTINGS = ServeSettings(max_docs=16, max_doc_chars=4000, max_body_bytes=64_000, max_queue=16, max_wait_ms=20)


class TestModel:
    """The tiny model, failing on documents that contain BOOM and holding a batch with WAIT until released."""

    __test__ = False

    def __init__(self, clf: TopicClassifier):
        self.clf = clf
        self.gate = threading.Event()
        self.gate.set()
        self.holding = threading.Event()  # set while a batch with WAIT is held

    def __getattr__(self, name):
        return getattr(self.clf, name)

    def predict(self, docs, **options):
        texts = [d if isinstance(d, str) else d["text"] for d in docs]
        if any("BOOM" in t for t in texts):
            raise RuntimeError("the model failed on this document")
        if any("WAIT" in t for t in texts):
            self.holding.set()
            self.gate.wait(30)
            self.holding.clear()
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
    assert "this request's 16 document(s) do not fit in the queue (1 of --max-queue 16 taken)" in answer.json()["error"]
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
    assert {"govtopic_version", "title_rule", "temperature", "ngram_weight", "ngram_full_weight"} <= set(info)
    assert client.get("/ready").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_a_lone_request_is_not_held_for_the_batching_wait(model):
    # A minute's wait would time the client out (30 s) if the worker waited for companions that never come.
    settings = dataclasses.replace(SETTINGS, max_wait_ms=60_000)
    docs = _sample_docs(3)
    with ThreadServer(create_app(model, settings)) as running, httpx.Client(base_url=running.url, timeout=30) as c:
        for doc in docs:
            _same(c.post("/predict", json={"document": doc}).json()["result"], model.clf.predict(doc))
        results = c.post("/predict", json={"documents": docs}).json()["results"]
        for doc, result in zip(docs, results):
            _same(result, model.clf.predict(doc))


def test_the_worker_waits_for_arriving_requests_and_only_for_them():
    calls = []

    def predict(docs, **options):
        calls.append(list(docs))
        return [{"label": d} for d in docs]

    async def scenario():
        batcher = Batcher(predict, ServeSettings(max_wait_ms=60_000))
        batcher.start()
        try:
            options = {"top_k": 1, "long_doc": None, "return_evidence": False}
            alone = await asyncio.wait_for(batcher.submit(["a"], **options), 30)
            arriving = batcher.arrive()  # received, not yet queued: the worker holds "b" for it
            first = asyncio.ensure_future(batcher.submit(["b"], **options))
            await asyncio.sleep(0.2)
            assert not first.done()
            together = await asyncio.wait_for(batcher.submit(["c", "d"], **options, arrival=arriving), 30)
            refused = batcher.arrive()
            held = asyncio.ensure_future(batcher.submit(["e"], **options))
            await asyncio.sleep(0.2)
            refused.close()  # a request refused before queueing (bad body): the worker stops waiting for it
            last = await asyncio.wait_for(held, 30)
            return alone, await first, together, last
        finally:
            await asyncio.to_thread(batcher.stop)

    alone, first, together, last = asyncio.run(scenario())
    assert calls == [["a"], ["b", "c", "d"], ["e"]]
    assert [r["label"] for r in alone + first + together + last] == ["a", "b", "c", "d", "e"]


def test_requests_queued_during_a_batch_are_predicted_together(server, client, model):
    model.gate.clear()
    docs = _sample_docs(4)
    before = _batch_count(client.get("/metrics").text, "+Inf") - _batch_count(client.get("/metrics").text, "2.0")

    async def during_a_held_batch():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            held = asyncio.ensure_future(c.post("/predict", json={"document": "WAIT"}))
            assert await asyncio.to_thread(model.holding.wait, 30), "the WAIT batch was not predicted"
            sent = [asyncio.ensure_future(c.post("/predict", json={"document": doc})) for doc in docs]
            for _ in range(400):  # until all five documents are queued or predicted
                if (await c.get("/ready")).json()["queued_documents"] >= 5:
                    break
                await asyncio.sleep(0.05)
            model.gate.set()
            await held
            return [(await answer).json()["result"] for answer in sent]

    try:
        results = asyncio.run(during_a_held_batch())
    finally:
        model.gate.set()
    for doc, result in zip(docs, results):
        _same(result, model.clf.predict(doc))
    text = client.get("/metrics").text
    assert _batch_count(text, "+Inf") - _batch_count(text, "2.0") == before + 1, "the 4 queued were not one batch"


def _batch_count(metrics_text: str, le: str) -> float:
    """The cumulative count of batches of at most ``le`` documents in the batch-size histogram."""
    for line in metrics_text.splitlines():
        if line.startswith(f'govtopic_batch_size_bucket{{le="{le}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no batch-size bucket le={le}")


def _start(command: list[str], url: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the server did not start: {proc.communicate()[0].decode()[-2000:]}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_serve_answers_a_lone_request_at_once_and_stops_on_sigterm(tiny_model_dir):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "govtopic.cli", "serve", str(tiny_model_dir), "--port", str(port)]
    # A minute's batching wait: the lone request still comes back within the client's 30 s.
    proc = _start([*command, "--max-wait-ms", "60000"], url)
    try:
        answer = httpx.post(f"{url}/predict", json={"document": "城市规划"}, timeout=30)
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has finished: the exit status is SIGTERM's, as for any server.
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answer.status_code == 200 and answer.json()["result"]["label"] is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)


# A real server process whose model holds any batch with a HOLD document until the file argv[3] exists.
HOLDING_SERVER = """
import os, sys, time
from govtopic.predict import TopicClassifier
from govtopic.serve import serve
from govtopic.serve_settings import ServeSettings

class Holding:
    def __init__(self, clf):
        self.clf = clf
    def __getattr__(self, name):
        return getattr(self.clf, name)
    def predict(self, docs, **options):
        if any("HOLD" in (d if isinstance(d, str) else d["text"]) for d in docs):
            for _ in range(1200):
                if os.path.exists(sys.argv[3]):
                    break
                time.sleep(0.05)
        return self.clf.predict(docs, **options)

serve(Holding(TopicClassifier(sys.argv[1])), port=int(sys.argv[2]), settings=ServeSettings(drain_seconds=600))
"""


@pytest.mark.slow
def test_sigterm_drains_ready_says_503_and_accepted_requests_finish(tiny_model_dir, tmp_path):
    port, release = _free_port(), tmp_path / "release"
    url = f"http://127.0.0.1:{port}"
    docs = ["HOLD 城市规划 建设用地", {"title": "医院", "text": "医疗 卫生"}]
    expected = TopicClassifier(tiny_model_dir).predict(docs)
    proc = _start([sys.executable, "-c", HOLDING_SERVER, str(tiny_model_dir), str(port), str(release)], url)
    answers = []
    sender = threading.Thread(
        target=lambda: answers.append(httpx.post(f"{url}/predict", json={"documents": docs}, timeout=120))
    )
    try:
        sender.start()
        for _ in range(400):  # until the batch is being predicted (held)
            if httpx.get(f"{url}/ready", timeout=5).json()["queued_documents"] >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        for _ in range(400):  # the server notices the signal within a tick (0.1 s)
            ready = httpx.get(f"{url}/ready", timeout=5)
            if ready.status_code == 503:
                break
            time.sleep(0.05)
        assert ready.status_code == 503 and ready.json()["reason"] == "shutting down"
        refused = httpx.post(f"{url}/predict", json={"document": "城市规划"}, timeout=30)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "shutting down" in refused.json()["error"]
        assert sender.is_alive(), "the accepted request was answered before its batch was released"
        release.touch()
        sender.join(60)
        # Answered, and the drain (--drain-seconds, 600 here) still keeps the server out of rotation.
        assert httpx.get(f"{url}/ready", timeout=5).status_code == 503
        proc.send_signal(signal.SIGTERM)  # a second signal ends the drain
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
    assert answers and answers[0].status_code == 200
    for got, want in zip(answers[0].json()["results"], expected):
        _same(got, want)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
