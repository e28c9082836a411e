"""Long-document strategies come from one registry: configs, the CLI, predict() and encode read it."""

from __future__ import annotations

import pytest

from govtopic.config import ConfigError, LongDocConfig, from_dict
from govtopic.strategies import STRATEGIES, Strategy, encode, get_strategy, register, strategy_names

TEXT = "第一条 为了加强城市规划管理，制定本办法。" * 60  # ~1,300 characters, several 64-token windows


def test_the_built_in_strategies_are_registered():
    assert strategy_names() == ("head", "head_tail", "chunks")


def test_an_unknown_strategy_is_refused_with_the_registered_names():
    with pytest.raises(ValueError, match="'head', 'head_tail', 'chunks', got 'chunk'"):
        get_strategy("chunk")
    with pytest.raises(ConfigError, match="long_doc.strategy.*did you mean 'chunks'"):
        from_dict({"long_doc": {"strategy": "chunk"}})


def test_predict_refuses_an_unknown_strategy_before_reading(tiny_model_dir):
    from govtopic.predict import TopicClassifier

    with pytest.raises(ValueError, match="got 'middle'"):
        TopicClassifier(tiny_model_dir).predict("城市规划", long_doc="middle")


def test_a_new_strategy_is_one_class_and_its_registration(tokenizer):
    @register("tail")
    class Tail(Strategy):
        """The last window only."""

        def tokens(self, tokenizer, texts, cfg, size, cap):
            return get_strategy("chunks").tokens(tokenizer, texts, cfg, size, cap)

        def cut(self, tok, text, cfg, size, cap):
            n = tok.total
            return [tok.ids[max(0, n - size) :]], [[(int(tok.starts[max(0, n - size)]), len(text))]], n > size

    try:
        assert "tail" in strategy_names()
        cfg = LongDocConfig(strategy="tail", max_length=64, stride=8)
        windows = encode(tokenizer, [TEXT], cfg)
        chunks = encode(tokenizer, [TEXT], LongDocConfig(strategy="chunks", max_length=64, stride=8))
        assert len(windows) == 1 and windows.capped == [True]
        assert windows.input_ids[0] == chunks.input_ids[-1]  # the last chunk is the tail window
        assert windows.spans[0][0][1] == len(TEXT)
    finally:
        STRATEGIES.pop("tail")


@pytest.mark.parametrize("name", ["head", "head_tail", "chunks"])
def test_each_strategy_says_when_it_left_text_unread(tokenizer, name):
    cfg = LongDocConfig(strategy=name, max_length=64, stride=8, max_windows=64)
    short, long_ = encode(tokenizer, ["城市规划管理办法", TEXT], cfg).capped
    assert short is False
    assert long_ is (name != "chunks")  # chunks reads all 1,300 characters within 64 windows


def test_head_normalises_only_the_end_it_reads():
    from govtopic.normalize import NormalizeConfig

    cfg = LongDocConfig(strategy="head", max_length=64)
    text = "城市规划。" * 10_000
    read = get_strategy("head").normalize(text, NormalizeConfig(), cfg)
    assert 64 <= len(read) < len(text) // 10
    assert get_strategy("chunks").normalize(text, NormalizeConfig(), cfg) == text


def test_chunks_reads_a_huge_document_from_pieces_spread_over_it_at_a_cost_set_by_the_cap(tiny_model_dir):
    """A 3-million-character document: chunks reads pieces from its start to its end (not the first pages
    only), normalises far less than the document, and the result says the document was not read whole."""
    import re
    import tracemalloc

    from govtopic import predict
    from govtopic.normalize import NormalizeConfig

    huge = "".join(f"第{i}条 为了加强第{i}项城市规划管理，制定本办法。\n" for i in range(100_000))
    assert len(huge) > 3_000_000
    cfg = LongDocConfig(strategy="chunks", max_length=64, max_windows=8)
    tracemalloc.start()
    read = get_strategy("chunks").normalize(huge, NormalizeConfig(), cfg)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    articles = [int(n) for n in re.findall(r"^第(\d+)条", read, flags=re.M)]
    assert articles[0] == 0 and articles[-1] == 99_999  # the first and the last lines
    assert max(b - a for a, b in zip(articles, articles[1:])) < 100_000 / 16  # and pieces all the way between
    assert len(read) < len(huge) // 50 and peak < len(huge)  # bytes: far below the document's own size
    result = predict(huge, model=str(tiny_model_dir))
    assert result["truncated"] is True and result["windows"] <= 8

    # Below the threshold nothing changes: the whole document is normalised.
    text = huge[:200_000]
    assert get_strategy("chunks").normalize(text, NormalizeConfig(), cfg) == get_strategy("chunks").normalize(
        text, NormalizeConfig(), LongDocConfig(strategy="chunks")
    )
