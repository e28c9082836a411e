"""Batched inference: ``predict()`` for one-off calls and ``TopicClassifier`` for repeated use.

``TopicClassifier.predict`` runs three stages, which the service, Ray actors, review and evaluation share
through it (evaluation calls stage 2 directly on documents its loader has normalised):

1. ``prepare``: documents checked, normalised as the long-document strategy reads them (as in training), titles
   read by the title rule, empty documents answered without the model;
2. ``document_logits``: windows cut by the strategy (``govtopic.strategies``), sorted by length and batched
   across documents (each batch padded only to its own longest window), logits pooled back per document with
   the title window's weight, the n-gram channel added;
3. ``decode``: calibrated scores decoded top-down into results in the caller's order, with the review flag.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from govtopic import review
from govtopic.calibration import level_softmax
from govtopic.config import LongDocConfig
from govtopic.labels import SEP, hierarchical_decode
from govtopic.modeling import ModelLoadError, autocast_dtype, load_for_inference
from govtopic.ngram import WEIGHTS_FILE as NGRAM_FILE
from govtopic.ngram import NgramChannel, mix
from govtopic.normalize import normalize
from govtopic.record import ModelRecord
from govtopic.strategies import encode, get_strategy
from govtopic.titles import encode_documents, pool, read_titles
from govtopic.windows import UNREADABLE_SHARE, Windows

logger = logging.getLogger(__name__)

ENV_MODEL = "GOVTOPIC_MODEL"
# Documents encoded together: bounds memory on huge inputs while giving the length sort room to work.
_GROUP_DOCS = 512
# Show a progress bar from this many documents on (short calls stay quiet).
_PROGRESS_FROM = 2000


def _check_texts(texts: Any) -> tuple[list[str], list[str] | None, bool]:
    """(bodies, titles or None, whether one document was given); a TypeError names the first bad position.

    A document is a str (the body) or a mapping with ``text`` and/or ``title``.
    """
    if isinstance(texts, (str, dict)):
        bodies, titles, _ = _check_texts([texts])
        return bodies, titles, True
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError("predict() takes str documents, got bytes; decode them first, e.g. data.decode('utf-8')")
    if hasattr(texts, "columns") and hasattr(texts, "iloc"):
        raise TypeError(
            "predict() got a DataFrame, whose iteration gives its column names; pass a column, e.g. "
            "predict(df['text'].tolist()), or records: predict(df[['title', 'text']].to_dict('records'))"
        )
    if not isinstance(texts, Iterable):
        raise TypeError(
            f"predict() takes a str, a {{'title', 'text'}} dict or a list of them, got {type(texts).__name__}"
        )
    bodies, titles, any_title = [], [], False
    for i, t in enumerate(texts):
        if isinstance(t, dict):
            unknown = set(t) - {"title", "text", "id"}
            if unknown:
                raise TypeError(
                    f"predict(): document at position {i} has unknown key(s) {sorted(unknown)}; a document is "
                    "{'title': ..., 'text': ...} (and an optional 'id'): pass rows of a table as "
                    "[{'title': r['title'], 'text': r['text']} for r in rows]"
                )
            for key in ("title", "text"):
                if t.get(key) is not None and not isinstance(t[key], str):
                    raise TypeError(
                        f"predict(): document at position {i}: {key!r} is {type(t[key]).__name__}, expected str"
                    )
            body, title = t.get("text") or "", t.get("title") or ""
            any_title = any_title or bool(title)
        elif isinstance(t, str):
            body, title = t, ""
        else:
            hint = " (decode bytes first)" if isinstance(t, (bytes, bytearray)) else ""
            raise TypeError(
                f"predict(): document at position {i} is {type(t).__name__}, expected str or "
                f"a {{'title', 'text'}} dict{hint}"
            )
        bodies.append(body)
        titles.append(title)
    return bodies, (titles if any_title else None), False


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


@dataclasses.dataclass
class Prepared:
    """Documents ready for the model (``TopicClassifier.prepare``): what the strategy reads of each, its title,
    and the answers of the documents that need no model (empty ones), by position."""

    raw: list[str]  # the bodies as given
    texts: list[str]  # normalised as the strategy reads them
    titles: list[str] | None  # normalised titles (given, or read from the text); None when there are none
    title_given: list[bool]
    long_doc: LongDocConfig
    single: bool  # one document was given (predict returns one result)
    answered: dict[int, dict]
    todo: list[int]  # positions the model reads, longest first

    def groups(self, size: int) -> Iterator[list[int]]:
        """The positions to read, ``size`` documents at a time."""
        for start in range(0, len(self.todo), size):
            yield self.todo[start : start + size]

    def texts_of(self, group: list[int]) -> tuple[list[str], list[str] | None]:
        """The normalised bodies and titles of ``group``, for ``document_logits``."""
        return [self.texts[i] for i in group], [self.titles[i] for i in group] if self.titles else None


class TopicClassifier:
    """A loaded model folder (or Hub id) that predicts topics; load once, call ``predict`` many times."""

    def __init__(
        self,
        model: str | os.PathLike,
        device: str | None = None,
        allow_pickle: bool = False,
        quantize: bool = False,
        compile: bool = False,
    ):
        self.source = str(model)
        self.model, self.tokenizer = load_for_inference(self.source, device, allow_pickle=allow_pickle)
        self.device = next(self.model.parameters()).device
        # The folder's govtopic settings and labels, checked: a bad value is a ModelLoadError naming it.
        self.record = ModelRecord.from_config(self.model.config, self.source)
        self.long_doc = self.record.long_doc
        self.normalize_config = self.record.normalize
        self.temperature = self.record.temperature
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions and self.long_doc.max_length > positions:
            logger.warning(
                "long_doc.max_length %d exceeds the model's %d positions; using %d",
                self.long_doc.max_length,
                positions,
                positions,
            )
            self.long_doc = dataclasses.replace(self.long_doc, max_length=positions)
        self.precision = self.record.precision
        self.labels = self.record.labels
        # The n-gram channel kept beside the weights (govtopic/ngram.py), used when its weight is above 0.
        self.ngram = NgramChannel.load(self.source) if Path(self.source).is_dir() else None
        weights = self.record.ngram_weight, self.record.ngram_full_weight
        if max(weights) > 0 and self.ngram is None:
            raise ModelLoadError(
                f"{self.source}: config.json gives the n-gram channel weights {weights[0]} and {weights[1]} "
                f"(ngram_weight, ngram_full_weight) but the folder has no {NGRAM_FILE}; copy the whole folder, or "
                "set both to 0"
            )
        if weights[1] > 0 and not self.ngram.has_full:
            raise ModelLoadError(
                f"{self.source}: config.json gives the n-gram channel's full-label block a weight of {weights[1]} "
                f"but {NGRAM_FILE} has no such block; fit the channel again (python scripts/fit_ngram_channel.py "
                "MODEL_DIR) or set ngram_full_weight to 0"
            )
        # The Rust tokenizer refuses concurrent use ("Already borrowed"); the model forward is thread-safe.
        self._tokenizer_lock = threading.Lock()
        if quantize:
            self._quantize()
        if compile:
            self.model.forward = torch.compile(self.model.forward, dynamic=True)

    def _quantize(self) -> None:
        if self.device.type != "cpu":
            raise ValueError("quantize=True is dynamic int8 quantisation for CPU inference; use device='cpu'")
        self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)

    def normalize_for(self, text: str, cfg: LongDocConfig) -> str:
        """The normalised text ``cfg``'s strategy reads (``govtopic.strategies``: head and head_tail normalise
        only the ends they read)."""
        return get_strategy(cfg.strategy).normalize(text, self.normalize_config, cfg)

    # ------------------------------------------------------------ windows and logits
    def encode(self, texts: list[str], long_doc: LongDocConfig) -> Windows:
        with self._tokenizer_lock:
            return encode(self.tokenizer, texts, long_doc)

    @torch.inference_mode()
    def window_logits(self, windows: Windows, batch_size: int) -> np.ndarray:
        """Logits of every window, batched by length and padded per batch; rows in window order.

        A window whose token ids repeat an earlier one (a boilerplate paragraph, the same document twice) is
        computed once. The forward pass is ``govtopic.forward``'s lean one where the model allows it (checked
        against the model's own when first used), else the model's.
        """
        from govtopic.forward import batched_logits, lean_forward  # imported here: this method is their only user

        # A compiled or otherwise replaced forward is the caller's choice: keep it.
        lean = lean_forward(self.model) if "forward" not in vars(self.model) else None
        dtype = autocast_dtype(self.device, self.precision)
        pad = self.tokenizer.pad_token_id or 0
        return batched_logits(self.model, windows.input_ids, len(self.labels), batch_size, pad, dtype, lean)

    def document_logits(
        self,
        texts: list[str],
        long_doc: LongDocConfig,
        batch_size: int,
        return_evidence: bool = False,
        titles: list[str] | None = None,
        ngram: bool = True,
    ) -> tuple[np.ndarray, list[dict]]:
        """Pooled logits per (already normalised) document and per-document window information.

        Titles (normalised, one per text, '' for none) are read by the model's title rule (govtopic.titles).
        With ``ngram`` (default) the n-gram channel's scores are added with the folder's weight.
        """
        with self._tokenizer_lock:
            windows, is_title = encode_documents(self.tokenizer, texts, titles, long_doc)
        logits = self.window_logits(windows, batch_size)
        # Windows come in document order: document d owns rows bounds[d]:bounds[d + 1].
        bounds = np.concatenate([[0], np.cumsum(np.bincount(windows.doc_index, minlength=len(texts)))])
        pooled = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        info = []
        for d in range(len(texts)):
            rows = np.arange(bounds[d], bounds[d + 1])
            block = logits[rows]
            pooled[d] = pool(block, is_title[rows], long_doc)
            item = {
                "windows": len(rows),
                "tokens": windows.n_tokens[d],
                "truncated": windows.capped[d],
                "unknown_share": windows.unknown_share[d] if windows.unknown_share else 0.0,
            }
            if return_evidence:
                item["_rows"] = (rows, block, [windows.spans[r] for r in rows], is_title[rows])
            info.append(item)
        if ngram and self.ngram is not None and max(self.record.ngram_weight, self.record.ngram_full_weight) > 0:
            read = read_titles(titles, long_doc, texts)
            record = self.record
            first, full, share = self.ngram.read(texts, read, self.labels)
            pooled = mix(pooled, first, full, record.ngram_weight, record.ngram_full_weight, self.labels)
            for item, known in zip(info, share):
                item["known_ngrams"] = round(float(known), 4)
        return pooled, info

    # ------------------------------------------------------------ public
    def predict(
        self,
        texts: str | dict | Sequence[str | dict],
        batch_size: int = 32,
        top_k: int = 1,
        long_doc: str | None = None,
        return_evidence: bool = False,
        progress: bool | None = None,
    ) -> dict | list[dict]:
        """Topic of each document: ``label`` (full), ``label_l1``, ``score`` and, with top_k > 1, alternatives.

        Args:
            texts: a document or a list of them; a document is a str (its body) or a dict with ``title``
                and/or ``text``. Titles are read by the model's title rule (``long_doc.title``).
            batch_size: windows per forward pass.
            top_k: alternatives to return (``top_k`` and ``top_k_l1``) when above 1.
            long_doc: a registered strategy (``head``, ``head_tail``, ``chunks``) to override the model's.
            return_evidence: add the passage that most supports the label.
            progress: show a progress bar (default: from 2,000 documents on).

        A str or dict gives one result, a list gives a list in the same order. Empty documents (also after
        normalisation) get ``label`` None and a ``reason``, never a topic.

        Example:
            >>> clf = TopicClassifier("runs/quickstart/model")
            >>> clf.predict({"title": "关于加强城市规划管理的通知", "text": "各区人民政府……"})["label_l1"]
            '城乡建设、环境保护'
        """
        batch_size, top_k = _check_count("batch_size", batch_size), _check_count("top_k", top_k)
        prepared = self.prepare(texts, long_doc)
        results: list[dict | None] = [None] * len(prepared.raw)
        for i, answer in prepared.answered.items():
            results[i] = answer
        show = progress if progress is not None else len(results) >= _PROGRESS_FROM
        bar = _progress_bar(len(results), show)
        for group in prepared.groups(_GROUP_DOCS):
            texts_g, titles_g = prepared.texts_of(group)
            logits, info = self.document_logits(texts_g, prepared.long_doc, batch_size, return_evidence, titles_g)
            for i, result in zip(group, self.decode(prepared, group, logits, info, top_k, return_evidence)):
                results[i] = result
            bar.update(len(group))
        bar.close()
        return results[0] if prepared.single else results  # type: ignore[return-value]

    # ------------------------------------------------------------ the stages of predict()
    def prepare(self, texts: str | dict | Sequence[str | dict], long_doc: str | None = None) -> Prepared:
        """Stage 1: check the documents, normalise what the strategy reads, read titles by the title rule (a
        document without one gets the title its text opens with), and answer the empty ones without the model.

        Args:
            texts: as ``predict``.
            long_doc: a registered strategy's name instead of the model's.

        Example:
            >>> prepared = clf.prepare(["关于加强城市规划管理的通知\n各区人民政府……", ""])
            >>> prepared.titles[0], prepared.answered[1]["reason"]
            ('关于加强城市规划管理的通知', 'empty document')
        """
        docs, titles, single = _check_texts(texts)
        cfg = self.long_doc if long_doc is None else dataclasses.replace(self.long_doc, strategy=long_doc)
        get_strategy(cfg.strategy)  # a ValueError naming the registered strategies
        clean = [self.normalize_for(t, cfg) for t in docs]
        given = read_titles(titles, cfg)
        clean_titles = [normalize(t, self.normalize_config) if t else "" for t in given] if given else None
        clean_titles = read_titles(clean_titles, cfg, clean)  # a document without one: the title its text opens with
        # A document is read when its text or title holds more than punctuation: "。。，，！？" has no topic to give.
        todo = [i for i, t in enumerate(clean) if has_words(t) or (clean_titles and has_words(clean_titles[i]))]
        answered = {
            i: _empty_result(docs[i] + (given[i] if given else "")) for i in sorted(set(range(len(docs))) - set(todo))
        }
        # Longest first: batches fill with windows of similar length and the slowest work is seen early.
        todo.sort(key=lambda i: -len(clean[i]))
        return Prepared(
            docs, clean, clean_titles, [bool(given and given[i]) for i in range(len(docs))], cfg, single, answered, todo
        )

    def decode(
        self,
        prepared: Prepared,
        group: list[int],
        logits: np.ndarray,
        info: list[dict],
        top_k: int = 1,
        return_evidence: bool = False,
    ) -> list[dict]:
        """Stage 3: results of the documents ``group`` (positions in ``prepared``) from their pooled logits and
        window information (``document_logits``, stage 2): calibrated scores decoded top-down, the review flag,
        and a reason instead of a topic for a document the model cannot read.

        Example:
            >>> texts, titles = prepared.texts_of(group)
            >>> logits, info = clf.document_logits(texts, prepared.long_doc, 32, titles=titles)
            >>> clf.decode(prepared, group, logits, info)[0]["label_l1"]
            '城乡建设、环境保护'
        """
        probs = level_softmax(logits, self.temperature, self.labels).astype(np.float32)
        out = []
        for k, i in enumerate(group):
            raw = prepared.raw[i]
            if info[k]["tokens"] == 0:  # e.g. only zero-width or combining characters survived
                out.append(_empty_result(raw, "no readable characters (nothing the tokenizer can read)"))
                continue
            share = round(float(info[k]["unknown_share"]), 4)
            if share > UNREADABLE_SHARE:  # Korean, Arabic, emoji...: any topic would be a guess
                reason = (
                    f"the model cannot read this text: {share:.0%} of it is in characters its vocabulary does "
                    "not have (another script such as Korean or Arabic, emoji, or a file decoded with the "
                    "wrong encoding)"
                )
                out.append({**_empty_result(raw, reason), "unknown_share": share})
                continue
            if not np.isfinite(probs[k]).all():
                raise RuntimeError(
                    f"{self.source} gave scores that are not a number (NaN) for document {i}: its weights or "
                    "temperature are broken, or half precision overflowed. Load the folder again "
                    "(TopicClassifier checks them), use precision fp32, or train the model again."
                )
            title = prepared.titles[i] if prepared.titles else ""
            shown = (prepared.texts[i], title) if return_evidence else None
            result = {**self._result(probs[k], info[k], top_k, shown), "unknown_share": share}
            if title and not prepared.title_given[i]:
                result["guessed_title"] = title  # read from the text (govtopic.titles.guess_title)
            out.append(result)
        return out

    def _result(self, probs: np.ndarray, info: dict, top_k: int, text: tuple[str, str] | None) -> dict:
        full_idx, l1_names, l1_probs = hierarchical_decode(probs[None, :], self.labels)
        best = int(full_idx[0])
        label = self.labels[best]
        first = label.split(SEP, 1)[0]
        l1_score = float(l1_probs[0][l1_names.index(first)])
        out = {
            "label": label,
            "label_l1": first,
            "score": float(probs[best]),
            "score_l1": l1_score,
            "windows": info["windows"],
            "truncated": info["truncated"],
        }
        if top_k > 1:
            # The returned label first (it is chosen top-down, so it need not have the largest flat score),
            # then the other labels by score.
            rest = [j for j in np.argsort(-probs) if j != best]
            top = [best, *rest[: top_k - 1]]
            out["top_k"] = [{"label": self.labels[j], "score": float(probs[j])} for j in top]
            l1_top = np.argsort(-l1_probs[0])[:top_k]
            out["top_k_l1"] = [{"label": l1_names[j], "score": float(l1_probs[0][j])} for j in l1_top]
        if text is not None:
            out["evidence"] = _evidence(info["_rows"], best, text)
        if "known_ngrams" in info:
            out["known_ngrams"] = info["known_ngrams"]
        return review.flag(out, probs, self.labels, self.record.thresholds)  # needs_review (govtopic/review.py)


def _evidence(rows_info, label_index: int, text: tuple[str, str]) -> dict:
    """The window that most supports the predicted label: its character span in the normalised body, or the
    title (``"in": "title"``) when the title window supports it most."""
    _, block, spans, is_title = rows_info
    k = int(np.argmax(block[:, label_index]))
    body, title = text
    if is_title[k]:
        return {"in": "title", "start": 0, "end": len(title), "text": title, "window": k}
    text = body
    parts = [(a, b) for a, b in spans[k] if b > a]
    start, end = (parts[0][0], parts[-1][1]) if parts else (0, 0)
    passage = " … ".join(text[a:b] for a, b in parts)
    return {"in": "text", "start": start, "end": end, "text": passage, "window": k}


def has_words(text: str) -> bool:
    """Whether ``text`` holds anything but punctuation, spaces and control characters (symbols and emoji count:
    the model's unknown-character check answers those)."""
    return any(unicodedata.category(c)[0] not in "PZC" for c in text)


def _empty_result(raw: str, reason: str | None = None) -> dict:
    if reason is None:
        if not raw.strip():
            reason = "empty document"
        elif not has_words(raw):
            reason = "no words: only punctuation"
        else:
            reason = "no text left after normalisation (only boilerplate or markup)"
    return {
        "label": None,
        "label_l1": None,
        "score": None,
        "score_l1": None,
        "windows": 0,
        "truncated": False,
        "reason": reason,
    }


class _NoBar:
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


def _progress_bar(total: int, show: bool):
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="doc", desc="govtopic predict")


# ---------------------------------------------------------------- module-level API with a model cache
_CACHE: dict[tuple, TopicClassifier] = {}
_CACHE_LOCK = threading.Lock()


def get_classifier(
    model: str | os.PathLike | None = None, device: str | None = None, allow_pickle: bool = False
) -> TopicClassifier:
    """The cached classifier for ``model`` (default: $GOVTOPIC_MODEL), loaded on first use; a
    ``TopicClassifier`` is used as it is."""
    if isinstance(model, TopicClassifier):
        return model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a model folder, a Hub id or a TopicClassifier, got {type(model).__name__}")
    model = model or os.environ.get(ENV_MODEL)
    if not model:
        raise ValueError(
            "no model given: pass predict(texts, model=MODEL_DIR_OR_HUB_ID) or set the GOVTOPIC_MODEL "
            "environment variable. To get a model, train one: `govtopic train configs/quickstart.yaml` "
            "(its folder is printed at the end)."
        )
    key = (str(Path(model).resolve()) if Path(model).exists() else str(model), device, allow_pickle)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = TopicClassifier(model, device=device, allow_pickle=allow_pickle)
        return _CACHE[key]


def predict(
    texts: str | dict | Sequence[str | dict],
    model: str | os.PathLike | TopicClassifier | None = None,
    batch_size: int = 32,
    top_k: int = 1,
    long_doc: str | None = None,
    return_evidence: bool = False,
    device: str | None = None,
    progress: bool | None = None,
    allow_pickle: bool = False,
) -> dict | list[dict]:
    """Predict the 主题分类 topic of one document or many; the model is loaded once and cached.

    Args:
        texts: a str (the body), a ``{"title": ..., "text": ...}`` dict, or a list of either.
        model: model folder or Hub id (default: the GOVTOPIC_MODEL environment variable), or a loaded
            ``TopicClassifier``.
        batch_size, top_k, long_doc, return_evidence, progress: see ``TopicClassifier.predict``.
        device: ``cpu``, ``cuda`` ... (default: CUDA when available).
        allow_pickle: accept pickle weights (they can run code when loaded); off by default.

    Example:
        >>> predict({"title": "关于加快发展现代农业的意见", "text": ""}, model="runs/quickstart/model")
        {'label': '农业、林业、水利\\农业、畜牧业、渔业', 'label_l1': '农业、林业、水利', 'score': 0.48, ...}
    """
    if (
        isinstance(texts, Iterable)
        and not isinstance(texts, (str, dict, bytes, bytearray))
        and not hasattr(texts, "columns")
    ):
        texts = list(texts)  # a generator is read once, here
    docs, _, single = _check_texts(texts)
    if not docs:
        return []
    clf = get_classifier(model, device, allow_pickle=allow_pickle)
    return clf.predict(
        texts,
        batch_size=batch_size,
        top_k=top_k,
        long_doc=long_doc,
        return_evidence=return_evidence,
        progress=progress,
    )
