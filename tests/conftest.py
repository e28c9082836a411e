"""Fixtures: tiny BERT models built from a config with the real bert-base-chinese vocabulary. No network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "data" / "tokenizer" / "bert-base-chinese"
SAMPLE = ROOT / "data" / "regulations_sample.jsonl.gz"
TAXONOMY = ROOT / "data" / "taxonomy.yaml"
SEEDS = ROOT / "data" / "seeds"

LABELS = [
    "城乡建设、环境保护\\城市规划",
    "城乡建设、环境保护\\环境监测、保护与治理",
    "公安、安全、司法\\司法",
    "卫生、体育\\卫生",
    "其他",
]


def build_tiny_model(
    folder: Path, labels: list[str] = LABELS, strategy: str = "chunks", max_length: int = 64, seed: int = 0
) -> Path:
    """A random 2-layer, 32-hidden BERT classifier saved as a govtopic model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from govtopic.config import Config
    from govtopic.training import save_model_folder

    torch.manual_seed(seed)
    config = BertConfig.from_pretrained(
        TOKENIZER_DIR,
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={x: i for i, x in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    cfg = Config()
    cfg.long_doc.strategy = strategy
    cfg.long_doc.max_length = max_length
    cfg.long_doc.stride = 8
    save_model_folder(model, AutoTokenizer.from_pretrained(TOKENIZER_DIR), cfg, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A shared tiny model folder; do not modify (use ``tiny_model_copy``)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def tiny_model_copy(tiny_model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def seed_texts() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(SEEDS.glob("*.txt"))}


# A one-layer, 32-hidden BERT from a config: trains in seconds.
TINY_MODEL = {
    "name_or_path": str(TOKENIZER_DIR),
    "from_scratch": True,
    "num_hidden_layers": 1,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def tiny_config(tmp_path: Path, **extra) -> Path:
    values = {
        "output_dir": str(tmp_path / "run"),
        "model": dict(TINY_MODEL),
        "data": {
            "train_file": str(SAMPLE),
            "taxonomy": str(TAXONOMY),
            "label_map": str(ROOT / "data" / "label_map.yaml"),
            "max_train_samples": 120,
            "label_level": "l1",
        },
        "long_doc": {"strategy": "chunks", "max_length": 64, "stride": 8, "train_max_windows": 2},
        "train": {"max_steps": 6, "batch_size": 8, "learning_rate": "1e-3", "logging_steps": 2},
        "eval": {"baseline": False, "calibrate": False},
    }
    for key, value in extra.items():
        values.setdefault(key, {}).update(value)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return path


# Three topics, each written with its own words: a signal any working trainer learns in a few steps.
TOPIC_WORDS = {
    "城乡建设、环境保护\\城市规划": "城市规划 建设用地 规划许可 街道 住房 城镇",
    "公安、安全、司法\\司法": "法院 审判 诉讼 检察 律师 判决",
    "卫生、体育\\卫生": "医院 医疗 卫生 疾病 药品 护士",
}


def synthetic_rows(n: int, seed: int = 0, topics: dict[str, str] | None = None) -> list[dict]:
    """``n`` documents cycling through ``topics`` (label: its words; default TOPIC_WORDS), each twelve
    sentences of two of its label's words."""
    import random

    topics = topics or TOPIC_WORDS
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(topics)[i % len(topics)]
        words = topics[label].split()
        text = "。".join("本条例" + rng.choice(words) + rng.choice(words) + "有关工作" for _ in range(12))
        rows.append(
            {"id": f"s{i}", "title": "", "text": text, "label": label, "split": "test" if i % 5 == 0 else "train"}
        )
    return rows


def with_ngram_channel(model_dir: Path, folder: Path, weight: float) -> str:
    """A copy of ``model_dir`` in ``folder`` with an n-gram channel fitted on ``synthetic_rows`` (three clear
    topics) at ``weight``: built in seconds, it knows those topics."""
    from govtopic.evaluation import update_record
    from govtopic.ngram import NgramChannel

    folder = shutil.copytree(model_dir, folder)
    rows = synthetic_rows(150)
    NgramChannel().fit([r["text"] for r in rows], [r["label"] for r in rows]).save(folder)
    update_record(folder, ngram_weight=weight)
    return str(folder)


def synthetic_config(tmp_path: Path, n: int = 300, **train) -> Path:
    import json

    data = tmp_path / "synthetic.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in synthetic_rows(n)), encoding="utf-8")
    values = {
        "output_dir": str(tmp_path / "run"),
        "model": dict(TINY_MODEL),
        "data": {"train_file": str(data), "taxonomy": str(TAXONOMY)},
        "long_doc": {"strategy": "chunks", "max_length": 64, "stride": 8, "train_max_windows": 2},
        "train": {"epochs": 3, "batch_size": 16, "learning_rate": 3.0e-3, "logging_steps": 10, **train},
        "eval": {"baseline": False, "calibrate": True},
    }
    path = tmp_path / "synthetic.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return path
