"""The HTTP service's answers to input and settings it cannot take: a body not sent as JSON, a request larger
than the queue, the documented error bodies, a port or device that cannot work, settings out of range and JSON
the parser gives up on. Each is a clean message naming the fix, never a traceback or a bare 500."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from govtopic.cli import main  # noqa: E402
from govtopic.predict import TopicClassifier  # noqa: E402
from govtopic.serve import create_app  # noqa: E402
from govtopic.serve_errors import validation_problems  # noqa: E402
from govtopic.serve_settings import ServeSettings  # noqa: E402

SETTINGS = ServeSettings(max_docs=4, max_queue=8, max_wait_ms=0)


@pytest.fixture(scope="module")
def classifier(tiny_model_dir) -> TopicClassifier:
    return TopicClassifier(tiny_model_dir)


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier, SETTINGS), raise_server_exceptions=False) as c:
        yield c


def _count(client: TestClient, endpoint: str, status: int) -> float:
    prefix = f'govtopic_requests_total{{endpoint="{endpoint}",status="{status}"}}'
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


# ---------------------------------------------------------------- 1. a body not sent as JSON; every error is JSON
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_body_not_sent_as_json_gets_415_naming_the_header_and_is_counted(client, content_type):
    before = _count(client, "/predict", 415)
    headers = {"content-type": content_type} if content_type else {}
    # curl -d '{"document": ...}' sends valid JSON as a form: refused all the same (see BodyLimitMiddleware)
    answer = client.post("/predict", content='{"document": "城市规划"}'.encode(), headers=headers)
    assert answer.status_code == 415, answer.text
    assert "content-type: application/json" in answer.json()["error"]
    assert answer.json()["problems"][0]["field"] == "body"
    assert _count(client, "/predict", 415) == before + 1


def test_json_with_a_charset_or_a_json_suffix_is_taken(client):
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        answer = client.post(
            "/predict", content='{"document": "城市规划"}'.encode(), headers={"content-type": content_type}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["label"] is not None


def test_an_unexpected_failure_answers_a_json_500_and_is_counted(classifier):
    class NoRecord:  # a model object without what /info reads: a bug, not the client's fault
        source, labels = classifier.source, classifier.labels

        def predict(self, docs, **options):
            return classifier.predict(docs, **options)

    with TestClient(create_app(NoRecord(), SETTINGS), raise_server_exceptions=False) as c:
        answer = c.get("/info")
        assert answer.status_code == 500
        assert "internal server error (AttributeError)" in answer.json()["error"]
        assert _count(c, "/info", 500) == 1


def test_a_problem_with_any_value_found_is_described():
    errors = [{"type": "model_attributes_type", "loc": ("body",), "msg": "x", "input": b"\xff{bytes}"}]
    status, message, problems = validation_problems(errors)
    assert status == 422 and "expected a JSON object" in message and "b'\\xff{bytes}'" in message


# ---------------------------------------------------------------- 2. a request larger than the queue
def test_max_docs_above_max_queue_is_refused_at_start():
    with pytest.raises(ValueError) as refused:
        ServeSettings(max_queue=3).check()
    message = str(refused.value)
    assert "--max-docs (64) is above --max-queue (3)" in message
    assert "lower --max-docs or raise --max-queue" in message
    ServeSettings(max_queue=3, max_docs=3).check()


def test_a_request_above_max_docs_is_422_not_a_busy_503(client):
    answer = client.post("/predict", json={"documents": ["城市规划"] * 5})
    assert answer.status_code == 422
    assert "--max-docs" in answer.json()["error"] and "busy" not in answer.json()["error"]


# ---------------------------------------------------------------- 3. the documented error bodies
def test_openapi_documents_the_error_body_the_server_sends(client):
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/predict"]["post"]["responses"]
    for status in ("400", "413", "415", "422", "500", "503"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, status
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorBody"]["required"]) == {"error", "problems"}
    assert spec["paths"]["/ready"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NotReady"
    }
    sent = client.post("/predict", json={"document": "x", "topk": 3}).json()
    assert set(sent) == set(schemas["ErrorBody"]["properties"])
    assert set(sent["problems"][0]) == set(schemas["Problem"]["properties"])


# ---------------------------------------------------------------- 4-6. options refused before anything is loaded
def _serve_cli(tiny_model_dir, monkeypatch, capsys, *options: str) -> tuple[int, str]:
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(sys.modules["govtopic.predict"], "TopicClassifier", no_loading)
    code = main(["serve", str(tiny_model_dir), *options])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--max-wait-ms", "-5"], "govtopic serve: error: --max-wait-ms must be 0 or more, got -5\n"),
        (
            ["--max-queue", "0", "--drain-seconds", "-1.5"],
            "govtopic serve: error: --max-queue must be above 0, got 0; --drain-seconds must be 0 or more, got -1.5\n",
        ),
        (["--port", "99999"], "govtopic serve: error: --port must be 1 to 65535 (or 0 for any free port), got 99999\n"),
        (["--port", "-1"], "govtopic serve: error: --port must be 1 to 65535 (or 0 for any free port), got -1\n"),
        (["--device", "foo"], "govtopic serve: error: --device 'foo' is not a device torch knows: expected cpu, "),
        (["--device", "meta"], "govtopic serve: error: --device meta: the meta device holds no weights; use --device "),
    ],
)
def test_options_out_of_range_get_one_clear_sentence_each_and_exit_2(
    tiny_model_dir, monkeypatch, capsys, options, message
):
    code, err = _serve_cli(tiny_model_dir, monkeypatch, capsys, *options)
    assert code == 2
    assert err.startswith(message), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_cuda_without_cuda_names_the_option_and_the_fix(tiny_model_dir, monkeypatch, capsys):
    code, err = _serve_cli(tiny_model_dir, monkeypatch, capsys, "--device", "cuda")
    assert code == 2
    assert err.startswith("govtopic serve: error: --device cuda: ")
    assert "use --device cpu, or leave --device out" in err and "Traceback" not in err


@pytest.mark.slow
def test_port_0_prints_the_port_it_listens_on(tiny_model_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "govtopic.cli", "serve", str(tiny_model_dir), "--port", "0"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()  # printed once the server listens
        assert line.startswith("govtopic serve: http://127.0.0.1:"), line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        assert port != 0
        for _ in range(100):
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json() == {"status": "ok"}
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"nothing answers on port {port}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- 7. JSON the parser gives up on
@pytest.mark.parametrize(
    "raw, words",
    [
        (b"[" * 100_000, ["malformed JSON: nested too deeply"]),
        (
            b'{"document": "x", "top_k": ' + b"7" * 5000 + b"}",
            ["a number of 5000 digits", f"limit of {sys.get_int_max_str_digits()}"],
        ),
    ],
)
def test_json_the_parser_gives_up_on_is_named(client, raw, words):
    answer = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    for word in words:
        assert word in answer.json()["error"]
    assert answer.json()["problems"][0]["field"] == "body"
