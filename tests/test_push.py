"""`govtopic push` against a mocked Hub API: the folder is checked, the repository made, the folder uploaded."""

from __future__ import annotations

import json

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
