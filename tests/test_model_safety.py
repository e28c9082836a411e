"""Untrusted or damaged model folders: clear errors, no pickle by default, no remote code."""

import json
from pathlib import Path

import pytest
import torch

from conftest import build_tiny_model
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


def _edit_weights(folder, edit) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    weights = edit(load_file(path))
    save_file(weights, path, metadata={"format": "pt"})


def _edit_config(folder, edit) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    edit(config)
    (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")


def test_weights_without_the_classifier_are_refused(tiny_model_copy):
    _edit_weights(tiny_model_copy, lambda w: {k: v for k, v in w.items() if not k.startswith("classifier.")})
    with pytest.raises(ModelLoadError, match=r"missing.*classifier\.bias.*classifier\.weight.*train"):
        TopicClassifier(tiny_model_copy)


def test_weights_without_a_layer_are_refused(tiny_model_copy):
    _edit_weights(tiny_model_copy, lambda w: {k: v for k, v in w.items() if ".layer.1." not in k})
    with pytest.raises(ModelLoadError, match=r"16 tensors? .*missing.*bert\.encoder\.layer\.1\."):
        TopicClassifier(tiny_model_copy)


def test_weights_with_unrelated_tensors_are_refused(tiny_model_copy):
    _edit_weights(tiny_model_copy, lambda w: {**w, "vision.head.weight": torch.zeros(3, 3)})
    with pytest.raises(ModelLoadError, match=r"unexpected.*vision\.head\.weight"):
        TopicClassifier(tiny_model_copy)


def test_config_of_another_architecture_is_refused(tiny_model_copy):
    def to_roberta(config):
        config.update(model_type="roberta", architectures=["RobertaForSequenceClassification"], pad_token_id=1)

    _edit_config(tiny_model_copy, to_roberta)
    with pytest.raises(ModelLoadError) as info:
        TopicClassifier(tiny_model_copy)
    message = str(info.value)
    assert "missing" in message and "roberta." in message and "unexpected" in message and "bert." in message
    assert len(message) < 1500  # a summary, not every tensor name


def test_non_finite_weights_are_refused(tiny_model_copy):
    def poison(weights):
        weights["classifier.weight"][0, 0] = float("nan")
        weights["bert.embeddings.word_embeddings.weight"][5, 3] = float("inf")
        return weights

    _edit_weights(tiny_model_copy, poison)
    with pytest.raises(ModelLoadError, match=r"not finite.*bert\.embeddings\.word_embeddings\.weight.*classifier"):
        TopicClassifier(tiny_model_copy)


def test_a_mean_pooling_folder_loads_with_no_complaint(tmp_path, tokenizer):
    from govtopic import pooling
    from govtopic.config import Config
    from govtopic.training import save_model_folder

    base = TopicClassifier(build_tiny_model(tmp_path / "plain")).model
    pooling.add_pooling_layer(base)
    save_model_folder(base, tokenizer, Config(), tmp_path / "mean")
    clf = TopicClassifier(tmp_path / "mean")
    assert clf.model.config.num_hidden_layers == 3 and clf.predict("城市规划")["label"]


def test_a_folder_without_its_tokenizer_file_is_refused_not_read_as_unknown_text(tiny_model_copy):
    # transformers loads an empty vocabulary here: every document would get "label": null in silence.
    for name in ("tokenizer.json", "vocab.txt"):
        (tiny_model_copy / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError) as info:
        TopicClassifier(tiny_model_copy)
    assert "tokenizer.json / vocab.txt is missing" in str(info.value)


@pytest.mark.parametrize("content", ["", '{"architectures": ["BertForSequenceClassification"], "hidden'])
def test_a_config_json_that_is_not_json_is_named_not_blamed_on_the_weights(tiny_model_copy, content):
    (tiny_model_copy / "config.json").write_text(content, encoding="utf-8")
    with pytest.raises(ModelLoadError) as info:
        TopicClassifier(tiny_model_copy)
    assert "config.json is not a readable JSON file" in str(info.value)


def test_a_label_removed_from_config_json_names_the_tensors_that_disagree(tiny_model_copy):
    config = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))
    n = len(config["id2label"])
    config["id2label"] = {str(i): config["id2label"][str(i)] for i in range(n - 1)}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (tiny_model_copy / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ModelLoadError) as info:
        TopicClassifier(tiny_model_copy)
    message = str(info.value)
    assert f"classifier.weight: weights [{n}," in message and f"config.json [{n - 1}," in message


def test_a_truncated_ngram_channel_is_a_load_error(tiny_model_dir, tmp_path):
    from conftest import with_ngram_channel

    folder = Path(with_ngram_channel(tiny_model_dir, tmp_path / "with-channel", 1.0))
    path = folder / "ngram_channel.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as info:
        TopicClassifier(folder)
    assert "the n-gram channel" in str(info.value) and "cannot be read" in str(info.value)


@pytest.mark.parametrize(
    ("device", "named"),
    [("foo", "device 'foo' is not a device torch knows"), ("cuda:7", "device cuda:7: ")],
)
def test_a_device_this_machine_lacks_is_a_clear_error(tiny_model_dir, device, named):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ValueError) as info:
        TopicClassifier(tiny_model_dir, device=device)
    assert named in str(info.value)


def test_a_misspelt_model_folder_in_a_training_config_is_named_before_any_work(tmp_path):
    from govtopic.config import load_config
    from govtopic.training import train

    cfg = load_config(
        "configs/quickstart.yaml",
        [f"output_dir={tmp_path / 'run'}", "model.name_or_path=data/tokenizer/bert-base-chines"],
    )
    with pytest.raises(ModelLoadError) as info:
        train(cfg)
    assert "model.name_or_path: data/tokenizer/bert-base-chines does not exist" in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing was written


def test_the_pickle_refusal_gives_a_conversion_the_command_line_can_use(tiny_model_copy):
    import torch
    from safetensors.torch import load_file

    weights = tiny_model_copy / "model.safetensors"
    torch.save(load_file(str(weights)), tiny_model_copy / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ModelLoadError) as info:
        TopicClassifier(tiny_model_copy)
    command = str(info.value).split('convert it once: python -c "', 1)[1].split('"', 1)[0]
    exec(command)  # the message's own conversion, run as a user would paste it
    assert weights.is_file() and TopicClassifier(tiny_model_copy).predict("城市规划")["label"]
