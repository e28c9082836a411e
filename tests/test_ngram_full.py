"""The n-gram channel's full-label block: it picks the second level where the first level alone cannot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import LABELS, synthetic_rows
from govtopic.evaluation import update_record

PLANNING = "城市规划 建设用地 规划许可 街道 城镇 控制性详细规划"
ENVIRONMENT = "环境监测 污染 排放 大气 水质 生态保护"
WORDS = {
    "城乡建设、环境保护\\城市规划": PLANNING,
    "城乡建设、环境保护\\环境监测、保护与治理": ENVIRONMENT,
    "公安、安全、司法\\司法": "法院 审判 诉讼 检察 律师 判决",
    "卫生、体育\\卫生": "医院 医疗 卫生 疾病 药品 护士",
}


def rows(n: int, seed: int = 0) -> list[dict]:
    """Documents of four classes, two of them children of one first level; every sixth document is labelled
    with its first level only (as a portal that publishes 一级 alone)."""
    out = synthetic_rows(n, seed, topics=WORDS)
    return [{**r, "label": r["label"].split("\\")[0] if i % 6 == 5 else r["label"]} for i, r in enumerate(out)]


def fitted(classes=LABELS):
    from govtopic.ngram import NgramChannel

    train = rows(160)
    return NgramChannel().fit([r["text"] for r in train], [r["label"] for r in train], classes=classes)


def test_the_full_label_block_picks_the_second_level(tiny_model_copy):
    """A random transformer cannot tell 城市规划 from 环境监测 (same first level): with the first-level block
    alone one of them is wrong; with the full-label block both documents get their own second level."""
    from govtopic.predict import TopicClassifier

    fitted().save(tiny_model_copy)
    docs = [
        "本办法规范城市规划和建设用地规划许可。城镇街道控制性详细规划。",
        "本办法规范环境监测。大气污染排放和水质监测，生态保护。",
    ]
    wanted = ["城乡建设、环境保护\\城市规划", "城乡建设、环境保护\\环境监测、保护与治理"]

    update_record(tiny_model_copy, ngram_weight=8.0, ngram_full_weight=0.0)
    first_only = [r["label"] for r in TopicClassifier(tiny_model_copy).predict(docs)]
    assert {r.split("\\")[0] for r in first_only} == {"城乡建设、环境保护"}
    assert first_only != wanted  # the transformer picks one child for both

    update_record(tiny_model_copy, ngram_weight=8.0, ngram_full_weight=8.0)
    both = TopicClassifier(tiny_model_copy).predict(docs)
    assert [r["label"] for r in both] == wanted
    assert all(r["label_l1"] == "城乡建设、环境保护" for r in both)


def test_full_label_block_round_trips_and_first_level_rows_train_only_their_level(tmp_path):
    from govtopic.ngram import NgramChannel

    channel = fitted()
    # Rows labelled with a first level that has children are not classes of the model: the full block never
    # learns them; 其他 (a class without children) would be, but no row has it here.
    assert channel.full_classes == sorted(WORDS)
    channel.save(tmp_path)
    loaded = NgramChannel.load(tmp_path)
    docs, titles = ["环境监测 大气 污染", "法院 审判"], ["", "关于法院工作的通知"]
    first, full = channel.parts(docs, titles, LABELS)
    for a, b in zip(loaded.parts(docs, titles, LABELS), (first, full)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert np.all(full[:, LABELS.index("其他")] == 0)  # a class the block never saw gets nothing from it


def test_the_full_label_block_never_moves_a_document_to_another_first_level():
    """Under ``mix`` the first level's probability is the transformer's and the first-level block's alone,
    whatever the full-label block says; the full-label block only shares it out among the level's classes.
    With its weight 0 the scores give the same probabilities as the first-level block added to the logits."""
    from govtopic.labels import hierarchical_decode
    from govtopic.ngram import mix

    channel = fitted()
    docs = ["环境监测 大气 污染", "法院 审判", "医院 医疗", "城市规划 街道"]
    first, full = channel.parts(docs, None, LABELS)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(docs), len(LABELS))).astype(np.float32)

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    _, _, level_only = hierarchical_decode(softmax(logits + 2.0 * first), LABELS)
    for full_weight in (1.0, 8.0, 50.0):
        probs = softmax(mix(logits, first, full, 2.0, full_weight, LABELS))
        _, _, level_probs = hierarchical_decode(probs, LABELS)
        np.testing.assert_allclose(level_probs, level_only, atol=1e-5)
    np.testing.assert_allclose(
        softmax(mix(logits, first, full, 2.0, 0.0, LABELS)), softmax(logits + 2.0 * first), atol=1e-6
    )


def test_weights_are_chosen_on_validation_and_use_the_full_block_when_it_helps():
    from govtopic.ngram import choose_weights

    channel = fitted()
    val = rows(40, seed=7)
    texts, gold = [r["text"] for r in val], [r["label"] for r in val]
    logits = np.zeros((len(val), len(LABELS)), dtype=np.float32)  # a transformer that knows nothing
    weight, full_weight, tried = choose_weights(logits, *channel.parts(texts, None, LABELS), gold, LABELS)
    assert full_weight > 0
    chosen = tried[f"{weight:g}/{full_weight:g}"]
    best_first_only = max((v for k, v in tried.items() if k.endswith("/0")), key=lambda v: v[1])
    assert chosen[:2] == [1.0, 1.0]  # accuracy at both levels: right on every validation document
    assert best_first_only[1] < 1.0  # without the block some second levels are wrong


def test_a_record_that_asks_for_a_missing_block_or_a_bad_weight_is_a_load_error(tiny_model_copy):
    from govtopic.modeling import ModelLoadError
    from govtopic.ngram import NgramChannel
    from govtopic.predict import TopicClassifier

    train = rows(60)
    NgramChannel().fit([r["text"] for r in train], [r["label"] for r in train]).save(tiny_model_copy)  # no block
    update_record(tiny_model_copy, ngram_weight=4.0, ngram_full_weight=2.0)
    with pytest.raises(ModelLoadError, match=r"no such block.*fit_ngram_channel"):
        TopicClassifier(tiny_model_copy)
    config = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))
    config["govtopic"]["ngram_full_weight"] = -1
    (tiny_model_copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"ngram_full_weight: expected a finite value of at least 0"):
        TopicClassifier(tiny_model_copy)


def test_folders_written_before_the_block_predict_as_before(tiny_model_copy):
    """A folder whose record has no ngram_full_weight (older govtopic) loads, and the first-level block alone is
    mixed in, exactly as before."""
    from govtopic.ngram import NgramChannel
    from govtopic.predict import TopicClassifier

    train = rows(60)
    channel = NgramChannel().fit([r["text"] for r in train], [r["label"] for r in train])
    channel.save(tiny_model_copy)
    config = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))
    config["govtopic"]["ngram_weight"] = 3.0
    config["govtopic"].pop("ngram_full_weight", None)
    (tiny_model_copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    clf = TopicClassifier(tiny_model_copy)
    assert clf.record.ngram_full_weight == 0.0
    docs = ["法院 审判 诉讼"]
    with_channel, _ = clf.document_logits(docs, clf.long_doc, 8)
    alone, _ = clf.document_logits(docs, clf.long_doc, 8, ngram=False)
    np.testing.assert_allclose(with_channel - alone, 3.0 * channel.full_scores(docs, None, LABELS), atol=1e-4)
