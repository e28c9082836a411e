"""Metrics, calibration and the TF-IDF baseline on cases whose right answer is known."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import numpy as np
import pytest

from conftest import LABELS, SAMPLE
from govtopic.baseline import TfidfBaseline
from govtopic.calibration import fit_temperature, softmax
from govtopic.metrics import (
    compute_metrics,
    expected_calibration_error,
    first_level_probs,
    reliability_bins,
    worst_confusions,
)

CITY, ENV, LAW, HEALTH, OTHER = LABELS


def one_hot(gold: list[str], labels: list[str] = LABELS, p: float = 0.9) -> np.ndarray:
    probs = np.full((len(gold), len(labels)), (1 - p) / (len(labels) - 1))
    probs[np.arange(len(gold)), [labels.index(g) for g in gold]] = p
    return probs


def test_first_level_probs_sums_children_in_first_appearance_order():
    probs = np.array([[0.1, 0.2, 0.3, 0.25, 0.15]])
    l1, names = first_level_probs(probs, LABELS)
    assert names == ["城乡建设、环境保护", "公安、安全、司法", "卫生、体育", "其他"]
    np.testing.assert_allclose(l1, [[0.3, 0.3, 0.25, 0.15]])


def test_perfect_predictions_score_one_everywhere():
    gold = [CITY, ENV, LAW, HEALTH, OTHER, CITY]
    m = compute_metrics(gold, one_hot(gold), LABELS)
    for key in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "l1_accuracy", "l1_macro_f1"):
        assert m[key] == pytest.approx(1.0), key
    assert m["top_k_accuracy"] == {"1": 1.0, "3": 1.0, "5": 1.0}
    assert m["level_disagreement"] == 0.0
    assert m["per_class"][CITY]["support"] == 2
    assert set(m["l1"]["per_class"]) == {"城乡建设、环境保护", "公安、安全、司法", "卫生、体育", "其他"}
    assert m["notes"] == []
    json.dumps(m)  # must go into metrics.json as it is


def test_summed_first_level_can_disagree_with_the_argmax_label():
    # Row 0: the single best label is LAW (0.4) but the two city-planning children together hold 0.6.
    probs = np.array([[0.35, 0.25, 0.40, 0.0, 0.0], [0.0, 0.0, 0.9, 0.1, 0.0]])
    m = compute_metrics([CITY, LAW], probs, LABELS)
    assert m["level_disagreement"] == pytest.approx(0.5)
    assert m["l1_accuracy"] == 1.0  # summed first level is right for both
    assert m["accuracy"] == 1.0  # top-down decoding picks CITY under the winning first level
    assert m["top_k_accuracy"]["1"] == 0.5  # ...while the plain argmax of row 0 is LAW


def test_top_k_counts_gold_within_the_k_best():
    probs = np.array(
        [
            [0.5, 0.3, 0.1, 0.06, 0.04],  # gold CITY ranked 1
            [0.5, 0.3, 0.1, 0.06, 0.04],  # gold LAW ranked 3
            [0.5, 0.3, 0.1, 0.06, 0.04],
        ]
    )  # gold OTHER ranked 5
    m = compute_metrics([CITY, LAW, OTHER], probs, LABELS, top_k=(1, 2, 3, 10))
    assert m["top_k_accuracy"] == pytest.approx({"1": 1 / 3, "2": 1 / 3, "3": 2 / 3, "10": 1.0})


def test_gold_label_unknown_to_the_model_counts_as_wrong_without_crashing():
    gold = [CITY, "城乡建设、环境保护\\建筑业", LAW]
    probs = one_hot([CITY, CITY, LAW])
    m = compute_metrics(gold, probs, LABELS)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["l1_accuracy"] == 1.0  # its first level is still right
    assert m["top_k_accuracy"]["5"] == pytest.approx(2 / 3)
    assert any("建筑业" in note for note in m["notes"])


def test_first_level_gold_against_two_level_model_gives_l1_figures_only():
    gold = ["城乡建设、环境保护", "公安、安全、司法", "卫生、体育", "公安、安全、司法"]
    probs = one_hot([CITY, LAW, HEALTH, ENV])
    m = compute_metrics(gold, probs, LABELS)
    assert m["accuracy"] is None and m["macro_f1"] is None and m["per_class"] is None
    assert m["l1_accuracy"] == pytest.approx(0.75)
    assert any("first-level only" in note for note in m["notes"])


def test_per_class_includes_predicted_only_classes_and_missing_gold_is_skipped():
    m = compute_metrics([CITY, None, CITY], one_hot([CITY, LAW, HEALTH]), LABELS)
    assert m["n"] == 2
    assert m["per_class"][HEALTH] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert LAW not in m["per_class"]  # only predicted for the unlabelled row, which is left out
    assert any("without a gold label" in note for note in m["notes"])


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="documents, labels"):
        compute_metrics([CITY], np.ones((1, 3)) / 3, LABELS)


def _synthetic(n: int, confidence: np.ndarray, accuracy: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose top probability is ``confidence`` and whose top class is right with prob. ``accuracy``."""
    classes = 5
    top = rng.integers(0, classes, n)
    probs = np.repeat(((1 - confidence) / (classes - 1))[:, None], classes, axis=1)
    probs[np.arange(n), top] = confidence
    wrong = (top + rng.integers(1, classes, n)) % classes
    y = np.where(rng.random(n) < accuracy, top, wrong)
    return probs, y


def test_ece_near_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 20_000)
    probs, y = _synthetic(20_000, conf, conf, rng)
    assert expected_calibration_error(probs, y) < 0.02
    probs, y = _synthetic(20_000, np.full(20_000, 0.99), np.full(20_000, 0.5), rng)
    assert expected_calibration_error(probs, y) == pytest.approx(0.49, abs=0.02)


def test_reliability_bins_cover_every_document():
    rng = np.random.default_rng(1)
    probs, y = _synthetic(500, rng.uniform(0.2, 1.0, 500), np.full(500, 0.7), rng)
    bins = reliability_bins(probs, y, n_bins=10)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 500
    assert bins[0]["lower"] == 0.0 and bins[-1]["upper"] == 1.0
    assert bins[0]["count"] == 0 and bins[0]["accuracy"] is None  # no confidence below 0.2
    for b in bins:
        if b["count"]:
            assert b["lower"] <= b["confidence"] <= b["upper"]


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_fit_temperature_recovers_the_temperature_that_generated_the_labels(true_t):
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 3.0, size=(4000, 8))
    cumulative = softmax(logits, true_t).cumsum(axis=1)
    y = (cumulative < rng.random((4000, 1))).sum(axis=1)
    assert abs(fit_temperature(logits, y) - true_t) < 0.1 * true_t


def test_fit_temperature_leaves_tiny_or_one_class_sets_alone():
    assert fit_temperature(np.array([[2.0, 0.0]]), np.array([0])) == 1.0
    assert fit_temperature(np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), np.array([0, 0, 0])) == 1.0
    assert fit_temperature(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([-1, 1])) == 1.0  # unknown gold dropped


def test_softmax_rows_sum_to_one_and_temperature_flattens():
    z = np.array([[3.0, 1.0, -2.0]])
    sharp, flat = softmax(z), softmax(z, 4.0)
    np.testing.assert_allclose(sharp.sum(axis=1), 1.0)
    assert flat.max() < sharp.max()
    with pytest.raises(ValueError):
        softmax(z, 0.0)


def test_worst_confusions_ranks_pairs_and_explains_examples():
    gold = [CITY, CITY, ENV, LAW, HEALTH]
    probs = np.array(
        [
            [0.0, 0.0, 0.6, 0.4, 0.0],  # city-planning -> law (less sure)
            [0.0, 0.0, 0.9, 0.1, 0.0],  # city-planning -> law (more sure)
            [0.1, 0.0, 0.8, 0.1, 0.0],  # environment -> law
            [0.0, 0.0, 1.0, 0.0, 0.0],  # right
            [0.0, 0.0, 0.3, 0.2, 0.5],
        ]
    )  # health -> 其他
    titles = ["甲规划条例", "乙规划条例", "丙环保条例", "丁司法条例", "戊卫生条例"]
    pairs = worst_confusions(gold, probs, LABELS, titles, level="l1", n=5, examples=2, alternatives=2)
    top = pairs[0]
    assert (top["gold"], top["predicted"], top["count"]) == ("城乡建设、环境保护", "公安、安全、司法", 3)
    assert [e["title"] for e in top["examples"]] == ["乙规划条例", "丙环保条例"]  # most confident first
    assert top["examples"][0]["alternatives"][0] == {"label": "公安、安全、司法", "score": 0.9}
    assert len(top["examples"][0]["alternatives"]) == 2
    assert {(p["gold"], p["predicted"]) for p in pairs} == {(top["gold"], top["predicted"]), ("卫生、体育", "其他")}
    full = worst_confusions(gold, probs, LABELS, titles, level="full")
    assert (full[0]["gold"], full[0]["count"]) == (CITY, 2)


def _regulations(n_train: int, n_test: int) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in gzip.open(SAMPLE, "rt", encoding="utf-8")]
    rows = [r for r in rows if r["label"]]
    return ([r for r in rows if r["split"] == "train"][:n_train], [r for r in rows if r["split"] == "test"][:n_test])


def test_baseline_learns_real_topics_from_regulation_bodies():
    train, test = _regulations(900, 300)
    base = TfidfBaseline(max_chars=600, max_features=50_000).fit(
        [r["text"] for r in train], [r["label_l1"] for r in train]
    )
    labels = base.classes_
    probs = base.predict_proba([r["text"] for r in test], labels)
    m = compute_metrics([r["label_l1"] for r in test], probs, labels)
    majority = Counter(r["label_l1"] for r in test).most_common(1)[0][1] / len(test)
    assert majority < 0.25
    assert m["accuracy"] > majority + 0.35
    assert m["ece"] < 0.2  # the fitted softmax temperature makes the scores usable as probabilities
    # Columns follow the caller's label order; a label the baseline never saw gets 0.
    reordered = [*reversed(labels), "其他"]
    again = base.predict_proba([r["text"] for r in test[:5]], reordered)
    np.testing.assert_allclose(again[:, :-1], probs[:5, ::-1])
    assert np.all(again[:, -1] == 0) and np.allclose(again.sum(axis=1), 1.0)


def test_the_temperature_changes_how_sure_a_prediction_is_never_which_label_wins():
    """Tempered level by level, the first level and the class chosen within it are those of the raw logits for
    every temperature; a plain softmax(logits / T) would move documents to levels with many unsure classes."""
    from govtopic.calibration import level_softmax
    from govtopic.labels import hierarchical_decode

    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(400, len(LABELS)))
    raw_index, _, raw_levels = hierarchical_decode(softmax(logits), LABELS)
    flipped_by_plain = 0
    for t in (0.3, 1.0, 2.5, 8.0):
        probs = level_softmax(logits, t, LABELS)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        index, _, levels = hierarchical_decode(probs, LABELS)
        assert (index == raw_index).all() and (levels.argmax(axis=1) == raw_levels.argmax(axis=1)).all()
        _, _, plain = hierarchical_decode(softmax(logits, t), LABELS)
        flipped_by_plain += int((plain.argmax(axis=1) != raw_levels.argmax(axis=1)).sum())
    assert flipped_by_plain > 0  # the case the level-by-level temperature guards against does occur
    np.testing.assert_allclose(level_softmax(logits, 1.0, LABELS), softmax(logits), atol=1e-9)


def test_fit_temperature_with_labels_recovers_a_level_by_level_temperature():
    from govtopic.calibration import level_softmax

    rng = np.random.default_rng(2)
    logits = rng.normal(scale=2.0, size=(3000, len(LABELS)))
    probs = level_softmax(logits, 2.0, LABELS)
    y = np.array([rng.choice(len(LABELS), p=p) for p in probs])
    assert fit_temperature(logits, y, LABELS) == pytest.approx(2.0, rel=0.15)
