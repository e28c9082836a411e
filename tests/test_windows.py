"""Long-document windows: coverage, caps, head+tail, spans pointing at the right characters."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, TOKENIZER_DIR
from govtopic.config import LongDocConfig
from govtopic.strategies import encode
from govtopic.windows import UNREADABLE_SHARE, tokenize, window_starts

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


SPECIAL_TEXT = "城市规划[SEP]通知[PAD]管理[CLS]办法[MASK]条例[UNK]结束"


def test_text_spelling_a_special_token_is_read_as_plain_text(tokenizer):
    specials = {tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id}
    for strategy in ("head", "head_tail", "chunks"):
        w = encode(tokenizer, [SPECIAL_TEXT], LongDocConfig(strategy=strategy, max_length=64, stride=8))
        inner = w.input_ids[0][1:-1]
        assert not specials & set(inner), strategy
        # "[UNK]" written in the text is its characters ("[", an unknown word, "]"), not one special token.
        assert w.n_tokens[0] == len(tokenize(tokenizer, [SPECIAL_TEXT])[0].ids) > 20
    assert tokenizer.decode(inner).replace(" ", "").startswith("城市规划[")


def test_unknown_tokens_are_counted_per_document(tokenizer):
    texts = ["안녕하세요 세계 여러분", "城市规划管理条例", "😀😀 城市 مرحبا"]
    w = encode(tokenizer, texts, LongDocConfig(strategy="chunks", max_length=32, stride=4))
    assert w.n_unknown == [3, 0, 2]
    assert w.n_tokens[0] == 3 and w.n_tokens[2] == 4  # "😀😀" and "مرحبا" are one [UNK] each
    assert w.unknown_share[:2] == [1.0, 0.0] and w.unknown_share[2] == 7 / 9  # 7 of 9 characters


FOREIGN = {
    "korean": "대한민국 정부는 도시 계획 관리를 강화하기 위하여 다음과 같이 통지한다. "
    "각 지방 자치 단체는 환경 보호 계획을 수립하여야 한다.",
    # Some Arabic words are split into letters the vocabulary has: few [UNK] tokens, but most characters unknown.
    "arabic": "تعلن الحكومة عن تعزيز إدارة التخطيط الحضري وحماية البيئة في جميع المحافظات اعتبارا من العام المقبل",
    "emoji": "😀 🎉 👍 🚀 🌍 ❤️ 😂 🙏 🔥 ✨ 😀😀😀 🎉🎉",
}


def test_unknown_share_separates_unreadable_text_from_real_documents(tokenizer, seed_texts):
    from govtopic.normalize import normalize

    real = [normalize(t) for t in seed_texts.values()]
    w = encode(tokenizer, real + list(FOREIGN.values()), LongDocConfig(strategy="chunks", max_length=512))
    assert max(w.unknown_share[: len(real)]) < 0.05
    assert min(w.unknown_share[len(real) :]) > UNREADABLE_SHARE


def test_a_huge_document_is_read_in_bounded_memory():
    """A 20 MB document read with the chunks cap (64 windows) must not hold every token of it at once."""
    code = """
import json, resource, sys
from transformers import AutoTokenizer
from govtopic.config import LongDocConfig
from govtopic.strategies import encode
tok = AutoTokenizer.from_pretrained(sys.argv[1])
bodies = "\\n".join(json.loads(line)["text"] for line in open(sys.argv[2], encoding="utf-8"))
text = bodies * (20_000_000 // len(bodies.encode("utf-8")) + 1)
encode(tok, ["预热"], LongDocConfig())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
w = encode(tok, [text], LongDocConfig(strategy="chunks", max_length=512, stride=64, max_windows=64))
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"windows": len(w), "capped": w.capped[0], "grown_mb": grown}))
"""
    args = [sys.executable, "-c", code, str(TOKENIZER_DIR), str(ROOT / "data" / "gold_dev.jsonl")]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["windows"] == 64 and result["capped"]
    # Holding every token costs ~2 GB here; the windows themselves need a few MB.
    assert result["grown_mb"] < 500, result


def test_long_document_windows_match_reading_the_whole_text(tokenizer):
    """Windows of a document read twice (counted, then only the covered blocks) equal those of one full read."""
    text = "".join(f"第{i}条 本市加强城市规划管理，GDP增长{i}%。안녕" for i in range(12_000))  # ~300,000 characters
    cfg = LongDocConfig(strategy="chunks", max_length=64, stride=8, max_windows=7)
    w = encode(tokenizer, [text, "短文", text[:5000]], cfg)
    whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = whole["input_ids"], whole["offset_mapping"]
    starts, capped = window_starts(len(ids), 62, 8, 7)
    assert capped and w.n_tokens[0] == len(ids) and w.doc_index.count(0) == len(starts)
    unknown = [k for k, i in enumerate(ids) if i == tokenizer.unk_token_id]
    assert w.n_unknown[0] == len(unknown) >= 12_000  # every "안녕" is unknown
    unknown_chars = sum(offsets[k][1] - offsets[k][0] for k in unknown)
    assert w.unknown_share[0] == pytest.approx(unknown_chars / sum(b - a for a, b in offsets))
    for k, s in enumerate(starts):
        assert w.input_ids[k][1:-1] == ids[s : s + 62]
        assert w.spans[k] == [(offsets[s][0], offsets[min(s + 62, len(ids)) - 1][1])]


def test_default_cap_spreads_windows_from_the_first_to_the_last(tokenizer):
    cfg = LongDocConfig(strategy="chunks", max_length=64, stride=8)  # ~4,000 characters: ~70 windows uncapped
    w = encode(tokenizer, [TEXT], cfg)
    starts, capped = window_starts(w.n_tokens[0], 62, 8, 10_000)
    assert capped is False and len(starts) > 4 * cfg.max_windows
    assert len(w) == cfg.max_windows and w.capped == [True]
    assert w.spans[0][0][0] == 0 and w.spans[-1][0][1] == len(TEXT)
    # Evenly spread: the gaps between the chosen windows differ by at most one uncapped step.
    firsts = [span[0][0] for span in w.spans]
    gaps = [b - a for a, b in zip(firsts, firsts[1:])]
    step = len(TEXT) / (len(starts) - 1)
    assert max(gaps) - min(gaps) <= 2 * step


def test_the_end_of_a_capped_document_is_read(tiny_model_dir):
    """Windows are spread over the whole document, not the first ones: what it ends with moves its scores."""
    from govtopic import TopicClassifier

    clf = TopicClassifier(tiny_model_dir, device="cpu")
    body = "第一条 本市加强城市规划管理。" * 400
    ends = [body + "法院审理刑事案件，检察院提起公诉。" * 30, body + "医院加强疾病预防和药品管理。" * 30]
    # One call per document: the same windows give bit-identical logits, so any difference comes from the end.
    (a, info), (b, _), (again, _) = (clf.document_logits([t], clf.long_doc, 16, ngram=False) for t in [*ends, ends[0]])
    assert info[0]["windows"] == clf.long_doc.max_windows and info[0]["truncated"] is True
    assert np.array_equal(a, again) and not np.array_equal(a, b)


def test_repeated_windows_are_computed_once_and_pooled_as_read(tiny_model_dir, monkeypatch):
    """A document of one boilerplate paragraph repeated: its identical windows cost one forward row, and its
    logits are the mean over every window, as when each is computed."""
    import torch

    from govtopic import TopicClassifier
    from govtopic.forward import LeanForward, lean_forward
    from govtopic.titles import encode_documents, pool

    clf = TopicClassifier(tiny_model_dir, device="cpu")
    # 27 tokens: windows step 54 tokens, so every window inside the repeated part holds the same tokens.
    period = "本网站所载文章仅供参考，转载请注明出处并保留原文链接。"
    text = "关于加强城市规划管理的通知。" + period * 40 + "医院加强疾病预防。"
    ld = clf.long_doc
    windows, is_title = encode_documents(clf.tokenizer, [text], None, ld)
    distinct = len({tuple(ids) for ids in windows.input_ids})
    assert 1 < distinct < len(windows) <= ld.max_windows
    assert lean_forward(clf.model) is not None
    rows = []
    original = LeanForward.__call__
    monkeypatch.setattr(LeanForward, "__call__", lambda self, ids, n: rows.append(len(ids)) or original(self, ids, n))
    pooled, _ = clf.document_logits([text], ld, 64, ngram=False)
    assert sum(rows) == distinct
    with torch.inference_mode():
        each = np.stack([clf.model(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in windows.input_ids])
    assert np.allclose(pooled[0], pool(each, is_title, ld), atol=1e-4)
