"""Evaluation reports: metrics.json, report.md and a self-contained report.html; run comparison; model card.

The Markdown and HTML reports are rendered from one list of blocks (headings, paragraphs, tables, lists,
images), so both always say the same thing. The HTML inlines the PNGs so it can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import yaml

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
    return (
        blocks + _calibration_blocks(metrics, calibration, plots) + _class_blocks(metrics, baseline, plots, confusions)
    )


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


def _to_html(blocks: list[tuple]) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        "<title>govtopic evaluation report</title>",
        f"<style>{_CSS}</style></head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{esc(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "ul":
            items = "".join(
                f"<li>{esc(item[0])}"
                + ("<ul>" + "".join(f"<li>{esc(s)}</li>" for s in item[1:]) + "</ul>" if item[1:] else "")
                + "</li>"
                for item in block[1]
            )
            out.append(f"<ul>{items}</ul>")
        elif kind == "img":
            data = base64.b64encode(Path(block[2]).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{esc(block[1])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block[1])}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


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
) -> dict[str, Path]:
    """Write metrics.json, report.md and report.html into ``output_dir`` (each atomically); returns their paths.

    ``plots`` maps a name to a PNG; known names (confusion_l1, f1_l1, reliability) go in their sections and
    any others at the end. Missing plot files are left out rather than failing the whole report.
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
    }
    blocks = _blocks(metrics, baseline_metrics, plots, confusions, calibration, meta)
    return {
        "metrics": atomic_write_text(
            out / "metrics.json", json.dumps(record, ensure_ascii=False, indent=2, default=_json_default) + "\n"
        ),
        "report_md": atomic_write_text(out / "report.md", _to_markdown(blocks, out)),
        "report_html": atomic_write_text(out / "report.html", _to_html(blocks)),
    }


# ------------------------------------------------------------------ comparing two runs
def _load_run(run: str | Path) -> tuple[dict, str]:
    path = Path(run)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{run}: expected a report folder holding metrics.json, or a metrics.json file")
    data = json.loads(path.read_text(encoding="utf-8"))
    # A report's metrics.json wraps the figures under "metrics"; a bare compute_metrics() dump does not.
    return (data["metrics"] if isinstance(data.get("metrics"), dict) else data), str(path)


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
        support = _get(b, (name, "support")) if name in b else _get(a, (name, "support"))
        rows.append(
            (
                abs(fb - fa) if fa is not None and fb is not None else -1.0,
                name,
                [name, str(support), _fmt(fa), _fmt(fb), _delta(fa, fb)],
            )
        )
    # Largest change first; classes present in one run only (no delta) last.
    return [r[2] for r in sorted(rows, key=lambda r: (-r[0], r[1]))]


def compare_runs(run_a: str | Path, run_b: str | Path) -> str:
    """A printable comparison of two evaluation runs: headline and per-class F1 deltas (B − A), largest first."""
    a, path_a = _load_run(run_a)
    b, path_b = _load_run(run_b)
    parts = [f"A: {path_a} ({a.get('n')} documents)", f"B: {path_b} ({b.get('n')} documents)"]
    if a.get("n") != b.get("n"):
        parts.append("warning: the runs scored different numbers of documents; deltas may not be comparable")
    head = [
        [name, _fmt(_get(a, path)), _fmt(_get(b, path)), _delta(_get(a, path), _get(b, path))]
        for name, path in _HEADLINE
    ]
    parts += ["", "Headline (B − A)", _text_table(["metric", "A", "B", "B − A"], head)]
    for title, path in (
        ("Per-class F1, first level", ("l1", "per_class")),
        ("Per-class F1, full label", ("per_class",)),
    ):
        rows = _class_deltas(_get(a, path), _get(b, path))
        if rows:
            parts += [
                "",
                f"{title} (B − A, largest change first)",
                _text_table(["class", "support", "F1 A", "F1 B", "B − A"], rows),
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


def _front_matter(metrics: dict, meta: dict, name: str) -> str:
    data_file = meta.get("data_file") or meta.get("train_file") or "govtopic data"
    dataset = {
        "name": str(meta.get("dataset_name") or Path(str(data_file)).name),
        "type": str(meta.get("dataset_type") or Path(str(data_file)).name.split(".")[0]),
        "split": str(meta.get("split") or "test"),
    }
    entries = []
    for kind, key, label, average in _CARD_METRICS:
        if metrics.get(key) is not None:
            entry = {"type": kind, "value": round(float(metrics[key]), 4), "name": label}
            entries.append({**entry, "args": {"average": average}} if average else entry)
    card = {
        "language": ["zh"],
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": ["text-classification", "topic-classification", "chinese", "government-documents", "govtopic"],
    }
    if meta.get("base_model"):
        card["base_model"] = str(meta["base_model"])
    card["model-index"] = [
        {
            "name": name,
            "results": [
                {
                    "task": {"type": "text-classification", "name": "Topic classification (主题分类)"},
                    "dataset": dataset,
                    "metrics": entries,
                }
            ],
        }
    ]
    return "---\n" + yaml.safe_dump(card, allow_unicode=True, sort_keys=False) + "---\n"


def render_model_card(metrics: dict, baseline_metrics: dict | None, meta: dict) -> str:
    """A Hugging Face model card (README.md) with YAML front-matter and the evaluation beside the baseline."""
    name = _model_name(meta)
    training = [
        [k.replace("_", " "), _fmt(meta[k])]
        for k in ("data_file", "train_docs", "validation_docs", "test_docs", "classes", "train_seconds")
        if meta.get(k) is not None
    ]
    results = [[n, _fmt(_get(metrics, p)), _fmt(_get(baseline_metrics, p))] for n, p in _HEADLINE[:6]]
    temperature = _get(meta, ("calibration", "temperature"))
    blocks = [
        ("h", 1, name),
        ("h", 2, "Model description"),
        (
            "p",
            "A Chinese BERT-style classifier that tags a government document with a topic from the two-level "
            "主题分类 of the State Council policy library (22 first-level, 121 second-level classes). Labels "
            "are written 一级\\二级 (or 一级 alone); the first level is read off the full label. Long documents "
            f"are split by the '{meta.get('long_doc', 'chunks')}' strategy and the windows' logits pooled.",
        ),
        ("h", 2, "Intended use"),
        (
            "p",
            "Suggesting a topic for Chinese government documents (laws, regulations, rules, notices) in "
            "archives and portals, with a person checking low-confidence cases. Not for decisions about people.",
        ),
        ("h", 2, "Training data"),
        ("table", ["training", "value"], training or [["data", "not recorded"]]),
        ("h", 2, "Evaluation results"),
        (
            "p",
            f"On {metrics.get('n')} held-out documents"
            + (
                f"; the baseline is {baseline_metrics.get('name', 'a TF-IDF + linear model')} trained on the "
                "same split."
                if baseline_metrics
                else "."
            )
            + (f" Probabilities use temperature {temperature:.3f}." if temperature else ""),
        ),
        _table(["metric", "this model", "baseline"], results, baseline_metrics is not None),
        ("h", 2, "Limitations"),
        ("ul", [[x] for x in _LIMITATIONS]),
        ("h", 2, "How to use"),
    ]
    usage = (
        "```python\nfrom govtopic import predict\n\n"
        f'result = predict("关于加强城市规划管理的通知……", model="{name}")\n'
        'print(result["label"], result["label_l1"], result["score"])\n```\n\n'
        "With transformers alone (one window of 512 tokens, no long-document pooling):\n\n"
        "```python\nfrom transformers import pipeline\n\n"
        f'classifier = pipeline("text-classification", model="{name}")\n'
        'print(classifier("关于加强城市规划管理的通知……", top_k=3, truncation=True))\n```\n'
    )
    return _front_matter(metrics, meta, name) + "\n" + _to_markdown(blocks, Path(".")) + "\n" + usage
