"""Reports, plots, run comparison and the model card, from small hand-built metrics."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import yaml

from conftest import LABELS
from govtopic.compare import compare_runs
from govtopic.metrics import compute_metrics, reliability_bins, worst_confusions
from govtopic.modelcard import render_model_card
from govtopic.plots import plot_confusion_matrix, plot_per_class_f1, plot_reliability, setup_cjk_font
from govtopic.report import write_report

GOLD = [LABELS[i] for i in (0, 0, 1, 2, 2, 3, 4, 1)]
TITLES = [
    "北京市城市规划条例",
    "上海市城乡规划条例",
    "大气污染防治法",
    "人民调解法",
    "律师法",
    "传染病防治法",
    "某某办法",
    "水污染防治法",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _probs(right: list[bool], labels: list[str] = LABELS, gold: list[str] = GOLD) -> np.ndarray:
    """Confident and right where ``right`` says so, else confidently the next label."""
    probs = np.full((len(gold), len(labels)), 0.025)
    for i, (g, ok) in enumerate(zip(gold, right)):
        probs[i, (labels.index(g) + (0 if ok else 1)) % len(labels)] = 0.9
    return probs


@pytest.fixture
def run(tmp_path):
    """A complete report folder: metrics of a model that misses two documents, a weaker baseline, plots."""
    probs = _probs([True, False, True, True, True, True, True, False])
    metrics = compute_metrics(GOLD, probs, LABELS)
    baseline = compute_metrics(GOLD, _probs([True, False, False, True, False, True, True, False]), LABELS)
    baseline["name"] = "char 1-3-gram TF-IDF + LinearSVC"
    y = np.array([LABELS.index(g) for g in GOLD])
    l1 = sorted(metrics["l1"]["per_class"])
    plots = {
        "confusion_l1": plot_confusion_matrix(
            [g.split("\\")[0] for g in GOLD], l1[:1] * len(GOLD), l1, tmp_path / "plots" / "confusion_l1.png"
        ),
        "f1_l1": plot_per_class_f1(metrics["l1"]["per_class"], tmp_path / "plots" / "f1_l1.png", "F1"),
        "reliability": plot_reliability(
            reliability_bins(probs, y), 0.2, 0.1, tmp_path / "plots" / "rel.png", reliability_bins(probs, y)
        ),
    }
    out = tmp_path / "report"
    paths = write_report(
        out,
        metrics=metrics,
        baseline_metrics=baseline,
        plots=plots,
        confusions=worst_confusions(GOLD, probs, LABELS, TITLES),
        calibration={"temperature": 1.7, "ece_before": 0.21, "ece_after": 0.05},
        meta={
            "model_dir": "runs/demo/model",
            "data_file": "regulations.jsonl.gz",
            "documents": len(GOLD),
            "long_doc": "chunks",
            "date": "2025-01-01",
        },
    )
    return out, paths, plots


def test_plots_are_png_files(run):
    _, _, plots = run
    for path in plots.values():
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_write_report_writes_three_files_with_chinese_names_and_inlined_plots(run):
    out, paths, plots = run
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "report.html", "report.md"]  # no temp files
    assert {p.name for p in paths.values()} == {"metrics.json", "report.md", "report.html"}
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    # Of the two misses, 城市规划 -> 环境监测 stays under the same first level.
    assert record["metrics"]["accuracy"] == pytest.approx(0.75)
    assert record["metrics"]["l1_accuracy"] == pytest.approx(0.875)
    assert record["baseline"]["name"].startswith("char")
    assert record["calibration"]["temperature"] == 1.7 and record["meta"]["long_doc"] == "chunks"
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "公安、安全、司法" in md and "城乡建设、环境保护\\城市规划" in md
    assert "水污染防治法" in md  # the example title of the one first-level confusion
    assert "1.700" in md and "0.210" in md and "0.050" in md  # temperature and ECE before/after
    assert "(../plots/confusion_l1.png)" in md
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page and "公安、安全、司法" in page
    for path in plots.values():
        assert base64.b64encode(path.read_bytes()).decode("ascii") in page
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 3


def test_report_headline_shows_model_minus_baseline(run):
    md = (run[0] / "report.md").read_text(encoding="utf-8")
    # The model misses 2 of 8, the baseline 4 of 8: accuracy 0.750 against 0.500.
    assert re.search(r"\| full label: accuracy \| 0\.750 \| 0\.500 \| \+0\.250 \|", md)


def test_report_without_baseline_has_no_baseline_columns(tmp_path):
    metrics = compute_metrics(GOLD, _probs([True] * 8), LABELS)
    write_report(tmp_path, metrics=metrics, baseline_metrics=None, plots={}, confusions=[], calibration=None, meta={})
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| metric | model |\n" in md and "baseline F1" not in md
    assert "no baseline was run" in md and "No confusions." in md


def test_compare_runs_shows_deltas_of_the_right_sign(run, tmp_path):
    better = run[0]
    worse = tmp_path / "worse" / "metrics.json"
    worse.parent.mkdir()
    worse_metrics = compute_metrics(GOLD, _probs([False, False, True, True, False, True, True, False]), LABELS)
    worse.write_text(json.dumps(worse_metrics, ensure_ascii=False), encoding="utf-8")  # a bare metrics dict
    text = compare_runs(worse, better)
    assert re.search(r"full label: accuracy\s+0\.500\s+0\.750\s+\+0\.250", text)
    lines = [line for line in text.splitlines() if line.startswith(LABELS[0] + " ")]
    assert lines and lines[0].split()[-1].startswith("+")  # 城市规划 improved from 0 to 1 right
    backwards = compare_runs(better, worse)
    assert re.search(r"full label: accuracy\s+0\.750\s+0\.500\s+-0\.250", backwards)


def test_compare_runs_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        compare_runs(tmp_path, tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[1, 2]", r"not the metrics of an evaluation \(found a JSON list"),
        (b"", r"not valid JSON"),
        ("{}".encode("gb18030") + "\n指标".encode("gb18030"), r"not UTF-8 text"),
        (b'{"best_metric": "l1_macro_f1", "curves": {}}', r"not the metrics of an evaluation \(found keys best_metric"),
        (b'{"metrics": {"n": 8}}', r"not the metrics of an evaluation"),
    ],
    ids=["list", "empty", "gb18030", "learning-curves", "no-figures"],
)
def test_compare_runs_names_a_file_that_is_not_a_report(run, tmp_path, content, expected):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_bytes(content)
    for args in ((bad, run[0]), (run[0], bad / "metrics.json")):
        with pytest.raises(ValueError, match=expected) as err:
            compare_runs(*args)
        text = str(err.value)
        assert str(bad / "metrics.json") in text and "govtopic evaluate --output DIR" in text
        assert "metrics.json, report.md and report.html" in text


def test_compare_runs_points_from_a_run_folder_to_its_eval_folder(run, tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text((run[0] / "metrics.json").read_text(encoding="utf-8"))
    with pytest.raises(FileNotFoundError, match=r"no metrics.json; .*e\.g\. " + re.escape(str(tmp_path / "eval"))):
        compare_runs(tmp_path, run[0])


def test_compare_runs_shows_the_support_of_both_runs(run, tmp_path):
    fewer = tmp_path / "fewer" / "metrics.json"
    fewer.parent.mkdir()
    keep = [0, 1, 2, 3, 4, 5]
    metrics = compute_metrics([GOLD[i] for i in keep], _probs([True] * 8)[keep], LABELS)
    fewer.write_text(json.dumps(metrics, ensure_ascii=False), encoding="utf-8")
    text = compare_runs(fewer, run[0])
    assert re.search(r"class\s+support A\s+support B\s+F1 A\s+F1 B\s+B − A", text)
    a = metrics["per_class"]
    b = json.loads((run[0] / "metrics.json").read_text(encoding="utf-8"))["metrics"]["per_class"]
    name = next(n for n in b if a.get(n, {}).get("support") != b[n]["support"])
    row = next(line for line in text.splitlines() if line.startswith(name + " "))
    assert row.split()[1:3] == [str(a.get(name, {}).get("support", "n/a")), str(b[name]["support"])]


def test_model_card_has_front_matter_results_and_usage():
    metrics = compute_metrics(GOLD, _probs([True] * 6 + [False] * 2), LABELS)
    baseline = {**compute_metrics(GOLD, _probs([True] * 4 + [False] * 4), LABELS), "name": "TF-IDF"}
    card = render_model_card(
        metrics,
        baseline,
        {
            "model_dir": "runs/govtopic-small/model.partial",
            "data_file": "data/regulations.jsonl.gz",
            "train_docs": 2010,
        },
    )
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["language"] == ["zh"] and front["license"] == "apache-2.0"
    assert front["pipeline_tag"] == "text-classification" and front["library_name"] == "transformers"
    result = front["model-index"][0]
    assert result["name"] == "govtopic-small"
    assert result["results"][0]["dataset"]["name"] == "regulations.jsonl.gz"
    values = {m["name"]: m["value"] for m in result["results"][0]["metrics"]}
    assert values["Accuracy (first level)"] == pytest.approx(metrics["l1_accuracy"], abs=1e-4)
    assert values["Macro-F1 (full label)"] == pytest.approx(metrics["macro_f1"], abs=1e-4)
    for section in (
        "## Model description",
        "## Intended use",
        "## Training data",
        "## Evaluation results",
        "## Limitations",
        "## How to use",
        "from govtopic import predict",
        "pipeline(",
    ):
        assert section in card
    assert "| full label: accuracy | 0.750 | 0.500 |" in card
    assert "title" in card and "其他" in card  # distant labels and the rare 其他 class are named


def test_model_card_leaves_out_full_level_figures_it_does_not_have():
    l1_gold = [g.split("\\")[0] for g in GOLD]
    metrics = compute_metrics(l1_gold, _probs([True] * 8), LABELS)
    front = yaml.safe_load(render_model_card(metrics, None, {}).split("---\n")[1])
    names = [m["name"] for m in front["model-index"][0]["results"][0]["metrics"]]
    assert names == ["Accuracy (first level)", "Macro-F1 (first level)"]


def test_cjk_font_has_glyphs_for_class_names():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    family = setup_cjk_font()
    if family is None:
        pytest.skip("no CJK font installed (apt-get install fonts-wqy-microhei); plots would show boxes")
    path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    font = FT2Font(path)
    assert all(font.get_char_index(ord(ch)) for ch in "城乡建设环境保护公安司法")


def test_report_shows_the_learning_curves(tmp_path):
    from govtopic.plots import plot_learning_curves

    metrics = compute_metrics(GOLD, _probs([True] * 8), LABELS)
    curves = {
        "loss": [{"step": 2, "loss": 1.6}, {"step": 4, "loss": 1.2}, {"step": 6, "loss": 0.9}],
        "validation": [
            {"step": 3, "epoch": 0.5, "l1_accuracy": 0.5, "l1_macro_f1": 0.4},
            {"step": 6, "epoch": 1.0, "l1_accuracy": 0.75, "l1_macro_f1": 0.7},
        ],
    }
    plot = plot_learning_curves(curves, "l1_macro_f1", tmp_path / "curves.png")
    assert plot.read_bytes().startswith(PNG_MAGIC)
    training = {
        "best_metric": "l1_macro_f1",
        "best_value": 0.7,
        "best_step": 6,
        "best_checkpoint": "checkpoint-6",
        "steps": 6,
        "stopped_early": False,
        "curves": curves,
        "plot": str(plot),
    }
    paths = write_report(
        tmp_path / "report",
        metrics=metrics,
        baseline_metrics=None,
        plots={},
        confusions=[],
        calibration=None,
        meta={"model_dir": "runs/x/model"},
        training=training,
    )
    md = paths["report_md"].read_text(encoding="utf-8")
    assert "the checkpoint with the best validation l1_macro_f1: 0.700 at step 6 of 6" in md
    assert "| 3 | 0.50 | 1.600 | 0.500 | 0.400 |" in md  # the loss logged last at or before step 3
    html_text = paths["report_html"].read_text(encoding="utf-8")
    assert "<h2>Training</h2>" in html_text and html_text.count("data:image/png;base64,") == 1
    assert "<td>0.700</td>" in html_text
    saved = json.loads(paths["metrics"].read_text(encoding="utf-8"))
    assert saved["training"]["best_checkpoint"] == "checkpoint-6"


def test_html_report_escapes_what_it_shows(tmp_path):
    metrics = compute_metrics(GOLD, _probs([True] * 8), LABELS)
    paths = write_report(
        tmp_path,
        metrics=metrics,
        baseline_metrics=None,
        plots={},
        confusions=[],
        calibration=None,
        meta={"model_dir": "<script>alert(1)</script>"},
    )
    text = paths["report_html"].read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_compare_runs_warns_when_the_reports_scored_unlike_things(tmp_path):
    def report(name, data_file, gold, labels, right):
        folder = tmp_path / name
        folder.mkdir()
        metrics = compute_metrics(gold, _probs(right, labels, gold), labels)
        meta = {"data_file": data_file, "split": "test"}
        (folder / "metrics.json").write_text(json.dumps({"metrics": metrics, "meta": meta}), encoding="utf-8")
        return folder

    firsts = sorted({g.split("\\")[0] for g in LABELS})
    gold_l1 = [g.split("\\")[0] for g in GOLD]
    a = report("a", "data/a.jsonl", GOLD, LABELS, [True] * 8)
    same = report("same", "data/a.jsonl", GOLD, LABELS, [True] * 7 + [False])
    other = report("other", "data/b.jsonl", GOLD, LABELS, [True] * 8)
    l1 = report("l1", "data/a.jsonl", gold_l1, firsts, [True] * 8)
    assert "warning" not in compare_runs(a, same)
    assert "warning: A scored data/a.jsonl, B scored data/b.jsonl" in compare_runs(a, other)
    text = compare_runs(a, l1)
    assert "warning: B is a first-level-only model" in text
    assert "Per-class F1, full label" not in text and "Per-class F1, first level" in text
