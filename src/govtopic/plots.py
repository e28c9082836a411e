"""PNG figures for the evaluation report: confusion matrix, per-class F1, reliability diagram.

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot, so nothing here changes
the caller's backend or leaks open figures; only the font settings of ``setup_cjk_font`` are global.
Chinese class names need a CJK font: without one matplotlib draws empty boxes.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import font_manager, rcParams
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

# Simplified-Chinese sans-serif families, best first. The SC faces of a Noto/Source Han collection come first:
# their JP/KR/TC faces draw some characters in other regional forms.
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "Noto Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "SimHei",
    "Sarasa Gothic SC",
    "AR PL UKai CN",
    "AR PL UMing CN",
    "Noto Sans CJK TC",
    "Noto Sans CJK JP",
)
# File-name fragments of CJK fonts, for fonts installed after matplotlib built its font cache.
_FILE_HINTS = (
    "cjk",
    "wqy",
    "wenquanyi",
    "sourcehan",
    "simhei",
    "msyh",
    "pingfang",
    "notosanssc",
    "sarasa",
    "uming",
    "ukai",
)
_INSTALL_HINT = (
    "no CJK font found: Chinese class names will show as boxes in the plots. Install one, e.g. "
    "`apt-get install fonts-wqy-microhei` (Debian/Ubuntu) or `pip install noto-cjk-sans-otc`"
)


def _find_family() -> str | None:
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FAMILIES if name in installed), None)


def _register_font_files() -> None:
    """Add CJK font files matplotlib's cached font list does not know yet (system dirs, pip font package)."""
    known = {f.fname for f in font_manager.fontManager.ttflist}
    candidates = [
        p for p in font_manager.findSystemFonts(fontext="ttf") if any(h in Path(p).name.lower() for h in _FILE_HINTS)
    ]
    try:  # optional: the `noto-cjk-sans-otc` wheel ships Noto Sans CJK as a font collection
        import noto_cjk_sans_otc

        candidates.append(str(noto_cjk_sans_otc.FONT_PATH))
    except ImportError:
        pass
    for path in candidates:
        if path not in known and os.path.isfile(path):
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError) as err:
                logger.debug("could not load font %s: %s", path, err)


def setup_cjk_font() -> str | None:
    """Make matplotlib draw Chinese: pick an installed CJK font and put it first in ``font.sans-serif``.

    Returns the family name, or None (after a warning saying how to install one) when there is none.
    """
    family = _find_family()
    if family is None:
        _register_font_files()
        family = _find_family()
    if family is None:
        logger.warning(_INSTALL_HINT)
        return None
    rcParams["font.family"] = "sans-serif"
    rcParams["font.sans-serif"] = [family] + [f for f in rcParams["font.sans-serif"] if f != family]
    rcParams["axes.unicode_minus"] = False  # CJK fonts often lack U+2212, the minus sign matplotlib uses
    return family


@functools.lru_cache(maxsize=1)
def _font_once() -> str | None:
    """Set up the CJK font on the first plot, so callers that skip ``setup_cjk_font`` still get characters."""
    return setup_cjk_font()


def _save(fig: Figure, path: str | Path) -> Path:
    """Save as PNG through a temporary file beside ``path``, so a reader never sees half an image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a report is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_confusion_matrix(
    y_true_l1: Sequence[str], y_pred_l1: Sequence[str], classes: Sequence[str], path: str | Path
) -> Path:
    """Confusion matrix with rows (gold) normalised for colour and raw counts written in the cells."""
    _font_once()
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=int)
    for g, p in zip(y_true_l1, y_pred_l1):
        if g in index and p in index:
            counts[index[g], index[p]] += 1
    rows = counts.sum(axis=1, keepdims=True)
    share = counts / np.where(rows > 0, rows, 1)
    side = max(5.0, 0.48 * len(classes) + 3.0)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the gold class")
    ticks = range(len(classes))
    ax.set_xticks(
        ticks,
        [f"{c} ({i + 1})" for i, c in enumerate(classes)],
        rotation=60,
        ha="right",
        rotation_mode="anchor",
        fontsize=8,
    )
    ax.set_yticks(ticks, [f"({i + 1}) {c}  n={n}" for i, (c, n) in enumerate(zip(classes, rows[:, 0]))], fontsize=8)
    for (r, c), n in np.ndenumerate(counts):
        if n:  # zeros left blank: a 22×22 grid full of 0s hides the few cells that matter
            ax.text(
                c, r, str(n), ha="center", va="center", fontsize=7, color="white" if share[r, c] > 0.55 else "black"
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("Confusion matrix (colour: row share; numbers: documents)")
    return _save(fig, path)


def plot_per_class_f1(per_class: dict, path: str | Path, title: str) -> Path:
    """Horizontal F1 bars, best class on top, each labelled with its support."""
    _font_once()
    items = sorted(per_class.items(), key=lambda kv: (kv[1]["f1"], kv[1]["support"]))
    names = [f"{name}  (n={v['support']})" for name, v in items]
    f1 = [v["f1"] for _, v in items]
    fig = Figure(figsize=(9.0, max(2.5, 0.26 * len(items) + 1.2)))
    ax = fig.add_subplot()
    ax.barh(range(len(items)), f1, color="#4c72b0")
    ax.set_yticks(range(len(items)), names, fontsize=8)
    for y, value in enumerate(f1):
        inside = value > 0.9  # no room right of a long bar: write the figure inside it
        ax.text(
            value - 0.01 if inside else value + 0.01,
            y,
            f"{value:.2f}",
            va="center",
            fontsize=7,
            ha="right" if inside else "left",
            color="white" if inside else "black",
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(-0.6, len(items) - 0.4)
    ax.set_xlabel("F1")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _draw_bins(axes, bins: list[dict], offset: float, width: float, label: str, color: str) -> None:
    filled = [b for b in bins if b["count"]]
    centres = [(b["lower"] + b["upper"]) / 2 + offset for b in filled]
    style = {"width": width, "color": color, "alpha": 0.8, "edgecolor": "black", "linewidth": 0.4}
    axes[0].bar(centres, [b["accuracy"] for b in filled], label=label, **style)
    axes[1].bar(centres, [b["count"] for b in filled], **style)


def plot_reliability(
    bins: list[dict], ece_before: float, ece_after: float | None, path: str | Path, bins_after: list[dict] | None = None
) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, before and after scaling.

    A smaller panel below shows how many documents fall in each bin (bins with few are noisy).
    """
    _font_once()
    fig = Figure(figsize=(6.5, 7.5))
    ax, counts = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = (bins[0]["upper"] - bins[0]["lower"]) if bins else 1 / 15
    if bins_after:
        _draw_bins((ax, counts), bins, -width / 4, width / 2, f"raw (ECE {ece_before:.3f})", "#dd8452")
        after_label = "calibrated" if ece_after is None else f"calibrated (ECE {ece_after:.3f})"
        _draw_bins((ax, counts), bins_after, width / 4, width / 2, after_label, "#4c72b0")
    else:
        _draw_bins((ax, counts), bins, 0.0, width * 0.9, f"ECE {ece_before:.3f}", "#4c72b0")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    after = f" → {ece_after:.3f}" if ece_after is not None else ""
    ax.set_title(f"Reliability diagram (ECE {ece_before:.3f}{after})", pad=30)
    # Above the axes: inside, it would hide the bars of whichever corner holds them.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, fontsize=9)
    counts.set_ylabel("documents")
    counts.set_xlabel("confidence (top probability)")
    return _save(fig, path)


def plot_learning_curves(curves: dict, metric: str, path: str | Path) -> Path:
    """Training loss by step (left) and the validation figures by evaluation (right), with the best value of
    ``metric`` marked.

    Args:
        curves: ``govtopic.validation.learning_curves`` output ({"loss": [...], "validation": [...]}).
        metric: the figure that chose the checkpoint (``train.best_metric``).
        path: the PNG to write.

    Example:
        >>> plot_learning_curves({"loss": [{"step": 2, "loss": 1.1}], "validation": []}, "l1_macro_f1", "c.png")
        PosixPath('c.png')
    """
    _font_once()
    fig = Figure(figsize=(11.0, 4.0))
    loss_ax, val_ax = fig.subplots(1, 2)
    loss = curves.get("loss") or []
    loss_ax.plot([p["step"] for p in loss], [p["loss"] for p in loss], marker=".", color="#4c72b0")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("Training loss")
    loss_ax.grid(alpha=0.3)
    validation = curves.get("validation") or []
    steps = [p["step"] for p in validation]
    shown = [m for m in dict.fromkeys([metric, "l1_accuracy", "l1_macro_f1", "accuracy", "macro_f1"])]
    for name in shown:
        values = [p.get(name) for p in validation]
        if any(v is not None for v in values):
            val_ax.plot(steps, values, marker="o", label=name, linewidth=2.5 if name == metric else 1.2)
    best = [(p[metric], p["step"]) for p in validation if p.get(metric) is not None]
    if best:
        lower_is_better = metric in ("ece", "level_disagreement")
        value, step = min(best) if lower_is_better else max(best, key=lambda b: (b[0], -b[1]))
        val_ax.axvline(step, color="grey", linestyle="--", linewidth=1)
        val_ax.annotate(f"best {metric} {value:.3f}", (step, value), textcoords="offset points", xytext=(4, -12))
    val_ax.set_xlabel("step")
    val_ax.set_title("Validation (documents, both levels)")
    val_ax.grid(alpha=0.3)
    if validation:
        val_ax.legend(fontsize=8)
    else:
        val_ax.text(0.5, 0.5, "no validation during training", ha="center", va="center", transform=val_ax.transAxes)
    return _save(fig, path)


def plot_risk_coverage(model: dict, baseline: dict | None, path: str | Path) -> Path:
    """Accuracy of the documents kept against the share kept (most confident first), one panel per level,
    the model beside the baseline; the 90/95/99% precision lines are drawn for reference.

    Args:
        model: ``govtopic.riskcoverage.risk_coverage`` of the model ({"l1": ..., "full": ...}).
        baseline: the same for the baseline, or None.
        path: the PNG to write.

    Example:
        >>> plot_risk_coverage(metrics["risk_coverage"], None, "eval/risk_coverage.png")
        PosixPath('eval/risk_coverage.png')
    """
    _font_once()
    fig = Figure(figsize=(11.0, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, level, title in zip(axes, ("l1", "full"), ("First level", "Full label")):
        for name, figures, color in (("model", model, "#4c72b0"), ("baseline", baseline, "#dd8452")):
            part = (figures or {}).get(level)
            if not part:
                continue
            cov, acc = zip(*part["curve"])
            ax.plot(cov, acc, color=color, label=f"{name} (AURC {part['aurc']:.3f})")
        for p in (0.9, 0.95, 0.99):
            ax.axhline(p, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("coverage (share of documents accepted, most confident first)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower left")
        else:
            ax.text(0.5, 0.5, "no full-label gold labels", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("accuracy of the accepted documents")
    fig.suptitle("Risk–coverage: how many documents can go without a person at each accuracy")
    return _save(fig, path)
