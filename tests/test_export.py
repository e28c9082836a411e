"""ONNX export: the folder written, dynamic shapes in onnxruntime, agreement with torch, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from govtopic.export import export_onnx  # noqa: E402
from govtopic.modeling import ModelLoadError  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory) -> dict:
    return export_onnx(tiny_model_dir, tmp_path_factory.mktemp("export") / "onnx")


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_folder_holds_graph_config_and_tokenizer(exported, tiny_model_dir):
    folder = Path(exported["path"]).parent
    names = {p.name for p in folder.iterdir()}
    assert {"model.onnx", "config.json", "govtopic_config.yaml", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "model.safetensors" not in names
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    original = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == original["id2label"] and config["govtopic"] == original["govtopic"]
    assert AutoTokenizer.from_pretrained(folder)("通知")["input_ids"][0] == 101  # [CLS]


def test_agreement_with_torch(exported):
    assert exported["label_agreement"] == 1.0
    assert exported["max_abs_logit_diff"] < 1e-4
    assert exported["windows"] > 5  # the built-in long document gives several windows
    assert exported["seconds"] > 0


def test_graph_has_dynamic_batch_and_sequence(exported, tiny_model_dir):
    session = _session(exported["path"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    rng = np.random.default_rng(0)
    for batch, length in [(1, 3), (5, 17), (5, 64), (1, 64)]:
        ids = rng.integers(672, 8000, size=(batch, length), dtype=np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = np.ones_like(ids)
        if batch > 1:  # a padded row, as in the predictor's batches
            mask[-1, length // 2 :], ids[-1, length // 2 :] = 0, 0
        (logits,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        assert logits.shape == (batch, model.config.num_labels)
        with torch.inference_mode():
            ref = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
        np.testing.assert_allclose(logits, ref, atol=1e-4)


def test_result_says_the_graph_is_the_transformer_only(exported):
    assert exported["window_agreement"] == exported["label_agreement"] == 1.0
    assert exported["ngram_channel"] is None  # the tiny model has no channel
    assert "model.onnx holds the transformer only (per-window logits)" in exported["note"]


def test_the_ngram_channel_is_named_and_copied_beside_the_graph(tiny_model_dir, tmp_path, caplog):
    from conftest import with_ngram_channel
    from govtopic.ngram import VOCAB_FILE, WEIGHTS_FILE

    model = with_ngram_channel(tiny_model_dir, tmp_path / "model", 0.5)
    with caplog.at_level("INFO", logger="govtopic.export"):
        result = export_onnx(model, tmp_path / "onnx", check_docs=["通知"])
    out = tmp_path / "onnx"
    for name in (WEIGHTS_FILE, VOCAB_FILE):
        assert (out / name).read_bytes() == (Path(model) / name).read_bytes()
    assert result["ngram_channel"] == {
        "weight": 0.5,
        "full_weight": 0.0,
        "files": [str(out / WEIGHTS_FILE), str(out / VOCAB_FILE)],
    }
    note = result["note"]
    assert "model.onnx holds the transformer only: the model folder's n-gram channel (ngram_weight 0.5" in note
    assert "document labels from model.onnx alone will differ from govtopic predict" in note
    assert note in caplog.text and "per-window transformer logits" in caplog.text
    assert "same label" not in caplog.text


def test_an_output_inside_the_model_folder_is_refused(tiny_model_copy):
    before = sorted(p.name for p in tiny_model_copy.iterdir())
    with pytest.raises(ValueError, match=r"inside the model folder .*; export to a folder beside it, e.g. --output "):
        export_onnx(tiny_model_copy, tiny_model_copy / "onnx")
    assert sorted(p.name for p in tiny_model_copy.iterdir()) == before  # refused before any work


def test_custom_check_docs_and_reexport(tiny_model_dir, tmp_path):
    out = tmp_path / "onnx"
    first = export_onnx(tiny_model_dir, out, check_docs=["通知"])
    assert first["windows"] == 1 and first["label_agreement"] == 1.0
    again = export_onnx(tiny_model_dir, out, opset=14, check_docs=["关于加强城市规划管理的通知", "卫生"])
    # The windows predict() reads: the first document is a heading, read as its title window and its body window.
    assert again["windows"] == 3 and again["path"] == str(out / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # old export replaced, nothing left over
    with pytest.raises(ValueError, match="no text left"):
        export_onnx(tiny_model_dir, out, check_docs=["   "])
    assert (out / "model.onnx").is_file()  # a failed export leaves the earlier one in place


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist.*config.json"):
        export_onnx(tmp_path / "no-such-model", tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_refuses_to_replace_a_folder_that_is_not_an_export(tiny_model_dir, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="not an earlier export"):
        export_onnx(tiny_model_dir, tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").is_file()
    with pytest.raises(ValueError, match="would replace it"):
        export_onnx(tiny_model_dir, tiny_model_dir.parent)
    with pytest.raises(ValueError, match="opset must be at least 14"):
        export_onnx(tiny_model_dir, tmp_path / "onnx", opset=13)


def test_missing_extra_names_the_install_command(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'govtopic\[onnx\]'"):
        export_onnx(tiny_model_dir, tmp_path / "onnx")


def test_cli_export_reports_agreement(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "govtopic.cli",
            "export",
            str(tiny_model_dir),
            "--format",
            "onnx",
            "--output",
            str(tmp_path / "onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "same top class on 100.0%" in out.stdout and (tmp_path / "onnx" / "model.onnx").is_file()


def test_a_link_out_of_the_model_folder_is_refused(tiny_model_copy, tmp_path):
    # The export folder is meant to be shared: a link in the model folder must not carry an outside file into it.
    outside = tmp_path / "private"
    outside.mkdir()
    (tiny_model_copy / "tokenizer.json").rename(outside / "tokenizer.json")
    (tiny_model_copy / "tokenizer.json").symlink_to(outside / "tokenizer.json")
    with pytest.raises(ValueError, match=r"tokenizer.json is a symbolic link to .*private/tokenizer.json, outside"):
        export_onnx(tiny_model_copy, tmp_path / "onnx", check_docs=["通知"])
    assert not (tmp_path / "onnx").exists()
