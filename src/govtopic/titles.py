"""How a document's title is read, the same way in training, evaluation and prediction.

``long_doc.title`` chooses the rule:

- ``window``: the title is a window of its own. The document's logits are ``title_weight`` × the title
  window's plus the rest × the pooled body windows, so a title keeps its weight on a body of sixty windows,
  and a title-only or body-only document is read as it is.
- ``prepend``: the title starts the body, so it is read only in the first window.
- ``none``: titles are ignored.

A document given without a title (a ``.txt`` file, a plain string) is read with the title its text opens with
when ``long_doc.title_from_text`` is on (the default): ``guess_title`` finds the line that a 公文 is headed by
(``关于……的通知``, ``……实施方案``) among the first lines, or the document a cover note hands on
(``现将《……》印发给你们``). On ``gold_dev`` (official labels, full office documents) with each title written as
the first line of its text instead of given apart, the official recipe scores 0.484 first-level accuracy reading
bodies alone and 0.637 with titles given (``scripts/title_guess.py`` measures the guess beside both).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from govtopic.config import LongDocConfig
from govtopic.strategies import encode
from govtopic.windows import Windows

# Titles are cut to this many tokens: the longest titles in the official data are about 90 characters.
TITLE_TOKENS = 96


# Where a title may stand: among the first lines, before the body is well under way.
_TITLE_LINES, _TITLE_CHARS = 12, 1200
# The kinds of 公文 a title ends with (GB/T 9704 and what portals publish).
_KINDS = (
    "通知|通报|意见|实施意见|方案|办法|规定|决定|公告|通告|批复|复函|函|条例|细则|规则|规划|纲要|计划|措施|"
    "报告|预案|要点|指南|指引|制度|标准|规程|清单|目录|名单|安排|答复|决议|命令|公报|解读|章程|守则"
)
_HEADED = re.compile(rf"^(?:关于)?[^。；;！!？?：:，,]{{2,78}}?(?:{_KINDS})(?:[（(][^）)]{{1,12}}[）)])?$")
_NOT_A_START = re.compile(r"^(?:[（(【\[].*[）)】\]]|[0-9〇零一二三四五六七八九十]{2,4}年.*日)$")
# A cover note handing a document on: 现将《X》印发给你们 / 转发《X》.
_HANDED_ON = re.compile(
    r"(?:印发|转发|发布|制定)[^《\n]{0,12}《([^》\n]{4,80})》|《([^》\n]{4,80})》[^\n]{0,16}(?:印发|转发)"
)


def guess_title(text: str) -> str:
    """The title a normalised text opens with, or '' when it opens with none.

    A title is a line (or two consecutive lines, as titles wrap) among the first twelve that ends with the kind
    of the document (通知, 意见, 方案, 办法…, optionally followed by （试行）) and has no sentence punctuation;
    failing that, the document a cover note hands on (``现将《……》印发给你们``).

    Args:
        text: a normalised document (``govtopic.normalize``: metadata headers already removed).

    Example:
        >>> guess_title("市政办政府工作提升增效意见\n各镇政府、街道办事处:\n为认真贯彻……")
        '市政办政府工作提升增效意见'
        >>> guess_title("各区人民政府:\n现将《城市规划管理办法》印发给你们,请遵照执行。")
        '城市规划管理办法'
    """
    lines = [ln.strip() for ln in text[:_TITLE_CHARS].split("\n")[:_TITLE_LINES]]
    lines = [ln for ln in lines if ln]
    for i, line in enumerate(lines):
        if _HEADED.match(line):
            return line
        # A long title wraps onto a second line; a bracketed note (（此件公开发布）) or a date starts none.
        if i + 1 < len(lines) and len(line) <= 40 and not _NOT_A_START.match(line):
            if _HEADED.match(line + lines[i + 1]):
                return line + lines[i + 1]
    handed = _HANDED_ON.search(text[:_TITLE_CHARS])
    return (handed.group(1) or handed.group(2)) if handed else ""


def read_titles(titles: list[str] | None, cfg: LongDocConfig, texts: list[str] | None = None) -> list[str] | None:
    """The titles the rule reads: None under ``title: none`` (or when there are none).

    Given the (normalised) ``texts``, a document without a title gets ``guess_title`` of its text under
    ``long_doc.title_from_text`` (not under ``title: prepend``, where the title would only be read twice).
    """
    if cfg.title == "none":
        return None
    if texts is None or not cfg.title_from_text or cfg.title == "prepend":
        return titles
    given = titles or [""] * len(texts)
    read = [t if t.strip() else guess_title(x) for t, x in zip(given, texts)]
    return read if titles is not None or any(read) else None


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
    titles = read_titles(titles, cfg, texts) or [""] * len(texts)
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
        # Truncated when the body's windows stop short, or when the title is longer than its window.
        out.capped.append(
            bool(_per_doc(body, body_pos, d, "capped", False) or _per_doc(title, title_pos, d, "capped", False))
        )
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
