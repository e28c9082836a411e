"""Comparing two evaluation runs (``govtopic compare A B``): headline and per-class F1 deltas, B − A.

Each run is a report folder written by ``govtopic evaluate --output DIR`` (or the metrics.json in it, or a bare
``compute_metrics`` dump). The comparison is plain text for the terminal, CJK-aware in its column widths, and
warns first when the two reports scored unlike things: other documents, another split, another number of
documents, or the full-label figures of a first-level-only model.

``compare_runs(run_a, run_b)``: ``run_a`` and ``run_b`` are the two report folders (or metrics.json files);
it returns the printable comparison, or raises FileNotFoundError / ValueError naming the file that is not an
evaluation's metrics.

Example:
    >>> print(compare_runs("runs/a/eval/test", "runs/b/eval/test"))
    A: runs/a/eval/test/metrics.json (500 documents)
    B: runs/b/eval/test/metrics.json (500 documents)
    ...
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from govtopic.report import _HEADLINE, _delta, _fmt, _get

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
