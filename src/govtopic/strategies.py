"""Long-document strategies: how a document becomes model windows, one object per strategy, registered by name.

A strategy owns everything that depends on what it reads of a document: which part of the text is normalised
(``normalize``: a head reads a few hundred tokens, so only that end is normalised), which tokens are read
(``tokens``), which windows are cut from them and when a document counts as ``truncated`` (``cut``). ``encode``
runs a strategy over a batch of documents for training, validation, prediction, the service and export alike.

The registry is the one list of strategies: config checks (``long_doc.strategy``), the CLI's ``--long-doc``
choices, the service's ``long_doc`` field and ``predict(long_doc=...)`` all read it. A new strategy is one
class here, decorated with ``@register("name")``.

Example:
    >>> from govtopic.config import LongDocConfig
    >>> windows = encode(tokenizer, ["第一条 为了……" * 300], LongDocConfig(strategy="head", max_length=128))
    >>> len(windows), windows.capped
    (1, [True])
    >>> strategy_names()
    ('head', 'head_tail', 'chunks')
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from govtopic.normalize import NormalizeConfig, normalize
from govtopic.windows import _CHARS_PER_TOKEN, Windows, _chunk_tokens, _Tokens, tokenize, window_starts


class LongDocSettings(Protocol):
    """The settings a strategy reads (``govtopic.config.LongDocConfig`` has them)."""

    strategy: str
    max_length: int
    stride: int
    max_windows: int
    head_tokens: int


# head and head_tail normalise this many characters per window token at each end they read (normalisation can
# remove a long metadata header or footer; the ends are read again twice as long when it removed most of one).
_NORMALIZE_MARGIN = 6

Span = tuple[int, int]

# chunks reads a document longer than this many characters (about 3 MB of Chinese text) from evenly spaced
# pieces instead of normalising and tokenising all of it: its windows are spread over the whole document anyway
# (long_doc.max_windows), so the pieces give the same kind of reading at a cost, in time and memory, set by the
# window cap rather than by the document (a 50 MB document: 25 s and +221 MB before, python
# scripts/benchmark_predict.py --big-doc-mb 50).
_SAMPLE_ABOVE = 1_000_000
# Pieces per window of the cap, and each piece's length in characters per window token.
_PIECES_PER_WINDOW = 4
_PIECE_CHARS_PER_TOKEN = 6
# How far a piece's edges move to reach a line break (header and footer rules read whole lines).
_LINE_REACH = 400


class Strategy:
    """What a strategy reads of a document. Subclasses set ``ends`` and implement ``tokens`` and ``cut``."""

    name = ""
    # How many ends of a text the strategy reads (None: the whole text).
    ends: int | None = None

    def normalize(self, text: str, config: NormalizeConfig, cfg: LongDocSettings) -> str:
        """The normalised text the strategy reads: the whole text, or only its ends (with a wide margin for
        headers and footers), so that on long documents normalising costs less than the model."""
        if self.ends is None:
            return normalize(text, config)
        reach = cut = cfg.max_length * _NORMALIZE_MARGIN
        while len(text) > self.ends * cut:
            head = normalize(text[:cut], config)
            tail = normalize(text[-cut:], config) if self.ends == 2 else None
            if min(len(head), reach if tail is None else len(tail)) >= reach // 2:
                return head if tail is None else head + "\n" + tail
            cut *= 2
        return normalize(text, config)

    def tokens(self, tokenizer, texts: list[str], cfg: LongDocSettings, size: int, cap: int) -> list[_Tokens]:
        """The tokens (ids and character offsets) of each text that the strategy's windows are cut from."""
        raise NotImplementedError

    def cut(self, tok: _Tokens, text: str, cfg: LongDocSettings, size: int, cap: int):
        """``(pieces, spans, truncated)`` of one document: token-id arrays of at most ``size`` tokens, the
        character spans each covers, and whether part of the text is left unread."""
        raise NotImplementedError


STRATEGIES: dict[str, Strategy] = {}


def register(name: str):
    """Class decorator: add a Strategy subclass to the registry under ``name``.

    Example:
        >>> @register("tail")
        ... class Tail(Strategy): ...
    """

    def add(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        STRATEGIES[name] = cls()
        return cls

    return add


def strategy_names() -> tuple[str, ...]:
    """The registered strategies' names, in registration order."""
    return tuple(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; a ValueError listing the registered names otherwise."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"long_doc strategy must be one of {', '.join(repr(n) for n in STRATEGIES)}, got {name!r}"
        ) from None


def _span(tok: _Tokens, a: int, b: int) -> Span:
    if b <= a:
        return (0, 0)
    return int(tok.starts[a]), int(tok.ends[b - 1])


@register("head")
class Head(Strategy):
    """The first window of the text; truncated when the text goes on beyond it."""

    ends = 1

    def tokens(self, tokenizer, texts, cfg, size, cap):
        limit = size * _CHARS_PER_TOKEN
        toks = tokenize(tokenizer, texts, [limit] * len(texts))
        # Digit- or Latin-heavy text packs many characters into a token: read it whole when the cut came short.
        short = [i for i, t in enumerate(toks) if len(t.ids) < size and len(texts[i]) > limit]
        for i, tok in zip(short, tokenize(tokenizer, [texts[i] for i in short])):
            toks[i] = tok
        return toks

    def cut(self, tok, text, cfg, size, cap):
        n = tok.total
        # Text beyond the characters tokenized is unread, unless it was read again whole (tokens reach past).
        limit = size * _CHARS_PER_TOKEN
        unread = len(text) > limit and (len(tok.ids) == 0 or int(tok.ends[-1]) <= limit)
        return [tok.ids[:size]], [[_span(tok, 0, min(n, size))]], n > size or unread


@register("head_tail")
class HeadTail(Strategy):
    """One window of the first ``head_tokens`` and the last tokens of the text; the middle is never read."""

    ends = 2

    def tokens(self, tokenizer, texts, cfg, size, cap):
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
            ids = np.concatenate([head.ids, tail.ids])
            out[i] = _Tokens(
                ids,
                np.concatenate([head.starts, tail.starts + shift]),
                np.concatenate([head.ends, tail.ends + shift]),
                total=len(ids),
                n_unknown=head.n_unknown + tail.n_unknown,
                unknown_chars=head.unknown_chars + tail.unknown_chars,
                chars=head.chars + tail.chars,
            )
        return out

    def cut(self, tok, text, cfg, size, cap):
        n = tok.total
        if n <= size:
            return [tok.ids[:size]], [[_span(tok, 0, n)]], len(text) > 2 * size * _CHARS_PER_TOKEN
        head = min(cfg.head_tokens, size)
        tail = size - head
        ids = np.concatenate([tok.ids[:head], tok.ids[n - tail :] if tail else tok.ids[:0]])
        return [ids], [[_span(tok, 0, head), _span(tok, n - tail, n)]], True


@register("chunks")
class Chunks(Strategy):
    """Overlapping windows over the whole text (``stride`` tokens shared), at most ``max_windows`` of them
    spread evenly from the first to the last; truncated when the cap left windows out. A document above
    ``_SAMPLE_ABOVE`` characters is read from evenly spaced pieces, its first and last among them (``sample``)."""

    def normalize(self, text: str, config: NormalizeConfig, cfg: LongDocSettings) -> str:
        if len(text) <= _SAMPLE_ABOVE:
            return normalize(text, config)
        return sample(text, config, cfg)

    def tokens(self, tokenizer, texts, cfg, size, cap):
        return _chunk_tokens(tokenizer, texts, size, cfg.stride, cap)

    def cut(self, tok, text, cfg, size, cap):
        n = tok.total
        starts, capped = window_starts(n, size, cfg.stride, cap)
        pieces = [(tok.local(s), tok.local(min(s + size, n))) for s in starts]
        spans = [[_span(tok, a, b)] for a, b in pieces]
        return [tok.ids[a:b] for a, b in pieces], spans, capped


def sample(text: str, config: NormalizeConfig, cfg: LongDocSettings) -> str:
    """The normalised text ``chunks`` reads of a very long document: ``_PIECES_PER_WINDOW`` pieces per window
    of the cap, evenly spaced from the document's start to its end, each cut at line breaks and normalised on
    its own, joined by line breaks. Their windows outnumber the cap, so the document reports ``truncated``.

    Example:
        >>> text = "".join(f"第{i}条 为了加强第{i}项管理，制定本办法。\n" for i in range(100_000))  # 2.9M characters
        >>> len(sample(text, NormalizeConfig(), LongDocConfig(max_length=128)))
        25057
    """
    count = _PIECES_PER_WINDOW * cfg.max_windows
    width = _PIECE_CHARS_PER_TOKEN * cfg.max_length
    pieces, end = [], 0
    for start in np.linspace(0, len(text) - width, count).astype(int).tolist():
        start = max(start, end)
        cut = text.rfind("\n", max(end, start - _LINE_REACH), start)
        start = cut + 1 if cut >= 0 else start
        stop = text.find("\n", start + width, start + width + _LINE_REACH)
        end = stop if stop >= 0 else min(start + width, len(text))
        piece = normalize(text[start:end], config)
        if piece:
            pieces.append(piece)
    read = "\n".join(pieces)
    if len(read) < width:  # the pieces were mostly what normalisation removes: read the document whole
        return normalize(text, config)
    return read


def encode(
    tokenizer,
    texts: list[str],
    cfg: LongDocSettings,
    strategy: str | None = None,
    max_windows: int | None = None,
) -> Windows:
    """Windows of each (normalised) text under ``strategy`` (default: the config's), with [CLS]/[SEP] added.

    Args:
        tokenizer: the model's tokenizer.
        texts: normalised documents.
        cfg: the long-document settings (``max_length``, ``stride``, ``max_windows``, ``head_tokens``).
        strategy: a registered strategy's name, instead of ``cfg.strategy``.
        max_windows: cap on windows per document instead of ``cfg.max_windows`` (training uses
            ``train_max_windows``).

    Example:
        >>> encode(tokenizer, ["城市规划"], LongDocConfig(max_length=64)).input_ids
        [[101, 1814, 2356, 6226, 1153, 102]]
    """
    chosen = get_strategy(strategy or cfg.strategy)
    size = cfg.max_length - 2
    cap = max_windows or cfg.max_windows
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    out = Windows()
    for d, tok in enumerate(chosen.tokens(tokenizer, texts, cfg, size, cap)):
        pieces, spans, truncated = chosen.cut(tok, texts[d], cfg, size, cap)
        for piece, span in zip(pieces, spans):
            out.input_ids.append([cls_id, *piece.tolist(), sep_id])
            out.doc_index.append(d)
            out.spans.append(span)
        out.n_tokens.append(tok.total)
        out.capped.append(bool(truncated))
        out.n_unknown.append(tok.n_unknown)
        out.unknown_share.append(tok.unknown_share)
    return out
