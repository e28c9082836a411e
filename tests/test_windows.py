"""Long-document windows: coverage, caps, head+tail, spans pointing at the right characters."""

from hypothesis import given, settings
from hypothesis import strategies as st

from govtopic.config import LongDocConfig
from govtopic.windows import encode, tokenize, window_starts

TEXT = "".join(f"第{i}条 本市加强城市规划管理。" for i in range(300))  # ~4,000 characters


def test_chunks_cover_every_token(tokenizer):
    cfg = LongDocConfig(strategy="chunks", max_length=64, stride=16, max_windows=1000)
    w = encode(tokenizer, [TEXT], cfg)
    n = w.n_tokens[0]
    assert len(w) > 1 and not w.capped[0]
    covered = set()
    for ids, _spans in zip(w.input_ids, w.spans):
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert len(ids) <= 64
    starts, _ = window_starts(n, 62, 16, 1000)
    for s in starts:
        covered.update(range(s, min(s + 62, n)))
    assert covered == set(range(n))
    # Window spans are character spans of the text itself: the first window starts at the start.
    assert w.spans[0][0][0] == 0 and w.spans[-1][0][1] == len(TEXT)


def test_window_text_matches_its_span(tokenizer):
    cfg = LongDocConfig(strategy="chunks", max_length=32, stride=4, max_windows=1000)
    w = encode(tokenizer, [TEXT], cfg)
    a, b = w.spans[3][0]
    decoded = tokenizer.decode(w.input_ids[3][1:-1]).replace(" ", "")
    assert decoded == TEXT[a:b].replace(" ", "")


def test_cap_spreads_windows_and_is_reported(tokenizer):
    cfg = LongDocConfig(strategy="chunks", max_length=32, stride=0, max_windows=5)
    w = encode(tokenizer, [TEXT, "短文"], cfg)
    assert w.doc_index.count(0) == 5 and w.capped == [True, False]
    assert w.spans[4][0][1] == len(TEXT)  # the last window still reaches the end of the document


def test_head_tail_reads_both_ends(tokenizer):
    cfg = LongDocConfig(strategy="head_tail", max_length=64, head_tokens=20)
    text = "开头" * 50 + "中间" * 3000 + "结尾" * 50
    w = encode(tokenizer, [text], cfg)
    assert len(w) == 1 and len(w.input_ids[0]) == 64
    decoded = tokenizer.decode(w.input_ids[0][1:-1]).replace(" ", "")
    assert decoded.startswith("开头" * 10) and decoded.endswith("结尾" * 21)
    assert "中间" not in decoded
    (a, b), (c, d) = w.spans[0]
    assert a == 0 and d == len(text)


def test_head_is_truncation_and_says_so(tokenizer):
    cfg = LongDocConfig(strategy="head", max_length=64)
    w = encode(tokenizer, [TEXT, "短"], cfg)
    assert [len(x) for x in w.input_ids] == [64, 3]
    assert w.capped == [True, False]


def test_empty_text_gives_one_empty_window(tokenizer):
    w = encode(tokenizer, [""], LongDocConfig(max_length=32, stride=4))
    assert w.input_ids == [[tokenizer.cls_token_id, tokenizer.sep_token_id]]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 5000), size=st.integers(8, 600), stride_frac=st.floats(0, 0.9), cap=st.integers(1, 100))
def test_window_starts_cover_everything_when_uncapped(n, size, stride_frac, cap):
    stride = int(size * stride_frac)
    starts, capped = window_starts(n, size, stride, cap)
    assert len(starts) <= cap and starts == sorted(set(starts))
    if not capped:
        covered = set()
        for s in starts:
            covered.update(range(s, min(s + size, n)))
        assert covered == set(range(n))
    else:
        assert starts[0] == 0
        if cap >= 2:  # a capped set still reaches the end of the document
            assert starts[-1] == n - size


def test_block_tokenization_matches_whole_text(tokenizer):
    """Tokenizing in 8k-character blocks gives the same ids and offsets as one call on the whole text."""
    text = ("abc123 GDP增长。" * 3000)[:20000]
    tokens = tokenize(tokenizer, [text])[0]
    whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert tokens.ids.tolist() == whole["input_ids"]
    assert list(zip(tokens.starts.tolist(), tokens.ends.tolist())) == [tuple(o) for o in whole["offset_mapping"]]


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("城市规划管理条例第一二三章。，abc12 \n😀")), max_size=600))
def test_chunk_windows_cover_every_token_of_any_text(tokenizer, text):
    cfg = LongDocConfig(strategy="chunks", max_length=24, stride=5, max_windows=10_000)
    w = encode(tokenizer, [text], cfg)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    starts, _ = window_starts(len(ids), 22, 5, 10_000)
    rebuilt = list(ids[:0])
    for s, window in zip(starts, w.input_ids):
        assert window[1:-1] == ids[s : s + 22]
        rebuilt[s : s + 22] = window[1:-1]
    assert rebuilt == ids
