"""Turning documents into model windows: head, head+tail, or overlapping chunks over the whole text.

The same code serves training and prediction, so a model is always fed the way it was trained. Each
window remembers its document and the character spans it covers, so predictions can point at evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from govtopic.config import LongDocConfig

# Long texts are tokenized in blocks of this many characters: memory stays bounded for a 1,000,000-character
# document and the tokenizer's batch call spreads the blocks over threads.
_BLOCK_CHARS = 8192
# A split point is looked for this far back from a block's end, so a Latin word or number stays whole.
_BLOCK_LOOKBACK = 64
# A bert-base-chinese token covers at least one character; Latin words and numbers cover more. Reading
# this many characters per wanted token is enough for any real text, and far cheaper than the whole text.
_CHARS_PER_TOKEN = 2


@dataclass
class Windows:
    """Windows of a batch of documents, in document order."""

    input_ids: list[list[int]] = field(default_factory=list)
    doc_index: list[int] = field(default_factory=list)
    # Character spans of each window in its (normalised) document: one span, two for head_tail.
    spans: list[list[tuple[int, int]]] = field(default_factory=list)
    # Per document: total tokens, and whether the window cap left part of it unread.
    n_tokens: list[int] = field(default_factory=list)
    capped: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class _Tokens:
    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def _block_bounds(text: str, limit: int) -> list[tuple[int, int]]:
    """Character ranges of at most ``limit`` characters, cut at whitespace or punctuation where possible."""
    bounds, start = [], 0
    while start < len(text):
        end = min(start + _BLOCK_CHARS, limit)
        if end < limit:
            for cut in range(end, max(start + 1, end - _BLOCK_LOOKBACK), -1):
                if not text[cut - 1].isalnum():
                    end = cut
                    break
        bounds.append((start, end))
        start = end
        if end >= limit:
            break
    return bounds


def tokenize(tokenizer, texts: list[str], limits: list[int] | None = None) -> list[_Tokens]:
    """Token ids and character offsets of each text's first ``limit`` characters, in blocks."""
    pieces, owners, bases = [], [], []
    for i, text in enumerate(texts):
        limit = len(text) if limits is None else min(len(text), limits[i])
        for start, end in _block_bounds(text, limit):
            pieces.append(text[start:end])
            owners.append(i)
            bases.append(start)
    enc = (
        tokenizer(
            pieces,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        if pieces
        else None
    )
    parts: list[list[tuple]] = [[] for _ in texts]
    for k, owner in enumerate(owners):
        ids = np.asarray(enc["input_ids"][k], dtype=np.int32)
        offsets = np.asarray(enc["offset_mapping"][k], dtype=np.int64).reshape(-1, 2) + bases[k]
        parts[owner].append((ids, offsets))
    out = []
    for chunks in parts:
        if not chunks:
            out.append(_Tokens(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64)))
            continue
        ids = np.concatenate([c[0] for c in chunks])
        offsets = np.concatenate([c[1] for c in chunks])
        out.append(_Tokens(ids, offsets[:, 0], offsets[:, 1]))
    return out


def window_starts(n_tokens: int, size: int, stride: int, cap: int) -> tuple[list[int], bool]:
    """Start positions of overlapping windows covering ``n_tokens``; at most ``cap``, spread evenly."""
    if n_tokens <= size:
        return [0], False
    step = size - stride
    starts = list(range(0, n_tokens - size, step)) + [n_tokens - size]
    if len(starts) <= cap:
        return starts, False
    picks = np.linspace(0, len(starts) - 1, cap).round().astype(int)
    return [starts[i] for i in sorted(set(picks.tolist()))], True


def _span(tok: _Tokens, a: int, b: int) -> tuple[int, int]:
    if b <= a:
        return (0, 0)
    return int(tok.starts[a]), int(tok.ends[b - 1])


def encode(
    tokenizer, texts: list[str], cfg: LongDocConfig, strategy: str | None = None, max_windows: int | None = None
) -> Windows:
    """Windows for each text under ``strategy`` (default: the config's), with [CLS]/[SEP] added."""
    strategy = strategy or cfg.strategy
    if strategy not in ("head", "head_tail", "chunks"):
        raise ValueError(f"long_doc strategy must be 'head', 'head_tail' or 'chunks', got {strategy!r}")
    size = cfg.max_length - 2
    cap = max_windows or cfg.max_windows
    limits = None
    if strategy == "head":
        limits = [size * _CHARS_PER_TOKEN] * len(texts)
        toks = tokenize(tokenizer, texts, limits)
        # Digit- or Latin-heavy text packs many characters into a token: read it whole when the cut came short.
        short = [i for i, t in enumerate(toks) if len(t.ids) < size and len(texts[i]) > limits[i]]
        for i, tok in zip(short, tokenize(tokenizer, [texts[i] for i in short])):
            toks[i] = tok
            limits[i] = len(texts[i])
    elif strategy == "head_tail":
        toks = _head_tail_tokens(tokenizer, texts, size)
    else:
        toks = tokenize(tokenizer, texts)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    out = Windows()
    for d, tok in enumerate(toks):
        n = len(tok.ids)
        if strategy == "chunks":
            starts, capped = window_starts(n, size, cfg.stride, cap)
            pieces = [(s, min(s + size, n)) for s in starts]
            spans = [[_span(tok, a, b)] for a, b in pieces]
            ids = [tok.ids[a:b] for a, b in pieces]
        elif strategy == "head" or n <= size:
            capped = n > size or (limits is not None and len(texts[d]) > limits[d])
            capped = capped or (strategy == "head_tail" and len(texts[d]) > 2 * size * _CHARS_PER_TOKEN)
            ids, spans = [tok.ids[:size]], [[_span(tok, 0, min(n, size))]]
        else:
            head = min(cfg.head_tokens, size)
            tail = size - head
            ids = [np.concatenate([tok.ids[:head], tok.ids[n - tail :] if tail else tok.ids[:0]])]
            spans = [[_span(tok, 0, head), _span(tok, n - tail, n)]]
            capped = True
        for piece, span in zip(ids, spans):
            out.input_ids.append([cls_id, *piece.tolist(), sep_id])
            out.doc_index.append(d)
            out.spans.append(span)
        out.n_tokens.append(n)
        out.capped.append(bool(capped))
    return out


def _head_tail_tokens(tokenizer, texts: list[str], size: int) -> list[_Tokens]:
    """Tokens of the first and last characters only: the middle of a long text is never tokenized."""
    reach = size * _CHARS_PER_TOKEN
    short = [i for i, t in enumerate(texts) if len(t) <= 2 * reach]
    long_ = [i for i, t in enumerate(texts) if len(t) > 2 * reach]
    out: list[_Tokens | None] = [None] * len(texts)
    for i, tok in zip(short, tokenize(tokenizer, [texts[i] for i in short])):
        out[i] = tok
    heads = tokenize(tokenizer, [texts[i][:reach] for i in long_])
    tails = tokenize(tokenizer, [texts[i][-reach:] for i in long_])
    for i, head, tail in zip(long_, heads, tails):
        shift = len(texts[i]) - reach
        # Ids from both ends, offsets shifted back into the whole text; the middle is left out.
        out[i] = _Tokens(
            np.concatenate([head.ids, tail.ids]),
            np.concatenate([head.starts, tail.starts + shift]),
            np.concatenate([head.ends, tail.ends + shift]),
        )
    return out  # type: ignore[return-value]
