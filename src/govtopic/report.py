"""Evaluation reports: metrics.json, report.md and a self-contained report.html; run comparison; model card.

The Markdown and HTML reports are rendered from one list of blocks (headings, paragraphs, tables, lists,
images), so both always say the same thing. The HTML inlines the PNGs so it can be mailed as one file.
"""

from __future__ import annotations

import base64
import json
import os
import unicodedata
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
    for level, name in (("l1", "first level"), ("full", "full label")):
        o = th[level]["overall"]
        if o["documents"]:
            rows.append([name, str(o["documents"]), str(o["automatic"]), _fmt(o["coverage"]), _fmt(o["precision"])])
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


# ------------------------------------------------------------------ comparing two runs
_REPORT_FOLDER = (
    "expected a report folder written by `govtopic evaluate --output DIR` (it holds metrics.json, report.md and "
    "report.html), or the metrics.json in it"
)


def _load_run(run: str | Path) -> tuple[dict, str, dict]:
    """The metrics of one run (a report folder or its metrics.json), the file they came from and the report's
    meta (what was scored; empty for a bare metrics dump); a ValueError naming the file for anything that is
    not an evaluation's metrics."""
    path = Path(run)
    inside = sorted(p.parent for p in path.glob("*/metrics.json")) if path.is_dir() else []
    if inside and not (path / "metrics.json").is_file():  # a run folder: its report folders are one level down
        raise FileNotFoundError(f"{run}: no metrics.json; {_REPORT_FOLDER}, e.g. {', '.join(map(str, inside))}")
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{run}: {_REPORT_FOLDER}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); {_REPORT_FOLDER}") from err
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); {_REPORT_FOLDER}") from err
    # A report's metrics.json wraps the figures under "metrics"; a bare compute_metrics() dump does not.
    metrics = data.get("metrics") if isinstance(data, dict) and isinstance(data.get("metrics"), dict) else data
    if not _is_metrics(metrics):
        found = f"a JSON {type(data).__name__}" if not isinstance(data, dict) else f"keys {', '.join(list(data)[:6])}"
        raise ValueError(
            f"{path}: not the metrics of an evaluation (found {found}; expected a document count `n` and figures "
            f"such as accuracy and macro_f1); {_REPORT_FOLDER}"
        )
    meta = data.get("meta") if isinstance(data, dict) and isinstance(data.get("meta"), dict) else {}
    return metrics, str(path), meta


def _is_metrics(metrics) -> bool:
    """compute_metrics()'s figures: a document count and at least one headline number."""
    if not isinstance(metrics, dict) or type(metrics.get("n")) is not int:
        return False
    return any(isinstance(_get(metrics, path), (int, float)) for _, path in _HEADLINE)


def _width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    cols = list(zip(head, *rows))
    widths = [max(_width(c) for c in col) for col in cols]

    def pad(cell: str, width: int, left: bool) -> str:  # names left-aligned, numbers right-aligned
        gap = " " * (width - _width(cell))
        return cell + gap if left else gap + cell

    lines = ["  ".join(pad(c, w, i == 0) for i, (c, w) in enumerate(zip(row, widths))) for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _class_deltas(a: dict | None, b: dict | None) -> list[list[str]]:
    a, b = a or {}, b or {}
    rows = []
    for name in set(a) | set(b):
        fa, fb = _get(a, (name, "f1")), _get(b, (name, "f1"))
        support_a, support_b = _get(a, (name, "support")), _get(b, (name, "support"))
        rows.append(
            (
                abs(fb - fa) if fa is not None and fb is not None else -1.0,
                name,
                [name, _fmt(support_a), _fmt(support_b), _fmt(fa), _fmt(fb), _delta(fa, fb)],
            )
        )
    # Largest change first; classes present in one run only (no delta) last.
    return [r[2] for r in sorted(rows, key=lambda r: (-r[0], r[1]))]


def _first_level_only(metrics: dict) -> bool:
    """Whether the model scored has first levels as its classes (trained with data.label_level: l1)."""
    classes = metrics.get("per_class")
    return isinstance(classes, dict) and bool(classes) and not any("\\" in str(c) for c in classes)


def _incomparable(a: dict, b: dict, meta_a: dict, meta_b: dict) -> list[str]:
    """What makes the deltas of two reports compare unlike things: other documents, another split, another
    number of documents, or full-label figures of a first-level-only model."""
    warnings = []
    file_a, file_b = meta_a.get("data_file"), meta_b.get("data_file")
    if file_a and file_b and Path(str(file_a)).resolve() != Path(str(file_b)).resolve():
        warnings.append(f"A scored {file_a}, B scored {file_b}: the deltas compare different documents")
    if meta_a.get("split", "-") != meta_b.get("split", "-") and "split" in meta_a and "split" in meta_b:
        warnings.append(f"A scored split {meta_a['split']!r}, B split {meta_b['split']!r}")
    if a.get("n") != b.get("n"):
        warnings.append("the runs scored different numbers of documents; deltas may not be comparable")
    only = [name for name, m in (("A", a), ("B", b)) if _first_level_only(m)]
    if only:
        warnings.append(
            f"{' and '.join(only)} is a first-level-only model: its 'full label' figures are first-level figures, "
            "so the full-label rows compare a first level with a full label"
            if len(only) == 1
            else "both models are first-level-only: their 'full label' figures are first-level figures"
        )
    return warnings


def compare_runs(run_a: str | Path, run_b: str | Path) -> str:
    """A printable comparison of two evaluation runs: headline and per-class F1 deltas (B − A), largest first."""
    a, path_a, meta_a = _load_run(run_a)
    b, path_b, meta_b = _load_run(run_b)
    parts = [f"A: {path_a} ({a.get('n')} documents)", f"B: {path_b} ({b.get('n')} documents)"]
    parts += [f"warning: {w}" for w in _incomparable(a, b, meta_a, meta_b)]
    head = [
        [name, _fmt(_get(a, path)), _fmt(_get(b, path)), _delta(_get(a, path), _get(b, path))]
        for name, path in _HEADLINE
    ]
    parts += ["", "Headline (B − A)", _text_table(["metric", "A", "B", "B − A"], head)]
    for title, path in (
        ("Per-class F1, first level", ("l1", "per_class")),
        ("Per-class F1, full label", ("per_class",)),
    ):
        if path == ("per_class",) and (_first_level_only(a) or _first_level_only(b)):
            continue  # a first-level-only model's classes are first levels: compared above
        rows = _class_deltas(_get(a, path), _get(b, path))
        if rows:
            parts += [
                "",
                f"{title} (B − A, largest change first)",
                _text_table(["class", "support A", "support B", "F1 A", "F1 B", "B − A"], rows),
            ]
    return "\n".join(parts)


# ------------------------------------------------------------------ model card
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
