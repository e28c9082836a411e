"""Documents unlike anything the model was trained on are flagged for a person, never silently given a class."""

from __future__ import annotations

import pytest

from conftest import TOPIC_WORDS, synthetic_rows, with_ngram_channel
from govtopic.ngram import UNFAMILIAR_SHARE, NgramChannel
from govtopic.review import describe

RECIPE = "红烧肉的做法：五花肉切块，冷水下锅焯水，捞出洗净。锅中放少许油，加冰糖小火炒出糖色，放入肉块翻炒上色。"
ENGLISH = "The committee met on Tuesday to review the quarterly budget and agreed to postpone the decision."
NUMBERS = "2023 1 234.5 678.9 12.3%\n2024 2 345.6 789.0 13.4%\n2025 3 456.7 890.1 14.5%"


@pytest.fixture(scope="module")
def model_with_channel(tiny_model_dir, tmp_path_factory):
    return with_ngram_channel(tiny_model_dir, tmp_path_factory.mktemp("unlike") / "model", 1.0)


def _like_training(i: int) -> str:
    words = list(TOPIC_WORDS.values())[i % 3].split()
    return "。".join(f"本条例{words[k % len(words)]}{words[(k + i) % len(words)]}有关工作" for k in range(10))


@pytest.mark.parametrize("text", [RECIPE, ENGLISH, NUMBERS], ids=["recipe", "english", "numbers"])
def test_a_document_unlike_training_needs_review_with_its_reason(model_with_channel, text):
    from govtopic.predict import TopicClassifier

    result = TopicClassifier(model_with_channel).predict(text)
    assert result["known_ngrams"] < UNFAMILIAR_SHARE
    assert result["needs_review"] is True and result["review_reason"] == "unlike_training"
    assert "unlike the training documents" in describe(result)


def test_documents_like_training_are_not_flagged(model_with_channel):
    from govtopic.predict import TopicClassifier

    results = TopicClassifier(model_with_channel).predict([_like_training(i) for i in range(6)])
    assert all(r["known_ngrams"] > 0.9 for r in results)
    assert not any(r.get("needs_review") for r in results)  # no thresholds: no review key at all
    assert all("review_reason" not in r for r in results)


def test_known_share_counts_chinese_ngrams_in_the_vocabulary():
    rows = synthetic_rows(60)
    channel = NgramChannel().fit([r["text"] for r in rows], [r["label"] for r in rows])
    shares = channel.known_share([rows[0]["text"], RECIPE, NUMBERS, ""])
    assert shares[0] == pytest.approx(1.0)
    assert shares[1] < UNFAMILIAR_SHARE and shares[2] == 0.0
    assert shares[3] == 1.0  # nothing to judge: an empty document is reported by its own rule
