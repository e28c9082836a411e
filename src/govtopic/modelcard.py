"""The model card: a Hugging Face README.md written beside a model from its evaluation on the test split.

The card is huggingface_hub's ``ModelCard`` rendered from govtopic's template (templates/model_card.md.j2); its
metadata is a ``ModelCardData`` whose model-index holds the test figures, so the Hub shows them on the model's
page. The body gives the headline figures beside the baseline's, how the model was trained, where its data came
from (sha256, git commit) and its known limitations.

``render_model_card(metrics, baseline_metrics, meta)``: ``metrics`` is ``compute_metrics`` on the test split,
``baseline_metrics`` the baseline's figures on the same split (or None), ``meta`` the run's facts (model_dir,
data_file, train_docs, ..., calibration, data_sha256, git_commit); it returns the card's text.
``card_data(metrics, meta, name)`` gives its metadata alone.

Example:
    >>> card = render_model_card(metrics, None, {"model_dir": "runs/quickstart/model"})
    >>> card.startswith("---")
    True
"""

from __future__ import annotations

from pathlib import Path

from govtopic.report import _HEADLINE, _fmt, _get, _md_cell

_CARD_METRICS = [
    ("accuracy", "l1_accuracy", "Accuracy (first level)", None),
    ("f1", "l1_macro_f1", "Macro-F1 (first level)", "macro"),
    ("accuracy", "accuracy", "Accuracy (full label)", None),
    ("f1", "macro_f1", "Macro-F1 (full label)", "macro"),
]

_LIMITATIONS = [
    "Training labels are distant labels: the official taxonomy applied to each document's title by keyword "
    "rules (first match wins). They are right most of the time and wrong some of the time (e.g. 农业承包合同条例 "
    "lands in 工商 through 合同), and the test figures are measured against the same kind of labels.",
    "Genre shift: the model learnt from laws and regulations. Government office notices (通知, 意见, 批复) read "
    "differently; on official Hebei labels a TF-IDF model trained the same way scores only 0.165 first-level "
    "accuracy. Expect lower accuracy on office documents than the figures above.",
    "The class 其他 (other) barely occurs in the training labels, so the model rarely predicts it, although "
    "portals use it often.",
    "Scores are calibrated by one temperature fitted on the validation split; treat them as rough confidences.",
]


def _model_name(meta: dict) -> str:
    if meta.get("model_name"):
        return str(meta["model_name"])
    folder = Path(str(meta.get("model_dir") or "govtopic-model"))
    # Training writes "<run>/model" (via "<run>/model.partial"): the run folder names the model.
    return folder.parent.name if folder.name.startswith("model") and folder.parent.name else folder.name


def card_data(metrics: dict, meta: dict, name: str):
    """The card's metadata (huggingface_hub ModelCardData), with the test figures as its model-index."""
    from huggingface_hub import EvalResult, ModelCardData

    data_file = meta.get("data_file") or meta.get("train_file") or "govtopic data"
    dataset = {
        "dataset_name": str(meta.get("dataset_name") or Path(str(data_file)).name),
        "dataset_type": str(meta.get("dataset_type") or Path(str(data_file)).name.split(".")[0]),
        "dataset_split": str(meta.get("split") or "test"),
    }
    results = [
        EvalResult(
            task_type="text-classification",
            task_name="Topic classification (主题分类)",
            metric_type=kind,
            metric_value=round(float(metrics[key]), 4),
            metric_name=label,
            metric_args={"average": average} if average else None,
            **dataset,
        )
        for kind, key, label, average in _CARD_METRICS
        if metrics.get(key) is not None
    ]
    return ModelCardData(
        language=["zh"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["text-classification", "topic-classification", "chinese", "government-documents", "govtopic"],
        base_model=str(meta["base_model"]) if meta.get("base_model") else None,
        model_name=name,
        eval_results=results or None,
    )


def render_model_card(metrics: dict, baseline_metrics: dict | None, meta: dict) -> str:
    """A Hugging Face model card (README.md): huggingface_hub's ModelCard from govtopic's template
    (templates/model_card.md.j2), its metadata a ModelCardData whose model-index holds the test figures.

    Args:
        metrics: ``compute_metrics`` on the test split.
        baseline_metrics: the baseline's figures on the same split, or None.
        meta: the run's facts (model_dir, data_file, train_docs, ..., calibration, data_sha256, git_commit).

    Example:
        >>> card = render_model_card(metrics, None, {"model_dir": "runs/quickstart/model"})
        >>> card.startswith("---")
        True
    """
    from huggingface_hub import ModelCard

    name = _model_name(meta)
    training = [
        (k.replace("_", " "), _md_cell(_fmt(meta[k])))
        for k in ("data_file", "train_docs", "validation_docs", "test_docs", "classes", "train_seconds", "selected")
        if meta.get(k) is not None
    ]
    provenance = [("govtopic version", meta["version"])] if meta.get("version") else []
    provenance += [(f"sha256 of {k}", f"`{v}`") for k, v in (meta.get("data_sha256") or {}).items()]
    if meta.get("git_commit"):
        provenance.append(("git commit", f"`{meta['git_commit']}`"))
    template = Path(__file__).parent / "templates" / "model_card.md.j2"
    card = ModelCard.from_template(
        card_data(metrics, meta, name),
        template_path=str(template),
        name=name,
        long_doc=meta.get("long_doc", "chunks"),
        training=training or [("data", "not recorded")],
        n=metrics.get("n"),
        baseline_name=(baseline_metrics.get("name") or "a TF-IDF + linear model") if baseline_metrics else None,
        temperature=_get(meta, ("calibration", "temperature")),
        results=[(n, _fmt(_get(metrics, p)), _fmt(_get(baseline_metrics, p))) for n, p in _HEADLINE[:6]],
        provenance=provenance,
        limitations=_LIMITATIONS,
    )
    return str(card)
