"""How a document's title is read, the same way in training, evaluation and prediction.

``long_doc.title`` chooses the rule:

- ``window``: the title is a window of its own. The document's logits are ``title_weight`` × the title
  window's plus the rest × the pooled body windows, so a title keeps its weight on a body of sixty windows,
  and a title-only or body-only document is read as it is.
- ``prepend``: the title starts the body, so it is read only in the first window.
- ``none``: titles are ignored.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from govtopic.config import LongDocConfig
from govtopic.windows import Windows, encode

# Titles are cut to this many tokens: the longest titles in the official data are about 90 characters.
TITLE_TOKENS = 96


def read_titles(titles: list[str] | None, cfg: LongDocConfig) -> list[str] | None:
    """The titles the rule reads: None under ``title: none`` (or when there are none)."""
    return titles if cfg.title != "none" else None


def prepend(texts: list[str], titles: list[str]) -> list[str]:
    """Title and body joined by a line break (either may be empty)."""
    return ["\n".join(p for p in (t, b) if p.strip()) for t, b in zip(titles, texts)]


def encode_documents(
    tokenizer,
    texts: list[str],
    titles: list[str] | None,
    cfg: LongDocConfig,
    max_windows: int | None = None,
) -> tuple[Windows, np.ndarray]:
    """Windows of each document under the title rule, in document order, and which windows are titles.

    Args:
        tokenizer: the model's tokenizer.
        texts: normalised bodies (may be empty when a title is given).
        titles: normalised titles, or None when the documents have none.
        cfg: the long-document settings (``strategy``, ``max_length``, ``title``, ...).
        max_windows: cap on body windows per document (training uses ``train_max_windows``).

    Example:
        >>> windows, is_title = encode_documents(tok, ["正文……"], ["关于……的通知"], LongDocConfig())
        >>> is_title.tolist()
        [True, False]
    """
    titles = read_titles(titles, cfg) or [""] * len(texts)
    if cfg.title == "prepend":
        windows = encode(tokenizer, prepend(texts, titles), cfg, max_windows=max_windows)
        return windows, np.zeros(len(windows), dtype=bool)
    has_title = [bool(t.strip()) for t in titles]
    # A document with neither keeps one (empty) body window, so every document has a row to report on.
    has_body = [bool(b.strip()) or not h for b, h in zip(texts, has_title)]
    body = encode(tokenizer, [b for b, h in zip(texts, has_body) if h], cfg, max_windows=max_windows)
    head = dataclasses.replace(cfg, max_length=min(cfg.max_length, TITLE_TOKENS + 2))
    title = encode(tokenizer, [t for t, h in zip(titles, has_title) if h], head, strategy="head")
    return _merge(body, has_body, title, has_title)


def _per_doc(w: Windows, position: dict[int, int], d: int, name: str, default):
    k = position.get(d)
    values = getattr(w, name, None)
    return values[k] if k is not None and values else default


def _merge(body: Windows, has_body: list[bool], title: Windows, has_title: list[bool]) -> tuple[Windows, np.ndarray]:
    """One Windows in document order: each document's title window first, then its body windows."""
    body_pos = {d: k for k, d in enumerate(i for i, h in enumerate(has_body) if h)}
    title_pos = {d: k for k, d in enumerate(i for i, h in enumerate(has_title) if h)}
    rows_of = {"body": _rows_by_doc(body), "title": _rows_by_doc(title)}
    out, is_title = Windows(), []
    for d in range(len(has_body)):
        for kind, w, pos in (("title", title, title_pos), ("body", body, body_pos)):
            if d not in pos:
                continue
            for r in rows_of[kind].get(pos[d], []):
                out.input_ids.append(w.input_ids[r])
                out.doc_index.append(d)
                out.spans.append(w.spans[r])
                is_title.append(kind == "title")
        n_body, n_title = _per_doc(body, body_pos, d, "n_tokens", 0), _per_doc(title, title_pos, d, "n_tokens", 0)
        unk_body = _per_doc(body, body_pos, d, "n_unknown", 0)
        unk_title = _per_doc(title, title_pos, d, "n_unknown", 0)
        out.n_tokens.append(n_body + n_title)
        out.capped.append(bool(_per_doc(body, body_pos, d, "capped", False)))
        if hasattr(out, "n_unknown"):
            out.n_unknown.append(unk_body + unk_title)
            share_b = _per_doc(body, body_pos, d, "unknown_share", 0.0)
            share_t = _per_doc(title, title_pos, d, "unknown_share", 0.0)
            total = n_body + n_title
            out.unknown_share.append((share_b * n_body + share_t * n_title) / total if total else 0.0)
    return out, np.array(is_title, dtype=bool)


def _rows_by_doc(w: Windows) -> dict[int, list[int]]:
    rows: dict[int, list[int]] = {}
    for r, d in enumerate(w.doc_index):
        rows.setdefault(d, []).append(r)
    return rows


def pool(block: np.ndarray, is_title: np.ndarray, cfg: LongDocConfig) -> np.ndarray:
    """A document's logits from its windows' (rows of ``block``): body windows pooled by ``cfg.pooling``,
    then mixed with the title window by ``cfg.title_weight`` when the document has both."""
    body, title = block[~is_title], block[is_title]
    pooled = None
    if len(body):
        pooled = body.max(axis=0) if cfg.pooling == "max" else body.mean(axis=0)
    if len(title):
        t = title.mean(axis=0)
        pooled = t if pooled is None else cfg.title_weight * t + (1 - cfg.title_weight) * pooled
    return pooled
