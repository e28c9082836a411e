"""Untrusted or damaged model folders: clear errors, no pickle by default, no remote code."""

import json

import pytest
import torch

from govtopic import TopicClassifier
from govtopic.modeling import ModelLoadError


def test_pickle_only_folder_is_refused(tiny_model_copy):
    from safetensors.torch import load_file

    weights = load_file(tiny_model_copy / "model.safetensors")
    torch.save(weights, tiny_model_copy / "pytorch_model.bin")
    (tiny_model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="only pickle weights.*allow_pickle"):
        TopicClassifier(tiny_model_copy)
    clf = TopicClassifier(tiny_model_copy, allow_pickle=True)  # an explicit opt-in works
    assert clf.predict("城市规划")["label"]


def test_truncated_weights_are_named(tiny_model_copy):
    path = tiny_model_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="could not load weights.*truncated"):
        TopicClassifier(tiny_model_copy)


def test_missing_weights_and_missing_folder(tiny_model_copy, tmp_path):
    (tiny_model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights file"):
        TopicClassifier(tiny_model_copy)
    with pytest.raises(ModelLoadError, match="does not exist"):
        TopicClassifier(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json.*govtopic train"):
        TopicClassifier(tmp_path / "empty")


def test_id2label_that_does_not_match_the_head(tiny_model_copy):
    config = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {str(i): f"类{i}" for i in range(len(config["id2label"]) + 2)}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (tiny_model_copy / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ModelLoadError):
        TopicClassifier(tiny_model_copy)


def test_base_model_without_labels_is_refused(tiny_model_copy):
    config = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))
    n = len(config["id2label"])
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    (tiny_model_copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="no topic labels"):
        TopicClassifier(tiny_model_copy)


def test_remote_code_is_never_run(tiny_model_copy, tmp_path):
    marker = tmp_path / "pwned"
    (tiny_model_copy / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\nfrom transformers import BertForSequenceClassification as Evil\n",
        encoding="utf-8",
    )
    config = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.Evil", "AutoConfig": "evil.Evil"}
    (tiny_model_copy / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    try:
        TopicClassifier(tiny_model_copy).predict("城市规划")
    except (ModelLoadError, ValueError):
        pass  # refusing is fine too; running the code is not
    assert not marker.exists()
