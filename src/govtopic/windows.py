"""Tokenizing documents for windows, in bounded memory: the machinery under the long-document strategies.

``govtopic.strategies`` decides what a strategy reads and cuts; this module reads texts in blocks through the
fast tokenizer (offsets included), keeps a long document's tokens only as far as its capped windows reach, and
holds the ``Windows`` record that training and prediction consume. Each window remembers its document and the
character spans it covers, so predictions can point at evidence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

# Long texts are tokenized in blocks of this many characters: memory stays bounded for a 1,000,000-character
# document and the tokenizer's batch call spreads the blocks over threads.
_BLOCK_CHARS = 8192
# A split point is looked for this far back from a block's end, so a Latin word or number stays whole.
_BLOCK_LOOKBACK = 64
# A bert-base-chinese token covers at least one character; Latin words and numbers cover more. Reading
# this many characters per wanted token is enough for any real text, and far cheaper than the whole text.
_CHARS_PER_TOKEN = 2
# Blocks go to the tokenizer in batches of about this many characters. Its output holds ~150 bytes of Python
# objects per token, so one batch stays near 40 MB however long the documents are.
_BATCH_CHARS = 1 << 18
# chunks: a document's tokens (20 bytes each here) are kept from the first reading up to this many, or up to
# what its capped windows can read if that is more. A longer document is counted on that reading and read a
# second time for the blocks its chosen windows cover only: memory follows the window cap, not the document
# (measured on a 50 MB document: 5.2 GB peak when every token was kept).
_KEEP_TOKENS = 1 << 16
# A document is unreadable to the model when more than this share of its characters fall in [UNK] tokens. Measured
# with the bert-base-chinese vocabulary after normalisation: real documents reach at most 0.027 (the 5 seeds),
# 0.024 (the 91 gold_dev documents) and 0.047 (2,944 regulations in the sample, mean 0.001); Korean 0.96, Thai
# 1.0, emoji 0.75 and Arabic 0.72 (0.33 counted in tokens: the vocabulary splits some Arabic words into letters,
# which is why characters are counted); a Chinese title before a Korean body 0.78. Russian (0.45) stays below.
UNREADABLE_SHARE = 0.5


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
    # Per document: tokens the vocabulary has no piece for ([UNK]) among the n_tokens read, and the share of the
    # read characters they cover (0.0 without tokens; above UNREADABLE_SHARE the model cannot read the text).
    n_unknown: list[int] = field(default_factory=list)
    unknown_share: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class _Tokens:
    """Token ids and character offsets of a text; with ``positions``, only some of its tokens."""

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    # Tokens in the whole text, how many are [UNK], the characters those cover and all tokens cover; with
    # positions these count tokens that were not kept too.
    total: int = 0
    n_unknown: int = 0
    unknown_chars: int = 0
    chars: int = 0
    # Position of each kept token in the whole text's token sequence; None when every token is kept.
    positions: np.ndarray | None = None

    @property
    def unknown_share(self) -> float:
        return self.unknown_chars / self.chars if self.chars else 0.0

    def local(self, position: int) -> int:
        """Index into ``ids`` of the token at ``position`` of the whole text (or of the next kept one)."""
        return position if self.positions is None else int(np.searchsorted(self.positions, position))


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


_Block = tuple[int, int, int]  # (text index, first character, end character)


def _blocks(texts: list[str], limits: list[int] | None = None) -> Iterator[_Block]:
    for i, text in enumerate(texts):
        limit = len(text) if limits is None else min(len(text), limits[i])
        for start, end in _block_bounds(text, limit):
            yield i, start, end


def _read_blocks(
    tokenizer, texts: list[str], blocks: Iterable[_Block]
) -> Iterator[tuple[_Block, np.ndarray, np.ndarray]]:
    """Each block's token ids and (n, 2) character offsets in its text, tokenizing ~_BATCH_CHARS at a time."""
    batch: list[_Block] = []
    chars = 0
    for block in blocks:
        batch.append(block)
        chars += block[2] - block[1]
        if chars >= _BATCH_CHARS:
            yield from _read_batch(tokenizer, texts, batch)
            batch, chars = [], 0
    if batch:
        yield from _read_batch(tokenizer, texts, batch)


def _read_batch(tokenizer, texts: list[str], batch: list[_Block]) -> Iterator[tuple[_Block, np.ndarray, np.ndarray]]:
    enc = tokenizer(
        [texts[d][a:b] for d, a, b in batch],
        add_special_tokens=False,
        # Text that spells a special token ("[SEP]", "[PAD]", "[CLS]") is read as its characters: a document
        # can never end a window early, pass for padding or hide among the model's own markers.
        split_special_tokens=True,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    for k, block in enumerate(batch):
        ids = np.asarray(enc["input_ids"][k], dtype=np.int32)
        offsets = np.asarray(enc["offset_mapping"][k], dtype=np.int64).reshape(-1, 2) + block[1]
        yield block, ids, offsets


def _counts(ids: np.ndarray, offsets: np.ndarray, unk_id: int | None) -> dict[str, int]:
    """The _Tokens counts of these tokens: total, n_unknown, unknown_chars, chars."""
    unknown = ids == unk_id
    width = offsets[:, 1] - offsets[:, 0]
    return {
        "total": len(ids),
        "n_unknown": int(np.count_nonzero(unknown)),
        "unknown_chars": int(width[unknown].sum()),
        "chars": int(width.sum()),
    }


def _join(parts: list[tuple[np.ndarray, np.ndarray]], unk_id: int | None, **known) -> _Tokens:
    """One _Tokens from consecutive (ids, offsets) parts, counted unless ``known`` gives the counts (and
    positions) because only some of the text's tokens are among the parts."""
    if not parts:
        return _Tokens(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    ids = np.concatenate([p[0] for p in parts])
    offsets = np.concatenate([p[1] for p in parts])
    return _Tokens(ids, offsets[:, 0], offsets[:, 1], **(known or _counts(ids, offsets, unk_id)))


def tokenize(tokenizer, texts: list[str], limits: list[int] | None = None) -> list[_Tokens]:
    """Token ids and character offsets of each text's first ``limit`` characters, in blocks."""
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in texts]
    for (d, _, _), ids, offsets in _read_blocks(tokenizer, texts, _blocks(texts, limits)):
        parts[d].append((ids, offsets))
    return [_join(p, tokenizer.unk_token_id) for p in parts]


def _chunk_tokens(tokenizer, texts: list[str], size: int, stride: int, cap: int) -> list[_Tokens]:
    """Tokens of each text for chunk windows: every token of a text up to _KEEP_TOKENS (or its windows' reach),
    only those of the blocks its chosen windows cover beyond that (see _KEEP_TOKENS)."""
    keep = max(cap * size, _KEEP_TOKENS)
    unk_id = tokenizer.unk_token_id
    counts: list[list[int]] = [[] for _ in texts]  # tokens per block
    bounds: list[list[_Block]] = [[] for _ in texts]
    totals: list[Counter] = [Counter() for _ in texts]
    held: list[list | None] = [[] for _ in texts]
    for block, ids, offsets in _read_blocks(tokenizer, texts, _blocks(texts)):
        d = block[0]
        counts[d].append(len(ids))
        bounds[d].append(block)
        totals[d].update(_counts(ids, offsets, unk_id))
        if held[d] is not None:
            held[d].append((ids, offsets))
            if totals[d]["total"] > keep:
                held[d] = None
    out = [_join(p, unk_id) if p is not None else None for p in held]
    again = [d for d, p in enumerate(held) if p is None]
    for d, tok in zip(again, _reread(tokenizer, texts, again, counts, bounds, (size, stride, cap))):
        tok.n_unknown, tok.unknown_chars, tok.chars = (totals[d][k] for k in ("n_unknown", "unknown_chars", "chars"))
        out[d] = tok
    return out  # type: ignore[return-value]


def _reread(tokenizer, texts, docs: list[int], counts, bounds, windows: tuple[int, int, int]) -> list[_Tokens]:
    """The tokens of the blocks that the chosen chunk windows of each of ``docs`` cover, with their positions."""
    size, stride, cap = windows
    wanted: list[_Block] = []
    firsts: dict[_Block, int] = {}
    for d in docs:
        edges = np.concatenate([[0], np.cumsum(counts[d])])  # block j holds tokens edges[j]:edges[j + 1]
        starts, _ = window_starts(int(edges[-1]), size, stride, cap)
        need: set[int] = set()
        for s in starts:
            first = int(np.searchsorted(edges, s, side="right")) - 1
            last = int(np.searchsorted(edges, min(s + size, int(edges[-1])), side="left"))
            need.update(range(first, last))
        for j in sorted(need):
            wanted.append(bounds[d][j])
            firsts[bounds[d][j]] = int(edges[j])
    parts: dict[int, list] = {d: [] for d in docs}
    positions: dict[int, list] = {d: [] for d in docs}
    for block, ids, offsets in _read_blocks(tokenizer, texts, wanted):
        parts[block[0]].append((ids, offsets))
        positions[block[0]].append(np.arange(firsts[block], firsts[block] + len(ids)))
    return [
        _join(parts[d], None, total=int(sum(counts[d])), positions=np.concatenate(positions[d] or [np.zeros(0, int)]))
        for d in docs
    ]


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
