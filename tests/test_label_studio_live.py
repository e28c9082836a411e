"""The review queue against the real Label Studio: a local server takes govtopic's labelling config and tasks, a
person's annotation comes back in its export, and that export relabels the document for training.

The server and label-studio-sdk live in their own environment, ``.venv-labelstudio`` (made by
``scripts/setup_label_studio.sh``; label-studio pins numpy and pyarrow below govtopic's). The server runs on
127.0.0.1 with its own temporary data folder and SQLite database; the SDK is used from that environment through
``tests/labelstudio_client.py``, one step per call, answering JSON.

Without ``.venv-labelstudio`` the test fails and says how to make it; ``GOVTOPIC_SKIP_LABEL_STUDIO=1`` skips it
(whether or not the environment is there).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import ROOT, TAXONOMY, synthetic_rows
from govtopic.cli import main
from govtopic.config import DataConfig, SourceConfig
from govtopic.corrections import read_export
from govtopic.data import load_labelled, read_source
from govtopic.evaluation import update_record

SKIP = os.environ.get("GOVTOPIC_SKIP_LABEL_STUDIO") == "1"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SKIP, reason="GOVTOPIC_SKIP_LABEL_STUDIO=1: the live Label Studio test is skipped"),
]

LS_VENV = ROOT / ".venv-labelstudio"
LS_PYTHON = LS_VENV / "bin" / "python"
LS_SERVER = LS_VENV / "bin" / "label-studio"
CLIENT = Path(__file__).with_name("labelstudio_client.py")
# Seconds: a first start migrates a new SQLite database, about 45 s on two busy cores.
STARTUP_TIMEOUT = 300
CLIENT_TIMEOUT = 120
DOCS = ["关于加强城市规划管理的通知。" * 3, "法院审理案件。", "医院卫生监督工作。" * 8, "其他事项", "环境监测"]
# The reviewer's decision for d1 (the model says 城乡建设 for it).
CORRECTED = ("d1", "公安、安全、司法", "司法")
# Settings Label Studio also reads from bare names (HOST, PORT, ...): none may come from the caller's environment.
_LS_BARE_NAMES = {"HOST", "PORT", "USERNAME", "PASSWORD", "USER_TOKEN", "DJANGO_DB", "DATABASE_NAME", "SENTRY_DSN"}


def _require_label_studio() -> None:
    if LS_PYTHON.is_file() and LS_SERVER.is_file():
        return
    pytest.fail(
        f"{LS_VENV} is missing: run scripts/setup_label_studio.sh to install Label Studio for this test "
        "(or set GOVTOPIC_SKIP_LABEL_STUDIO=1 to skip it)",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABEL_STUDIO_", "HEARTEX_")) and k not in _LS_BARE_NAMES
    }
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        DJANGO_DB="sqlite",
        LATEST_VERSION_CHECK="false",  # else it asks PyPI for a newer release at start
        COLLECT_ANALYTICS="false",
        CONVERTER_DOWNLOAD_RESOURCES="false",
        DISABLE_SIGNUP_WITHOUT_LINK="true",
        PYTHONUNBUFFERED="1",  # the log shows the address as soon as it listens
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


class Server:
    """A Label Studio server started in its own process group, stopped by ``stop`` whatever happened."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.log = folder / "server.log"
        self.token = secrets.token_hex(20)
        self.port = _free_port()
        data_dir = folder / "data"
        command = [
            str(LS_SERVER), "start", "--no-browser",
            "--internal-host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(data_dir),
            "--username", "reviewer@govtopic.test", "--password", secrets.token_urlsafe(16),
            "--user-token", self.token, "--enable-legacy-api-token",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=folder,
                env=_server_env(data_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends it and anything it started
            )
        self.url: str | None = None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """The server's address once /health answers; fails with the log's tail if it exits or never answers."""
        if self.url:
            return self.url
        # No proxy for loopback, whatever the environment says.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"Label Studio exited with {self.process.returncode}:\n{self.log_tail()}")
            # Label Studio moves to the next port when the one asked for was taken meanwhile: read where it went.
            found = re.search(r"Starting development server at (http://[\d.]+:\d+)/", self.log_tail(200))
            url = found.group(1) if found else f"http://127.0.0.1:{self.port}"
            try:
                with opener.open(url + "/health", timeout=5) as response:
                    if response.status == 200:
                        self.url = url
                        return url
            except OSError:
                pass
            time.sleep(1)
        pytest.fail(f"Label Studio did not answer on /health within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass

    def client(self, *args: str) -> dict:
        """One step of tests/labelstudio_client.py (label-studio-sdk, in .venv-labelstudio), its JSON answer."""
        url = self.wait_ready()
        done = subprocess.run(
            [str(LS_PYTHON), str(CLIENT), url, self.token, *args],
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"},
        )
        if done.returncode != 0:
            pytest.fail(
                f"labelstudio_client.py {args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}\n"
                f"server log:\n{self.log_tail()}"
            )
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_label_studio()
    srv = Server(tmp_path_factory.mktemp("label-studio"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def queue(tiny_model_dir, tmp_path_factory) -> Path:
    """``govtopic review`` of a small inbox: every document but the city-planning one needs a person."""
    import shutil

    folder = tmp_path_factory.mktemp("queue")
    model = Path(shutil.copytree(tiny_model_dir, folder / "model"))
    # Thresholds only the first level of 城乡建设 reaches: everything else needs a person.
    update_record(model, thresholds={"precision": 0.95, "margin": 0.0, "l1": {"城乡建设、环境保护": 0.0}, "full": {}})
    inbox = folder / "inbox.jsonl"
    rows = [{"id": f"d{i}", "title": f"通知{i}", "text": t} for i, t in enumerate(DOCS)]
    inbox.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = folder / "queue"
    assert main(["review", str(model), str(inbox), "--output", str(out), "--taxonomy", str(TAXONOMY)]) == 0
    return out


@pytest.fixture(scope="module")
def project(server, queue) -> dict:
    """The queue imported into a new Label Studio project (the server starts while the queue is written)."""
    return server.client("import", str(queue))


def _as_a_person_would(config_xml: str, first: str, second: str) -> list[dict]:
    """The result the labelling screen submits for a first- and second-level choice: the second level's Choices
    is the one shown for that first level, and it stores the choice's alias (the full label) when it has one."""
    root = ET.fromstring(config_xml)
    shown = next(c for c in root.iter("Choices") if c.get("whenChoiceValue") == first)
    choice = next(ch for ch in shown if ch.get("value") == second)
    return [
        {"from_name": "l1", "to_name": "text", "type": "choices", "value": {"choices": [first]}},
        {
            "from_name": shown.get("name"),
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [choice.get("alias") or choice.get("value")]},
        },
    ]


def test_label_studio_accepts_the_config_and_shows_each_task_with_the_models_guess(project, queue):
    tasks = json.loads((queue / "label_studio_tasks.json").read_text(encoding="utf-8"))
    assert len(tasks) >= 2
    assert project["imported"] == len(tasks) and project["predictions_imported"] == len(tasks)
    # Label Studio read every Choices of the config, and stores the alias (the full label) for a second level.
    root = ET.fromstring((queue / "label_studio_config.xml").read_text(encoding="utf-8"))
    parsed = project["parsed_label_config"]
    for choices in root.iter("Choices"):
        assert parsed[choices.get("name")]["labels"] == [ch.get("alias") or ch.get("value") for ch in choices]
    held = {t["data"]["doc_id"]: t for t in project["tasks"]}
    assert set(held) == {t["data"]["doc_id"] for t in tasks}
    for task in tasks:
        got = held[task["data"]["doc_id"]]
        assert got["data"] == task["data"]  # title, text, why and the model's label, as written
        shown = [(r["from_name"], r["value"]) for r in got["predictions"][0]["result"]]
        assert shown == [(r["from_name"], r["value"]) for r in task["predictions"][0]["result"]]
        assert shown and shown[0][0] == "l1"


def test_an_annotation_made_in_label_studio_relabels_the_document_for_training(server, project, queue, tmp_path):
    doc_id, first, second = CORRECTED
    task = next(t for t in project["tasks"] if t["data"]["doc_id"] == doc_id)
    assert task["data"]["model_label"] != f"{first}\\{second}"  # a real correction
    config = (queue / "label_studio_config.xml").read_text(encoding="utf-8")
    server.client("annotate", str(task["id"]), json.dumps(_as_a_person_would(config, first, second)))
    export = tmp_path / "export.json"
    assert server.client("export", str(project["project"]), str(export))["tasks"] == 1  # annotated tasks only

    rows = read_export(str(export))
    assert [(r["id"], r["label"]) for r in rows] == [(doc_id, f"{first}\\{second}")]
    # As `govtopic train` reads it: a later source relabels the earlier source's document with that id.
    base = tmp_path / "base.jsonl"
    labelled = synthetic_rows(60) + [{"id": doc_id, "title": "", "text": DOCS[1], "label": "其他", "split": "train"}]
    base.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labelled), encoding="utf-8")
    sources = [SourceConfig(name="base", file=str(base)), SourceConfig(name="reviewed", file=str(export))]
    data = load_labelled(DataConfig(sources=sources, taxonomy=str(TAXONOMY)), None, 0)
    assert dict(zip(data.train.ids, data.train.labels))[doc_id] == f"{first}\\{second}"
    assert data.skipped["corrections_applied"] == 1 and data.skipped["corrections_changed"] == 1

    # The export of every task: the ones nobody annotated are counted, not read as labels.
    everything = tmp_path / "everything.json"
    assert server.client("export", str(project["project"]), str(everything), "all")["tasks"] == len(project["tasks"])
    rows = read_export(str(everything))
    assert sorted(r["id"] for r in rows if r["label"]) == [doc_id]
    skipped = {}
    source = SourceConfig(name="reviewed", file=str(everything))
    read = read_source(source, DataConfig(sources=[source], taxonomy=str(TAXONOMY)), skipped)
    assert [(r["id"], r["_label"]) for r in read] == [(doc_id, f"{first}\\{second}")]
    assert skipped["corrections_unannotated"] == len(project["tasks"]) - 1
