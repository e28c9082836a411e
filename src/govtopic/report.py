"""Evaluation reports: metrics.json, report.md and a self-contained report.html.

The Markdown and HTML reports are rendered from one list of blocks (headings, paragraphs, tables, lists,
images), so both always say the same thing. The HTML inlines the PNGs so it can be mailed as one file.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

from govtopic.fsutil import atomic_write_text

# (row name, path into a metrics dict) for the headline table; top-k rows are added from the data.
_HEADLINE = [
    ("first level: accuracy", ("l1_accuracy",)),
    ("first level: macro-F1", ("l1_macro_f1",)),
    ("first level: weighted-F1", ("l1", "weighted_f1")),
    ("full label: accuracy", ("accuracy",)),
    ("full label: macro-F1", ("macro_f1",)),
    ("full label: weighted-F1", ("weighted_f1",)),
    ("level disagreement", ("level_disagreement",)),
    ("ECE (full label)", ("ece",)),
]
_PLOT_TITLES = {
    "confusion_l1": "Confusion matrix (first level)",
    "f1_l1": "Per-class F1 (first level)",
    "reliability": "Reliability diagram",
    "risk_coverage": "Risk–coverage (accuracy against the share of documents accepted)",
}


# ------------------------------------------------------------------ small helpers
def _get(d: dict | None, path: tuple[str, ...]):
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _delta(a, b) -> str:
    return "n/a" if a is None or b is None else f"{b - a:+.3f}"


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)  # Paths, dates and the like


def _headline_rows(metrics: dict, baseline: dict | None) -> list[list[str]]:
    rows = list(_HEADLINE)
    for level, prefix in (("l1", "first level"), (None, "full label")):
        top = _get(metrics, (level, "top_k_accuracy") if level else ("top_k_accuracy",)) or {}
        rows += [
            (f"{prefix}: top-{k} accuracy", (level, "top_k_accuracy", k) if level else ("top_k_accuracy", k))
            for k in top
        ]
    out = []
    for name, path in rows:
        a, b = _get(metrics, path), _get(baseline, path)
        out.append([name, _fmt(a), _fmt(b) if baseline else "—", _delta(b, a) if baseline else "—"])
    return out


def _per_class_rows(per_class: dict | None, baseline_per_class: dict | None) -> list[list[str]]:
    items = sorted((per_class or {}).items(), key=lambda kv: (-kv[1]["support"], kv[0]))
    base = baseline_per_class or {}
    return [
        [
            name,
            str(v["support"]),
            _fmt(v["precision"]),
            _fmt(v["recall"]),
            _fmt(v["f1"]),
            _fmt(base[name]["f1"]) if name in base else "—",
        ]
        for name, v in items
    ]


def _confusion_items(confusions: list[dict]) -> list[str]:
    items = []
    for c in confusions:
        lines = [
            f"{c['gold']} → {c['predicted']}: {c['count']} document(s), {100 * c.get('share', 0):.0f}% of {c['gold']}"
        ]
        for ex in c.get("examples", []):
            alts = ", ".join(f"{a['label']} {a['score']:.2f}" for a in ex.get("alternatives", []))
            lines.append(f"《{ex['title']}》 (gold score {ex.get('gold_score', 0):.2f}; model: {alts})")
        items.append(lines)
    return items


# ------------------------------------------------------------------ report content
def _table(head: list[str], rows: list[list[str]], with_baseline: bool) -> tuple:
    """A table block; without a baseline its baseline columns (always the last ones) are dropped."""
    keep = len(head) if with_baseline else next(i for i, h in enumerate(head) if "baseline" in h)
    return ("table", head[:keep], [row[:keep] for row in rows])


def _blocks(
    metrics: dict, baseline: dict | None, plots: dict, confusions: list[dict], calibration: dict | None, meta: dict
) -> list[tuple]:
    """The report as a list of blocks: ("h", level, text), ("p", text), ("table", head, rows), ("ul", items),
    ("img", title, path)."""
    against = (
        f"Model against the baseline ({baseline.get('name', 'TF-IDF + linear model')}) trained on the same "
        f"training split, both scored on the same {metrics['n']} documents."
        if baseline
        else f"Scored on {metrics['n']} documents (no baseline was run)."
    )
    blocks: list[tuple] = [
        ("h", 1, "govtopic evaluation report"),
        ("table", ["run", "value"], [[str(k), str(v)] for k, v in meta.items() if not isinstance(v, dict)]),
    ]
    blocks += [
        ("h", 2, "Headline figures"),
        (
            "p",
            against + " Predictions are decoded top-down: the first level with the largest summed "
            "probability, then its most probable second-level class. Top-k ranks the full-label "
            "probabilities directly, so full-label top-1 can differ slightly from accuracy.",
        ),
        _table(
            ["metric", "model", "baseline", "model − baseline"], _headline_rows(metrics, baseline), baseline is not None
        ),
    ]
    blocks += _source_blocks(metrics, baseline)
    if metrics.get("notes"):
        blocks.append(("ul", [[n] for n in metrics["notes"]]))
    blocks.append(
        (
            "p",
            f"Level disagreement {_fmt(metrics.get('level_disagreement'))}: the share of documents "
            "whose most probable first level (children's probabilities summed) is not the first level "
            "of the single most probable full label.",
        )
    )
    blocks += _channel_blocks(meta.get("ngram_channel"))
    blocks += _calibration_blocks(metrics, calibration, plots) + _risk_coverage_blocks(metrics, baseline, plots)
    blocks += _threshold_blocks(metrics.get("thresholds"))
    return blocks + _class_blocks(metrics, baseline, plots, confusions)


def _channel_blocks(channel: dict | None) -> list[tuple]:
    """The n-gram channel's weights as chosen on the validation split, and what they were worth there."""
    if not channel:
        return []
    weight, full_weight = channel.get("weight"), channel.get("full_weight", 0.0)
    tried = channel.get("validation_accuracy_by_weights") or {}
    rows = [["weight of the first-level block", _fmt(weight)], ["weight of the full-label block", _fmt(full_weight)]]
    chosen, alone = tried.get(f"{weight:g}/{full_weight:g}"), tried.get("0/0")
    for name, figures in (("with the channel", chosen), ("transformer alone", alone)):
        if figures:
            rows.append(
                [
                    f"validation first-level / full-label accuracy (macro-F1), {name}",
                    f"{figures[0]:.3f} / {figures[1]:.3f}"
                    + (f" ({figures[2]:.3f} / {figures[3]:.3f})" if len(figures) >= 4 else ""),
                ]
            )
    return [
        ("h", 2, "N-gram channel"),
        (
            "p",
            "Character n-gram scores mixed with the transformer's: a first-level block that moves the choice of the "
            "first level, and a full-label block that moves only the choice within a level; each weight chosen on "
            "the validation split (accuracy plus macro-F1 at its level).",
        ),
        ("table", ["n-gram channel", "value"], rows),
    ]


def _risk_coverage_blocks(metrics: dict, baseline: dict | None, plots: dict) -> list[tuple]:
    """Coverage reachable at 90/95/99% precision when the least confident documents go to a person."""
    rc = metrics.get("risk_coverage")
    if not rc:
        return []
    base = (baseline or {}).get("risk_coverage") or {}
    rows = []
    for level, name in (("l1", "first level"), ("full", "full label")):
        for p, value in ((rc.get(level) or {}).get("coverage_at_precision") or {}).items():
            b = _get(base, (level, "coverage_at_precision", p))
            rows.append([name, f"{float(p):.0%}", _fmt(value), _fmt(b) if baseline else "—"])
    blocks: list[tuple] = [
        ("h", 2, "Risk–coverage"),
        (
            "p",
            "Documents sorted by the score of their label, most confident first: the share that can be accepted "
            "without a person while the accepted ones keep each precision (global cut on the score; "
            "`govtopic calibrate-thresholds` fits one per class on the validation split).",
        ),
        _table(["level", "precision", "coverage (model)", "coverage (baseline)"], rows, baseline is not None),
    ]
    if "risk_coverage" in plots:
        blocks.append(("img", _PLOT_TITLES["risk_coverage"], plots["risk_coverage"]))
    return blocks


def _threshold_blocks(th: dict | None) -> list[tuple]:
    """What the model's stored thresholds do on these documents: coverage and precision per level."""
    if not th:
        return []
    rows = []
    parts = [("", {level: th[level]["overall"] for level in ("l1", "full")})]
    parts += [(f"{source}: ", levels) for source, levels in (th.get("per_source") or {}).items()]
    for prefix, levels in parts:  # all documents, then each source's (per_source: several sources)
        for level, name in (("l1", "first level"), ("full", "full label")):
            o = levels[level]
            if o["documents"]:
                cells = [str(o["documents"]), str(o["automatic"]), _fmt(o["coverage"]), _fmt(o["precision"])]
                rows.append([prefix + name, *cells])
    target = th.get("precision_target")
    unlike = th.get("unlike_training") or 0
    return [
        ("h", 2, "The model's thresholds on these documents"),
        (
            "p",
            f"The per-class thresholds stored in the model (fitted for precision {_fmt(target, 2)} on labelled "
            f"documents, `govtopic calibrate-thresholds`), applied here as `predict()` applies them: the documents "
            "tagged without a person (coverage) and the share of those that are right (precision). At the first "
            "level a document counts when its first level passed; at the full label, among documents with a "
            "full gold label, when both levels passed."
            + (" Then the same for each source's documents." if th.get("per_source") else "")
            + (f" {unlike} document(s) went to a person as unlike training." if unlike else ""),
        ),
        ("table", ["level", "documents", "tagged without a person", "coverage", "precision"], rows),
    ]


def _source_blocks(metrics: dict, baseline: dict | None) -> list[tuple]:
    """Every headline figure per training source (when the split has several)."""
    sources = metrics.get("per_source") or {}
    if not sources:
        return []
    base = (baseline or {}).get("per_source") or {}
    head = ["source", "documents", "l1 accuracy", "baseline", "l1 macro-F1", "baseline", "full accuracy", "baseline"]
    rows = []
    for name, m in sources.items():
        b = base.get(name, {})
        rows.append(
            [
                name,
                str(m["n"]),
                _fmt(m["l1_accuracy"]),
                _fmt(b.get("l1_accuracy")),
                _fmt(m["l1_macro_f1"]),
                _fmt(b.get("l1_macro_f1")),
                _fmt(m["accuracy"]) + (f" (of {m['n_full']})" if m.get("n_full") not in (None, m["n"]) else ""),
                _fmt(b.get("accuracy")),
            ]
        )
    return [
        ("h", 2, "Per source"),
        (
            "p",
            "The same figures for each training source's rows of this split (full accuracy over the rows "
            "that have a full label).",
        ),
        ("table", head, rows),
    ]


def _class_blocks(metrics: dict, baseline: dict | None, plots: dict, confusions: list[dict]) -> list[tuple]:
    head = ["class", "support", "precision", "recall", "F1", "baseline F1"]
    blocks: list[tuple] = [
        ("h", 2, "Per-class figures, first level"),
        _table(
            head, _per_class_rows(metrics["l1"]["per_class"], _get(baseline, ("l1", "per_class"))), baseline is not None
        ),
    ]
    blocks += [("img", _PLOT_TITLES[k], plots[k]) for k in ("f1_l1", "confusion_l1") if k in plots]
    blocks += [
        ("h", 2, "Most frequent confusions"),
        (
            "p",
            "Gold → predicted, with the most confidently wrong example titles and the model's top "
            "alternatives (probabilities).",
        ),
    ]
    blocks.append(("ul", _confusion_items(confusions)) if confusions else ("p", "No confusions."))
    if metrics.get("per_class"):
        blocks += [
            ("h", 2, "Per-class figures, full label"),
            _table(head, _per_class_rows(metrics["per_class"], _get(baseline, ("per_class",))), baseline is not None),
        ]
    extra = [k for k in plots if k not in _PLOT_TITLES]
    if extra:
        blocks += [("h", 2, "More plots")] + [("img", k, plots[k]) for k in extra]
    return blocks


def _calibration_blocks(metrics: dict, calibration: dict | None, plots: dict) -> list[tuple]:
    blocks: list[tuple] = [("h", 2, "Calibration")]
    if calibration:
        rows = [
            ["temperature", _fmt(calibration.get("temperature"))],
            ["ECE before temperature scaling", _fmt(calibration.get("ece_before"))],
            ["ECE after temperature scaling", _fmt(calibration.get("ece_after"))],
        ]
        rows += [
            [k.replace("_", " "), _fmt(v)]
            for k, v in calibration.items()
            if k not in ("temperature", "ece_before", "ece_after")
        ]
        blocks.append(("table", ["calibration", "value"], rows))
    else:
        blocks.append(
            ("p", f"No temperature was fitted; ECE of the probabilities as given: {_fmt(metrics.get('ece'))}.")
        )
    if "reliability" in plots:
        blocks.append(("img", _PLOT_TITLES["reliability"], plots["reliability"]))
    return blocks


# ------------------------------------------------------------------ renderers
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(blocks: list[tuple], base_dir: Path) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            head, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "ul":
            out.append("\n".join("- " + item[0] + "".join(f"\n  - {sub}" for sub in item[1:]) for item in block[1]))
        elif kind == "img":
            rel = os.path.relpath(Path(block[2]).resolve(), base_dir.resolve())
            out.append(f"![{block[1]}]({Path(rel).as_posix()})")
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:'Noto Sans CJK SC','Microsoft YaHei','PingFang SC',sans-serif;max-width:1100px;"
    "margin:2em auto;padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%;border:1px solid #eee}li{margin:.3em 0}"
)


def _templates():
    """The jinja2 environment of govtopic's templates (package data in govtopic/templates/)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("govtopic", "templates"),
        autoescape=select_autoescape(["html", "html.j2"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def _to_html(blocks: list[tuple]) -> str:
    """The report as one self-contained HTML page (templates/report.html.j2; PNGs inlined as base64)."""
    items = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            items.append({"kind": kind, "level": block[1], "text": block[2]})
        elif kind == "p":
            items.append({"kind": kind, "text": block[1]})
        elif kind == "table":
            items.append({"kind": kind, "head": block[1], "rows": [[str(c) for c in row] for row in block[2]]})
        elif kind == "ul":
            items.append({"kind": kind, "entries": block[1]})
        elif kind == "img":
            data = base64.b64encode(Path(block[2]).read_bytes()).decode("ascii")
            items.append({"kind": kind, "title": block[1], "data": data})
    page = _templates().get_template("report.html.j2")
    return page.render(title="govtopic evaluation report", css=_CSS, blocks=items).rstrip("\n") + "\n"


def _training_blocks(training: dict | None) -> list[tuple]:
    """How the model was chosen: the learning curves as a plot and a table, one row per evaluation."""
    if not training:
        return []
    curves = training.get("curves") or {}
    validation = curves.get("validation") or []
    blocks: list[tuple] = [("h", 2, "Training")]
    if training.get("best_checkpoint"):
        stop = " Training stopped early (train.early_stopping_patience)." if training.get("stopped_early") else ""
        top = training.get("top_value")
        if top is not None and top != training.get("best_value"):
            which = (
                f"the latest checkpoint within {training.get('best_tolerance'):g} (train.best_tolerance) of the best "
                f"validation {training['best_metric']} ({_fmt(top)})"
            )
        else:
            which = f"the checkpoint with the best validation {training['best_metric']}"
        blocks.append(
            (
                "p",
                f"The model is {which}: {_fmt(training.get('best_value'))} at step {training.get('best_step')} of "
                f"{training.get('steps')}.{stop}",
            )
        )
    elif not validation:
        blocks.append(("p", "No validation during training: the model is the last step's weights."))
    if training.get("plot") and Path(training["plot"]).is_file():
        blocks.append(("img", "Learning curves", training["plot"]))
    if validation:
        loss_at = {p["step"]: p["loss"] for p in curves.get("loss") or []}
        names = [k for k in ("l1_accuracy", "l1_macro_f1", "accuracy", "macro_f1") if any(k in v for v in validation)]
        if training.get("best_metric") and training["best_metric"] not in names:
            names.append(training["best_metric"])
        rows = [
            [str(v.get("step")), _fmt(v.get("epoch"), 2), _fmt(_last_loss(loss_at, v.get("step")))]
            + [_fmt(v.get(n)) for n in names]
            for v in validation
        ]
        blocks.append(("table", ["step", "epoch", "training loss", *[f"validation {n}" for n in names]], rows))
    return blocks


def _last_loss(loss_at: dict, step) -> float | None:
    """The training loss logged last at or before ``step``."""
    before = [s for s in loss_at if step is not None and s <= step]
    return loss_at[max(before)] if before else None


# ------------------------------------------------------------------ public
def write_report(
    output_dir: str | Path,
    *,
    metrics: dict,
    baseline_metrics: dict | None,
    plots: dict[str, Path],
    confusions: list[dict],
    calibration: dict | None,
    meta: dict,
    training: dict | None = None,
) -> dict[str, Path]:
    """Write metrics.json, report.md and report.html into ``output_dir`` (each atomically); returns their paths.

    ``plots`` maps a name to a PNG; known names (confusion_l1, f1_l1, reliability) go in their sections and
    any others at the end. Missing plot files are left out rather than failing the whole report. ``training``
    (govtopic.training's learning curves and chosen checkpoint) adds a Training section.

    Example:
        >>> write_report("runs/x/eval", metrics=m, baseline_metrics=None, plots={}, confusions=[],
        ...              calibration=None, meta={"model_dir": "runs/x/model"})["report_html"]
        PosixPath('runs/x/eval/report.html')
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {k: Path(p) for k, p in (plots or {}).items() if p is not None and Path(p).is_file()}
    record = {
        "metrics": metrics,
        "baseline": baseline_metrics,
        "calibration": calibration,
        "meta": meta,
        "worst_confusions": confusions,
        "plots": {k: str(p) for k, p in plots.items()},
        "training": training,
    }
    blocks = _blocks(metrics, baseline_metrics, plots, confusions, calibration, meta)
    blocks[2:2] = _training_blocks(training)
    return {
        "metrics": atomic_write_text(
            out / "metrics.json", json.dumps(record, ensure_ascii=False, indent=2, default=_json_default) + "\n"
        ),
        "report_md": atomic_write_text(out / "report.md", _to_markdown(blocks, out)),
        "report_html": atomic_write_text(out / "report.html", _to_html(blocks)),
    }
