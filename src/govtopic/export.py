"""Exporting a model folder to ONNX, and checking the exported graph against the torch model it came from.

The ONNX folder holds ``model.onnx`` (inputs ``input_ids`` and ``attention_mask``, output ``logits``, batch
and sequence axes dynamic) next to the original config.json, tokenizer files and govtopic_config.yaml, so
the label map and the long-document settings travel with it. Needs the optional extra:
``pip install 'govtopic[onnx]'``.

``model.onnx`` is the transformer alone: per-window logits. ``govtopic predict`` also pools the windows and,
when the folder has one, adds the n-gram channel's scores (govtopic/ngram.py) at the record's weight; the
channel is not in the graph, so its files are copied beside it for consumers that add it themselves, and the
export's result says so (``ngram_channel``, ``note``).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from govtopic.fsutil import mark_folder, owns_folder, replace_dir
from govtopic.modeling import ModelLoadError
from govtopic.ngram import VOCAB_FILE as NGRAM_VOCAB_FILE
from govtopic.ngram import WEIGHTS_FILE as NGRAM_WEIGHTS_FILE
from govtopic.predict import TopicClassifier
from govtopic.record import BESIDE_WEIGHTS
from govtopic.titles import encode_documents
from govtopic.windows import Windows

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
# Copied next to model.onnx when present: the label map, the govtopic settings, the tokenizer and the n-gram
# channel (not in the graph; a consumer that adds it needs its files and the weights in config.json).
COPIED_FILES = BESIDE_WEIGHTS
# The exporter has no ONNX form of scaled_dot_product_attention before opset 14.
MIN_OPSET = 14
# Windows per batch in the agreement check; small, so the batches differ in padding.
CHECK_BATCH = 4
# Check documents of different lengths: a phrase, sentences, and a text long enough for several windows.
DEFAULT_CHECK_DOCS = [
    "城市规划",
    "关于进一步加强医疗机构药品采购管理的通知",
    "为加强饮用水水源地环境保护，防治水污染，保障公众身体健康，根据有关法律法规，结合本市实际，制定本办法。",
    "人民法院应当依法公开审判案件，保障当事人的诉讼权利。检察机关对诉讼活动实行法律监督。",
    "第一条 为了规范城乡规划管理，协调城乡空间布局，改善人居环境，促进城乡经济社会全面协调可持续发展，制定本条例。"
    * 12,
]


def export_onnx(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    opset: int = 17,
    check_docs: list[str] | None = None,
) -> dict:
    """Export the classifier in ``model_dir`` to ``output_dir/model.onnx`` and check it against torch.

    ``output_dir`` is written atomically (an older one is replaced only once the new one is complete). The
    check runs both transformers on the windows the predictor makes from ``check_docs`` (default: a few built-in
    Chinese texts), in the same padded batches. Returns ``path`` (of model.onnx), ``max_abs_logit_diff``,
    ``window_agreement`` (fraction of windows whose transformer logits have the same top class in both;
    ``label_agreement`` is the same figure under its old name), ``windows``, ``seconds``, ``ngram_channel``
    (the folder's channel weights and the copied files, or None when predict() uses no channel) and ``note``
    (what model.onnx holds and what it leaves out).

    It is not a check of document labels: model.onnx is the transformer alone, without the n-gram channel, so
    document labels from model.onnx alone differ from ``govtopic predict``'s when the folder has a channel.
    """
    started = time.time()
    onnx, ort = _require_onnx()
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    _check_arguments(model_dir, output_dir, opset)
    clf = TopicClassifier(model_dir, device="cpu")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.staging-"))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; a model folder is meant to be shared
        _export_graph(clf, staging / ONNX_NAME, opset)
        onnx.checker.check_model(str(staging / ONNX_NAME))
        for name in COPIED_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, staging / name)
        session = ort.InferenceSession(str(staging / ONNX_NAME), providers=["CPUExecutionProvider"])
        check = compare(clf, session, DEFAULT_CHECK_DOCS if check_docs is None else check_docs)
        mark_folder(staging, EXPORT_KIND)
        replace_dir(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    channel = _ngram_channel(clf, output_dir)
    result = {
        "path": str(output_dir / ONNX_NAME),
        **check,
        "label_agreement": check["window_agreement"],  # the old name of window_agreement
        "seconds": round(time.time() - started, 3),
        "ngram_channel": channel,
        "note": _note(channel),
    }
    if check["window_agreement"] < 1.0:
        logger.warning(
            "ONNX and torch transformers disagree on the top class of %.1f%% of windows: %s",
            100 * (1 - check["window_agreement"]),
            result,
        )
    logger.info(
        "exported %s; per-window transformer logits match torch on %d windows (same top class on %.1f%%, max "
        "|logit diff| %.2e)",
        result["path"],
        check["windows"],
        100 * check["window_agreement"],
        check["max_abs_logit_diff"],
    )
    # Plainly, and as a warning when the graph leaves out part of what predict() adds.
    logger.log(logging.INFO if channel is None else logging.WARNING, "%s", result["note"])
    return result


def _ngram_channel(clf: TopicClassifier, output_dir: Path) -> dict | None:
    """The n-gram channel predict() adds and model.onnx leaves out: its weights and the files copied; None when
    predict() adds none."""
    weight, full_weight = clf.record.ngram_weight, clf.record.ngram_full_weight
    if clf.ngram is None or max(weight, full_weight) <= 0:
        return None
    files = [str(output_dir / name) for name in (NGRAM_WEIGHTS_FILE, NGRAM_VOCAB_FILE) if (output_dir / name).is_file()]
    return {"weight": weight, "full_weight": full_weight, "files": files}


def _note(channel: dict | None) -> str:
    if channel is None:
        return (
            f"{ONNX_NAME} holds the transformer only (per-window logits); this model uses no n-gram channel, so "
            "pooling the windows as govtopic_config.yaml says gives govtopic predict's labels."
        )
    return (
        f"{ONNX_NAME} holds the transformer only: the model folder's n-gram channel (ngram_weight "
        f"{channel['weight']:g}, ngram_full_weight {channel['full_weight']:g}) is not in it, so document labels "
        f"from {ONNX_NAME} alone will differ from govtopic predict. The channel's files are copied beside it "
        f"({NGRAM_WEIGHTS_FILE}, {NGRAM_VOCAB_FILE}) for consumers that add its scores as govtopic/ngram.py does."
    )


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs the onnx and onnxruntime packages ({err}); install them with "
            "pip install 'govtopic[onnx]'"
        ) from err
    return onnx, onnxruntime


def _check_arguments(model_dir: Path, output_dir: Path, opset: int) -> None:
    if not model_dir.is_dir():
        raise ModelLoadError(
            f"model folder {model_dir} does not exist; pass the folder that holds config.json and "
            "model.safetensors (the one `govtopic train` printed at the end)"
        )
    out, src = output_dir.resolve(), model_dir.resolve()
    if out == src or out in src.parents:
        raise ValueError(
            f"output_dir {output_dir} holds the model folder {model_dir} and would replace it; export to "
            f"another folder, e.g. {model_dir}-onnx"
        )
    if src in out.parents:
        # The model folder is what push uploads and what predict reads: an export inside it does not belong there.
        raise ValueError(
            f"output_dir {output_dir} is inside the model folder {model_dir}; export to a folder beside it, e.g. "
            f"--output {str(model_dir).rstrip('/')}-onnx"
        )
    if output_dir.exists() and not _earlier_export(output_dir):
        # output_dir is replaced as a whole: never a folder that is not an earlier export.
        raise ValueError(
            f"output_dir {output_dir} exists and is not an earlier export (no {ONNX_NAME} with its govtopic "
            "config.json); pass a new folder or remove this one"
        )
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be at least {MIN_OPSET} (attention has no ONNX form before it), got {opset}")
    _check_links(model_dir)


def _earlier_export(path: Path) -> bool:
    """An export govtopic wrote: its marker, or (written before exports were marked) model.onnx beside a
    config.json that holds a govtopic record."""
    if owns_folder(path, EXPORT_KIND):
        return True
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (path / ONNX_NAME).is_file() and isinstance(config, dict) and "govtopic" in config


EXPORT_KIND = "onnx export"


def _check_links(model_dir: Path) -> None:
    """Refuse a copied file that is a link out of the model folder: the export is meant to be shared."""
    inside = model_dir.resolve()
    for name in COPIED_FILES:
        path = model_dir / name
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise ValueError(
                f"{path} is a symbolic link to {os.readlink(path)}, outside the model folder; the export copies "
                "only files inside the folder, as it is meant to be shared. If the file belongs to the model, "
                f"replace the link with a copy (cp --remove-destination {path.resolve()} {path})"
            )


class _LogitsOnly(torch.nn.Module):
    """The classifier as a plain function of (input_ids, attention_mask) -> logits, as the predictor calls it.

    token_type_ids is left out on purpose: the predictor never passes it, so BERT uses its all-zero default.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _export_graph(clf: TopicClassifier, path: Path, opset: int) -> None:
    # Trace with a padded batch of two, so the graph keeps the attention mask (an all-ones mask can be dropped).
    windows = clf.encode(["国务院办公厅关于加强城市规划管理的通知", "通知"], clf.long_doc)
    ids, mask = pad_batch(windows, np.arange(len(windows)), clf.tokenizer.pad_token_id or 0)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    kwargs = {}
    # The TorchScript exporter needs only onnx; the torch.export one (default from torch 2.9) also needs
    # onnxscript, which the [onnx] extra does not install, and is ~20x slower on BERT for the same graph.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with warnings.catch_warnings(), torch.no_grad():
        # Known and harmless here: the deprecation notices of the TorchScript exporter, transformers' shape
        # checks that trace as constants (they hold for any input whose mask matches input_ids), and the
        # note on negative gather indices (the mask is built from aranges). compare() checks the numbers.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(
            # In eval mode: the exporter restores the wrapper's mode afterwards, and a new Module is in
            # train mode, which would switch the shared model's dropout on.
            _LogitsOnly(clf.model).eval(),
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            **kwargs,
        )


def pad_batch(windows: Windows, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of the given windows, int64, padded to the longest of them."""
    longest = max(len(windows.input_ids[i]) for i in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for row, i in enumerate(rows):
        seq = windows.input_ids[i]
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


@torch.inference_mode()
def compare(clf: TopicClassifier, session, docs: list[str], batch_size: int = CHECK_BATCH) -> dict:
    """Largest logit difference of torch and ONNX transformers on the predictor's windows, and the share of
    windows whose logits have the same top class (``window_agreement``; per window, not document labels)."""
    prepared = clf.prepare(list(docs))  # stage 1 of predict(): the same text, titles and windows
    if not prepared.todo:
        raise ValueError("check_docs has no text left after normalisation; pass a few real documents")
    texts, titles = prepared.texts_of(prepared.todo)
    windows, _ = encode_documents(clf.tokenizer, texts, titles, prepared.long_doc)
    # As the predictor batches: longest first, each batch padded only to its own longest window.
    order = np.argsort([-len(ids) for ids in windows.input_ids], kind="stable")
    pad = clf.tokenizer.pad_token_id or 0
    worst, same = 0.0, 0
    for b in range(0, len(order), batch_size):
        ids, mask = pad_batch(windows, order[b : b + batch_size], pad)
        ref = clf.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.float().numpy()
        (got,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        worst = max(worst, float(np.abs(got - ref).max()))
        same += int((got.argmax(axis=1) == ref.argmax(axis=1)).sum())
    return {"max_abs_logit_diff": worst, "window_agreement": same / len(windows), "windows": len(windows)}
