"""The fast prediction path gives what a straightforward one gives, on real documents.

The reference normalises each whole document, makes its windows and runs the model's own ``transformers``
forward on one window at a time (no padding, no batching, no lean forward, no reuse of repeated windows),
then pools and calibrates as govtopic does. ``TopicClassifier.predict`` must give the same label and every
score within 1e-4, for ``head``, ``head_tail`` and ``chunks``, with a [CLS] model and a mean-pooling one.
"""

from __future__ import annotations

import dataclasses
import gzip
import json

import numpy as np
import pytest
import torch

from conftest import LABELS, ROOT, SAMPLE, TOKENIZER_DIR
from govtopic import TopicClassifier
from govtopic.forward import LeanForward, lean_forward
from govtopic.labels import hierarchical_decode
from govtopic.normalize import normalize
from govtopic.strategies import encode
from govtopic.titles import encode_documents, pool


def _documents() -> list[dict]:
    """Seeds, official Hebei documents and regulations (with titles), plus repeats and boilerplate."""
    docs = [{"text": p.read_text(encoding="utf-8")} for p in sorted((ROOT / "data" / "seeds").glob("*.txt"))]
    with open(ROOT / "data" / "gold_dev.jsonl", encoding="utf-8") as fh:
        docs += [{"title": r["title"], "text": r["text"]} for r in map(json.loads, list(fh)[:12])]
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        rows = [r for r in map(json.loads, fh) if r["split"] == "test"][:12]
    docs += [{"title": r["title"], "text": r["text"]} for r in rows]
    notice = "本网站所载文章仅供参考，转载请注明出处。联系电话：12345678。\n" * 40
    docs += [docs[5], {"text": notice + docs[6]["text"] + notice}, {"title": "关于做好春耕生产工作的通知"}]
    docs += [{"text": "索引号:SY001\n主题分类:其他\n" * 200 + docs[7]["text"]}]  # a header longer than the head reach
    return docs


DOCS = _documents()


@pytest.fixture(scope="module")
def mean_model_dir(tmp_path_factory):
    """A random 2-layer, 128-hidden model with the mean-pooling layer and 128-token windows (the quickstart's
    shape); its last LayerNorm and classifier get random values so the pooled vector matters."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from govtopic.config import Config
    from govtopic.pooling import add_pooling_layer
    from govtopic.training import save_model_folder

    torch.manual_seed(1)
    config = BertConfig.from_pretrained(
        TOKENIZER_DIR,
        num_hidden_layers=2,
        hidden_size=128,
        num_attention_heads=2,
        intermediate_size=512,
        id2label=dict(enumerate(LABELS)),
        label2id={x: i for i, x in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config)
    add_pooling_layer(model)
    with torch.no_grad():
        norm = model.bert.encoder.layer[-1].output.LayerNorm
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    cfg = Config()
    cfg.long_doc.max_length, cfg.long_doc.stride = 128, 16
    folder = tmp_path_factory.mktemp("mean") / "model"
    save_model_folder(model, AutoTokenizer.from_pretrained(TOKENIZER_DIR), cfg, folder, temperature=1.5)
    return folder


def reference_probs(clf: TopicClassifier, docs: list[dict], strategy: str) -> np.ndarray:
    """Probabilities the plain way: whole-document normalisation, one window per forward pass."""
    cfg = dataclasses.replace(clf.long_doc, strategy=strategy)
    bodies = [normalize(d.get("text", ""), clf.normalize_config) for d in docs]
    titles = [normalize(d.get("title", ""), clf.normalize_config) for d in docs]
    windows, is_title = encode_documents(clf.tokenizer, bodies, titles, cfg)
    with torch.inference_mode():
        logits = np.stack([clf.model(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in windows.input_ids])
    doc_index = np.array(windows.doc_index)
    pooled = np.stack([pool(logits[doc_index == d], is_title[doc_index == d], cfg) for d in range(len(docs))])
    # Tempered level by level (govtopic.calibration.level_softmax), written out: each first level's probability
    # and each class's share within it raised to 1/T and normalised apart.
    e = np.exp(pooled - pooled.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    levels = [label.split("\\")[0] for label in clf.labels]
    out = np.zeros_like(p)
    level_p = {lv: p[:, [j for j, x in enumerate(levels) if x == lv]].sum(axis=1) for lv in set(levels)}
    level_norm = sum(v ** (1 / clf.temperature) for v in level_p.values())
    for lv, mass in level_p.items():
        cols = [j for j, x in enumerate(levels) if x == lv]
        share = (p[:, cols] / mass[:, None]) ** (1 / clf.temperature)
        out[:, cols] = (mass ** (1 / clf.temperature) / level_norm)[:, None] * share / share.sum(axis=1, keepdims=True)
    return out


@pytest.mark.parametrize("which", ["cls", "mean"])
@pytest.mark.parametrize("strategy", ["head", "head_tail", "chunks"])
def test_predict_matches_the_straightforward_reference(tiny_model_dir, mean_model_dir, which, strategy):
    clf = TopicClassifier(tiny_model_dir if which == "cls" else mean_model_dir, device="cpu")
    assert lean_forward(clf.model) is not None  # the fast path is the one under test
    expected = reference_probs(clf, DOCS, strategy)
    got = clf.predict(DOCS, long_doc=strategy, top_k=len(LABELS), batch_size=7)
    for k, (res, probs) in enumerate(zip(got, expected)):
        scores = {a["label"]: a["score"] for a in res["top_k"]}
        assert max(abs(scores[label] - p) for label, p in zip(clf.labels, probs)) < 1e-4, k
        assert res["label"] == clf.labels[int(hierarchical_decode(probs[None, :], clf.labels)[0][0])], k
    assert got[len(DOCS) - 4] == got[5]  # the same document twice: the same result


def test_repeated_windows_are_computed_once(mean_model_dir, monkeypatch):
    clf = TopicClassifier(mean_model_dir, device="cpu")
    windows = encode(clf.tokenizer, [DOCS[0]["text"]] * 3, clf.long_doc)
    assert lean_forward(clf.model) is not None  # built and checked before counting
    calls = []
    original = LeanForward.__call__

    def counting(self, ids, lengths):
        calls.append(len(ids))
        return original(self, ids, lengths)

    monkeypatch.setattr(LeanForward, "__call__", counting)
    logits = clf.window_logits(windows, batch_size=1000)
    assert sum(calls) == len(windows) // 3
    third = len(windows) // 3
    assert np.array_equal(logits[:third], logits[third : 2 * third])


@pytest.mark.parametrize("which", ["cls", "mean"])
def test_lean_forward_matches_the_model_on_padded_batches(tiny_model_dir, mean_model_dir, which):
    clf = TopicClassifier(tiny_model_dir if which == "cls" else mean_model_dir, device="cpu")
    lean = LeanForward.build(clf.model)
    assert lean is not None and lean.uniform_last == (which == "mean")
    windows = encode(clf.tokenizer, [normalize(d.get("text", "")) for d in DOCS[:20]], clf.long_doc)
    short = encode(clf.tokenizer, ["城市规划", "关于加强城市规划管理的通知。各区人民政府："], clf.long_doc)
    rows = windows.input_ids[::3] + short.input_ids
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.zeros((len(rows), int(lengths.max())), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    assert lengths.min() < lengths.max()  # some padding
    assert lean.check(ids, lengths) < 1e-5


def test_models_the_lean_forward_cannot_run_use_their_own(tiny_model_dir):
    clf = TopicClassifier(tiny_model_dir, device="cpu", quantize=True)
    assert LeanForward.build(clf.model) is None
    assert clf.predict(DOCS[0])["label"] in LABELS


def test_head_normalises_only_what_it_reads(tiny_model_dir):
    """head normalises the start of a long document; its window equals whole-document normalisation's."""
    clf = TopicClassifier(tiny_model_dir, device="cpu")
    cfg = dataclasses.replace(clf.long_doc, strategy="head")
    for d in DOCS:
        text = d.get("text", "")
        fast = encode(clf.tokenizer, [clf.normalize_for(text, cfg)], cfg)
        whole = encode(clf.tokenizer, [normalize(text, clf.normalize_config)], cfg)
        assert fast.input_ids == whole.input_ids and fast.capped == whole.capped


def test_the_ngram_channel_reads_each_document_once_and_gives_what_its_vectorizers_give():
    """Prediction takes the channel's features and known share from one pass over the n-grams; they must be
    scikit-learn's TF-IDF and the share counted n-gram by n-gram, on Chinese, Latin, numbers, runs of spaces
    and title-only documents."""
    import re
    from collections import Counter

    from scipy.sparse import hstack

    from conftest import synthetic_rows
    from govtopic.ngram import BLOCKS, MAX_CHARS, NgramChannel

    rows = synthetic_rows(90)
    channel = NgramChannel().fit([r["text"] for r in rows], [r["label"] for r in rows], [r["id"] for r in rows])
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(40), fh)]
    texts += ["", "English Only  Text", "1234 5678\n\n\n 9999", "医院  医疗\t\t卫生 ABC", "İstanbul 医院 法院", "法"]
    texts += ["𠀋医院𠀋 😀 法院", "a", "医院医院医院医院"]  # beyond the Basic Multilingual Plane; repeats
    titles = [f"s{i}" if i % 3 else "" for i in range(len(texts))]

    features, share = channel._read(texts, titles)
    blocks = {"title": titles, "body": [t[:MAX_CHARS] for t in texts]}
    expected = hstack([channel.vectorizers[b].transform(blocks[b]) for b in BLOCKS]).toarray()
    np.testing.assert_allclose(features.toarray(), expected, rtol=1e-6, atol=1e-7)

    han = re.compile(r"[\u3400-\u9fff]")
    for i, (title, body) in enumerate(zip(blocks["title"], blocks["body"])):
        block, text = ("body", body) if body.strip() else ("title", title)
        if not text.strip():
            assert share[i] == 1.0  # nothing to judge
            continue
        vectorizer = channel.vectorizers[block]
        grams = Counter(g for g in vectorizer.build_analyzer()(text) if len(g) >= 2 and han.search(g))
        known = sum(n for g, n in grams.items() if g in vectorizer.vocabulary_)
        assert share[i] == pytest.approx(known / sum(grams.values()) if grams else 0.0), text[:40]
    assert share[texts.index("English Only  Text")] == 0.0  # English alone is unlike training
    first, full, known = channel.read(texts, titles, LABELS)
    np.testing.assert_array_equal(known, share)
    np.testing.assert_allclose(first, channel.full_scores(texts, titles, LABELS), rtol=1e-6)
