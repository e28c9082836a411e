"""scripts/litserve_server.py, the LitServe wrapper scripts/load_test.py measures beside govtopic serve: its hooks
give predict()'s answers, and a real server answers concurrent requests in order and leaves no process behind."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ls = pytest.importorskip("litserve")
httpx = pytest.importorskip("httpx")

from conftest import ROOT  # noqa: E402

SCRIPT = ROOT / "scripts" / "litserve_server.py"
DOCS = [
    {"title": "关于加强城市规划管理的通知", "text": "各区人民政府……"},
    "环境监测",
    {"title": "", "text": "医院卫生"},
]


def _script():
    spec = importlib.util.spec_from_file_location("litserve_server", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hooks_give_predict_answers(tiny_model_dir):
    from govtopic.predict import TopicClassifier

    server = _script()
    api = server.TopicAPI(str(tiny_model_dir), 8, max_batch_size=4, batch_timeout=0.005)
    api.setup("cpu")
    batch = [api.decode_request(server.OneDocument(document=doc)) for doc in DOCS]
    answers = [api.encode_response(r) for r in api.predict(batch)]
    expected = TopicClassifier(tiny_model_dir, device="cpu").predict(DOCS, batch_size=8)
    assert [a["result"]["label"] for a in answers] == [r["label"] for r in expected]
    with pytest.raises(ValueError):  # pydantic: checked before it could join a batch
        server.OneDocument(document=5)


def _group_ends(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_server_answers_in_order_and_sigterm_ends_every_process(tiny_model_dir):
    from govtopic.predict import TopicClassifier

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), str(tiny_model_dir), str(port), "--max-batch-size", "8"]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    docs = DOCS * 8

    async def send_all():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict", json={"document": d}) for d in [*docs, 5]))

    try:
        for _ in range(1200):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        *answers, malformed = asyncio.run(send_all())
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert _group_ends(proc.pid, 30)  # LitServe's worker processes end with it
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    expected = TopicClassifier(tiny_model_dir, device="cpu").predict(docs, batch_size=32)
    assert [a.status_code for a in answers] == [200] * len(docs)
    assert [a.json()["result"]["label"] for a in answers] == [r["label"] for r in expected]
    assert malformed.status_code == 422
