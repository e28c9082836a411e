"""`govtopic push` against a mocked Hub API: the folder is checked, the repository made, the folder uploaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from govtopic.cli import main
from govtopic.hub import check_model_folder
from govtopic.modeling import ModelLoadError


@pytest.fixture
def hub(monkeypatch):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        return f"https://hub.example/{repo_id}"

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return f"https://hub.example/{kwargs['repo_id']}/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_creates_the_repository_and_uploads_the_folder(tiny_model_copy, hub, capsys):
    assert main(["push", str(tiny_model_copy), "me/govtopic-tiny", "--private"]) == 0
    (create, name, kwargs), (upload, name2, up) = hub
    assert create == "create_repo" and name == "me/govtopic-tiny" and kwargs["private"] is True
    assert kwargs["exist_ok"] is True and kwargs["repo_type"] == "model"
    assert upload == "upload_folder" and name2 == "me/govtopic-tiny"
    assert up["folder_path"] == str(tiny_model_copy) and up["repo_type"] == "model"
    assert "uploaded" in capsys.readouterr().out


def _edit_record(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")


def test_a_folder_without_a_record_is_not_pushed(tiny_model_copy, hub, capsys):
    _edit_record(tiny_model_copy, govtopic=None)
    assert main(["push", str(tiny_model_copy), "me/x"]) == 2
    err = capsys.readouterr().err
    assert "govtopic: the record is missing" in err and "govtopic train" in err
    assert hub == []


def test_an_invalid_record_names_the_key_and_the_fix(tiny_model_copy, hub):
    config = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))
    record = {**config["govtopic"], "data_sha256": {"data.train_file": "not-a-hash"}, "temperature": -1}
    _edit_record(tiny_model_copy, govtopic=record)
    with pytest.raises(ModelLoadError) as err:
        check_model_folder(tiny_model_copy)
    text = str(err.value)
    assert "config.json govtopic.data_sha256.data.train_file: expected a sha256 (64 hex digits)" in text
    assert "config.json govtopic.temperature: expected a finite value above 0, got -1" in text
    assert "fix these values in its config.json" in text
    assert hub == []


def _hub_upload_stand_in(monkeypatch) -> list[str]:
    """upload_folder replaced by what it would upload: huggingface_hub's own filter over the folder's files."""
    from huggingface_hub.utils import filter_repo_objects

    uploaded = []

    def upload_folder(self, *, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        root = Path(folder_path)
        paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        uploaded.extend(filter_repo_objects(paths, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        return "https://hub.example/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return uploaded


def test_push_uploads_only_the_model_files(tiny_model_copy, monkeypatch, caplog):
    from govtopic.ngram import VOCAB_FILE, WEIGHTS_FILE

    expected = sorted(p.name for p in tiny_model_copy.iterdir()) + [VOCAB_FILE, WEIGHTS_FILE, "README.md"]
    for name in (VOCAB_FILE, WEIGHTS_FILE, "README.md"):
        (tiny_model_copy / name).write_text("{}", encoding="utf-8")
    # What a user may have left in the folder: predictions (predict-ray --output MODEL), an export in it.
    (tiny_model_copy / "b.parquet.predictions.parquet").write_bytes(b"PAR1")
    (tiny_model_copy / "notes.txt").write_text("mine", encoding="utf-8")
    (tiny_model_copy / "onnx").mkdir()
    for name in ("model.onnx", "config.json", "model.safetensors", ".govtopic-output.json"):
        (tiny_model_copy / "onnx" / name).write_text("{}", encoding="utf-8")
    (tiny_model_copy / ".govtopic-output.json").write_text("{}", encoding="utf-8")
    uploaded = _hub_upload_stand_in(monkeypatch)
    with caplog.at_level("WARNING", logger="govtopic.hub"):
        assert main(["push", str(tiny_model_copy), "me/x"]) == 0
    assert sorted(uploaded) == sorted(expected)
    assert "not uploading b.parquet.predictions.parquet, notes.txt, onnx/ (not part of the model" in caplog.text


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on leaving: connecting to it is refused


def test_an_unreachable_hub_is_a_clear_error(tiny_model_copy, monkeypatch, capsys):
    import huggingface_hub.constants

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)  # what HF_ENDPOINT sets
    # The tests run offline (conftest); this one goes only as far as a closed port on this machine.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert main(["push", str(tiny_model_copy), "me/x"]) == 2
    err = capsys.readouterr().err
    assert f"govtopic push: error: cannot reach the Hub at {endpoint}" in err
    assert "check the network, HF_ENDPOINT, or `hf auth login`" in err and "Traceback" not in err


def test_offline_mode_says_how_to_push(tiny_model_copy, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["push", str(tiny_model_copy), "me/x"]) == 2
    assert "offline mode is on (HF_HUB_OFFLINE); unset HF_HUB_OFFLINE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, "did not accept the token (401 Unauthorized)"), (403, "refused to let this token write to me/x (403")],
)
def test_a_refused_token_is_a_clear_error(tiny_model_copy, monkeypatch, capsys, status, expected):
    import importlib

    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    http = importlib.import_module(HTTPError.__module__.split(".")[0])  # httpx or httpx2, as huggingface_hub uses

    def create_repo(self, repo_id, **kwargs):
        response = http.Response(status, request=http.Request("POST", "https://hub.example/api/repos/create"))
        raise HfHubHTTPError(f"{status} Client Error", response=response)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    assert main(["push", str(tiny_model_copy), "me/x"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "hf auth login" in err
