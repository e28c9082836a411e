"""A lean forward pass for BERT classifiers: the same logits as ``transformers`` with less work.

The classifier reads one vector per window: the [CLS] row of the last layer. So the last layer is computed
for that row alone (its keys and values still come from every token). When the last layer is govtopic's
mean-pooling layer (govtopic/pooling.py: zero queries, so attention is uniform over the real tokens), its
[CLS] attention output is the mean of the previous layer's states times the value weights, and the layer
costs almost nothing. On the quickstart model (2 layers plus the pooling layer) this skips a third of the
arithmetic. The other layers are the usual ones, written with plain torch calls on the model's own weights
(no copies, so a changed weight is seen at once); a batch whose windows all have the same length runs
attention without a mask.

``LeanForward.build`` returns None for any model it does not know how to run (another architecture, a
quantised model, relative positions, another activation), and ``check`` compares it with the model itself
before it is used, so a mismatch falls back to ``transformers`` instead of giving other numbers.
"""

from __future__ import annotations

import logging
import threading
import weakref
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from govtopic.pooling import has_pooling_layer

logger = logging.getLogger(__name__)

# Largest |logit| difference to the model's own forward accepted by ``check`` (fp32 reordering gives ~1e-6).
CHECK_TOLERANCE = 1e-4
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass
class _Layer:
    query: torch.nn.Linear
    key: torch.nn.Linear
    value: torch.nn.Linear
    out: torch.nn.Linear
    norm1: torch.nn.LayerNorm
    up: torch.nn.Linear
    down: torch.nn.Linear
    norm2: torch.nn.LayerNorm


class LeanForward:
    """Logits of a ``BertForSequenceClassification`` from padded windows, computing only what they need.

    Example:
        >>> lean = LeanForward.build(model)            # None when the model is not a plain BERT classifier
        >>> logits = lean(input_ids, lengths)          # (batch, labels), like model(...).logits
    """

    def __init__(self, model, heads: int, act, uniform_last: bool):
        bert = model.bert
        self.model = model
        self.heads = heads
        self.act = act
        # The last layer's queries are exactly zero: attention is a plain mean over the real tokens.
        self.uniform_last = uniform_last
        emb = bert.embeddings
        self.word, self.position, self.token_type, self.emb_norm = (
            emb.word_embeddings,
            emb.position_embeddings,
            emb.token_type_embeddings,
            emb.LayerNorm,
        )
        self.layers = [
            _Layer(
                layer.attention.self.query,
                layer.attention.self.key,
                layer.attention.self.value,
                layer.attention.output.dense,
                layer.attention.output.LayerNorm,
                layer.intermediate.dense,
                layer.output.dense,
                layer.output.LayerNorm,
            )
            for layer in bert.encoder.layer
        ]
        self.pooler, self.classifier = bert.pooler.dense, model.classifier

    @classmethod
    def build(cls, model) -> LeanForward | None:
        """A LeanForward for ``model``, or None when it is not a plain BERT classifier in eval mode.

        Args:
            model: a loaded ``BertForSequenceClassification``.

        Example:
            >>> LeanForward.build(AutoModelForSequenceClassification.from_pretrained(folder)) is not None
            True
        """
        config = getattr(model, "config", None)
        if type(model).__name__ != "BertForSequenceClassification" or config is None or model.training:
            return None
        if getattr(config, "position_embedding_type", "absolute") != "absolute" or config.is_decoder:
            return None
        act = _ACTIVATIONS.get(config.hidden_act) if isinstance(config.hidden_act, str) else None
        bert = getattr(model, "bert", None)
        if act is None or bert is None or bert.pooler is None or not len(bert.encoder.layer):
            return None
        # Dynamic int8 quantisation, adapters or other wrappers replace nn.Linear: leave those to the model.
        if any(type(m) is not torch.nn.Linear for m in model.modules() if "Linear" in type(m).__name__):
            return None
        attn = bert.encoder.layer[-1].attention.self
        uniform = has_pooling_layer(model) and not attn.query.weight.any() and not attn.query.bias.any()
        return cls(model, config.num_attention_heads, act, bool(uniform))

    def check(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> float:
        """Largest |logit| difference between this forward and the model's own on these windows."""
        mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        with torch.inference_mode():
            ours = self(input_ids, lengths)
            theirs = self.model(input_ids=input_ids, attention_mask=mask.to(input_ids.device)).logits
        return float((ours.float() - theirs.float()).abs().max())

    def __call__(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (batch, labels) of windows ``input_ids`` (batch, longest), window b real up to lengths[b]."""
        batch, seq = input_ids.shape
        positions = torch.arange(seq, device=input_ids.device)
        x = self.word(input_ids) + self.position.weight[:seq] + self.token_type.weight[0]
        x = self.emb_norm(x)
        keep = positions[None, :] < lengths.to(input_ids.device)[:, None]  # (batch, seq) real tokens
        # Sorted batches are often all full windows: no mask lets attention take its fastest path.
        mask = None if bool(keep.all()) else keep[:, None, None, :]
        for layer in self.layers[:-1]:
            x = self._layer(layer, x, mask)
        return self._head(self._last(self.layers[-1], x, keep, mask))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = t.shape
        return t.view(batch, seq, self.heads, hidden // self.heads).transpose(1, 2)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        batch, heads, seq, size = t.shape
        return t.transpose(1, 2).reshape(batch, seq, heads * size)

    def _feed_forward(self, layer: _Layer, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        x = layer.norm1(layer.out(attended) + x)
        return layer.norm2(layer.down(self.act(layer.up(x))) + x)

    def _layer(self, layer: _Layer, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = (self._split(lin(x)) for lin in (layer.query, layer.key, layer.value))
        attended = self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        return self._feed_forward(layer, x, attended)

    def _last(self, layer: _Layer, x: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The last layer's [CLS] row only, (batch, hidden)."""
        first = x[:, :1]
        if self.uniform_last:
            # Equal scores: the attention output is the mean of the values over the real tokens, and the values
            # are linear, so the mean is taken first.
            weights = keep.to(x.dtype)
            mean = (weights[:, :, None] * x).sum(1, keepdim=True) / weights.sum(1)[:, None, None]
            attended = layer.value(mean)
        else:
            q = self._split(layer.query(first))
            k, v = self._split(layer.key(x)), self._split(layer.value(x))
            attended = self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        return self._feed_forward(layer, first, attended)[:, 0]

    def _head(self, cls_state: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.pooler(cls_state)))


_LEAN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LEAN_LOCK = threading.Lock()


def lean_forward(model) -> LeanForward | None:
    """The checked LeanForward of ``model`` (built and compared once per model), or None to use the model.

    Args:
        model: a loaded classifier in eval mode.

    Example:
        >>> lean = lean_forward(clf.model)
        >>> logits = lean(ids, lengths) if lean else clf.model(input_ids=ids, attention_mask=mask).logits
    """
    with _LEAN_LOCK:
        if model in _LEAN:
            return _LEAN[model]
        lean = LeanForward.build(model)
        if lean is not None:
            device = next(model.parameters()).device
            generator = torch.Generator().manual_seed(0)
            vocab = model.config.vocab_size
            ids = torch.randint(1000, min(vocab, 8000), (4, 37), generator=generator).to(device)
            lengths = torch.tensor([37, 30, 5, 2], device=device)
            ids[:, 0] = 101 if vocab > 101 else 0
            diff = lean.check(ids, lengths)
            if not diff <= CHECK_TOLERANCE:
                logger.warning("lean forward differs from the model by %.2e; using the model's own forward", diff)
                lean = None
        _LEAN[model] = lean
        return lean


@torch.inference_mode()
def batched_logits(
    model, input_ids: list, n_labels: int, batch_size: int, pad: int, dtype=None, lean: LeanForward | None = None
) -> np.ndarray:
    """Logits of every window (rows in window order): windows whose token ids repeat an earlier one are computed
    once, the rest batched longest first and padded per batch only to its own longest window.

    Args:
        model: the sequence classifier (its device is used).
        input_ids: each window's token ids, [CLS] and [SEP] included.
        n_labels: outputs of the classifier.
        batch_size: windows per forward pass.
        pad: the padding token id.
        dtype: autocast dtype (``govtopic.modeling.autocast_dtype``), None for full precision.
        lean: the lean forward to use (``lean_forward(model)``), None for the model's own.

    Example:
        >>> batched_logits(model, windows.input_ids, 22, 32, tokenizer.pad_token_id).shape
        (len(windows), 22)
    """
    device = next(model.parameters()).device
    first: dict[tuple[int, ...], int] = {}
    source = np.array([first.setdefault(tuple(ids), i) for i, ids in enumerate(input_ids)], dtype=np.int64)
    unique = np.flatnonzero(source == np.arange(len(source)))
    lengths = np.array([len(input_ids[i]) for i in unique], dtype=np.int64)
    order = unique[np.argsort(-lengths, kind="stable")]
    out = np.zeros((len(input_ids), n_labels), dtype=np.float32)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        sizes = np.array([len(input_ids[i]) for i in idx])
        ids = np.full((len(idx), sizes.max()), pad, dtype=np.int64)
        for row, i in enumerate(idx):
            ids[row, : sizes[row]] = input_ids[i]
        ids_t = torch.from_numpy(ids).to(device)
        with autocast:
            if lean is not None:
                logits = lean(ids_t, torch.from_numpy(sizes).to(device))
            else:
                mask = torch.from_numpy((np.arange(ids.shape[1])[None, :] < sizes[:, None]).astype(np.int64))
                logits = model(input_ids=ids_t, attention_mask=mask.to(device)).logits
        out[idx] = logits.float().cpu().numpy()
    return out[source]
