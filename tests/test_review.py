"""Thresholds for a target precision and the review flag: fitted precision holds, hopeless classes are reviewed."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import LABELS
from govtopic import TopicClassifier
from govtopic.cli import main
from govtopic.evaluation import update_record
from govtopic.review import REASONS, decide, fit_thresholds, flag, scores
from govtopic.riskcoverage import risk_coverage

CITY, ENV, LAW, HEALTH, OTHER = LABELS


def _probs(n: int = 3000, seed: int = 0, hopeless: str | None = None):
    """Probabilities with a real signal: confident rows are mostly right, unsure rows often wrong. A
    ``hopeless`` label is predicted often but always wrongly."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, len(LABELS), n)
    strength = rng.uniform(0.0, 6.0, n)
    logits = rng.normal(0, 1.0, (n, len(LABELS)))
    logits[np.arange(n), gold] += strength
    if hopeless is not None:
        j = LABELS.index(hopeless)
        fooled = (gold != j) & (rng.random(n) < 0.3)
        logits[fooled, j] += 20.0
        gold[gold == j] = LABELS.index(OTHER)  # no document truly has it
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), [LABELS[i] for i in gold]


def _precision(probs, gold, th, level):
    s = scores(probs, LABELS)
    ok = decide(probs, LABELS, th)["l1_ok" if level == "l1" else "full_ok"]
    pred = s["l1"] if level == "l1" else s["full"]
    truth = np.array([y.split("\\")[0] for y in gold] if level == "l1" else gold, dtype=object)
    return float((pred[ok] == truth[ok]).mean()), float(ok.mean())


@pytest.mark.parametrize("prior_docs", [0, None])
@pytest.mark.parametrize("target", [0.9, 0.95])
def test_thresholds_reach_the_precision_on_the_data_they_were_fitted_on(target, prior_docs):
    """Overall, always; class by class when each class is judged by its own documents alone (prior_docs 0;
    pooled with the whole model, the default, a class's own figure can sit just below where the model's
    supports it)."""
    probs, gold = _probs()
    extra = {} if prior_docs is None else {"prior_docs": prior_docs}
    th, report = fit_thresholds(probs, gold, LABELS, precision=target, **extra)
    for level in ("l1", "full"):
        precision, coverage = _precision(probs, gold, th, level)
        assert precision >= target
        assert 0.2 < coverage < 1.0  # some documents go through, not all
        assert report[level]["overall"]["coverage"] == pytest.approx(coverage)
        if prior_docs == 0:
            for c, v in report[level]["per_class"].items():
                assert v["precision"] is None or v["precision"] >= target, c
    # Stored as plain JSON values, every class of the model named.
    assert set(th["full"]) == set(LABELS) and th["precision"] == target
    json.dumps(th)


def test_a_class_that_never_reaches_the_precision_is_reported_and_always_reviewed():
    probs, gold = _probs(hopeless=LAW)
    th, report = fit_thresholds(probs, gold, LABELS, precision=0.95)
    assert th["l1"]["公安、安全、司法"] is None
    assert "公安、安全、司法" in report["l1"]["never_automatic"]
    law_rows = [i for i in range(len(probs)) if probs[i].argmax() == LABELS.index(LAW)]
    assert len(law_rows) > 100
    for i in law_rows[:20]:
        res = flag(
            {"label": LAW, "label_l1": "公安、安全、司法", "score": 0.99, "score_l1": 0.99}, probs[i], LABELS, th
        )
        assert res["needs_review"] is True and res["review_reason"] == "class_never_reaches_precision"


def test_first_level_sure_second_level_not_gives_the_first_level_alone():
    th = {"precision": 0.95, "margin": 0.0, "l1": {"城乡建设、环境保护": 0.5}, "full": {CITY: 0.9, ENV: 0.9}}
    probs = np.array([0.45, 0.40, 0.05, 0.05, 0.05])
    res = flag({"label": CITY, "label_l1": "城乡建设、环境保护", "score": 0.45, "score_l1": 0.85}, probs, LABELS, th)
    assert res["needs_review"] is True and res["review_reason"] == "second_level_unsure"
    assert res["label"] == "城乡建设、环境保护" and res["label_l1"] == "城乡建设、环境保护"
    assert res["label_suggested"] == CITY and res["score"] == 0.85


def test_close_second_is_flagged_below_the_margin():
    th = {"precision": 0.9, "margin": 0.2, "l1": {"城乡建设、环境保护": 0.3, "卫生、体育": 0.3}, "full": {CITY: 0.3}}
    probs = np.array([0.42, 0.0, 0.0, 0.33, 0.25])
    res = flag({"label": CITY, "label_l1": "城乡建设、环境保护", "score": 0.42, "score_l1": 0.42}, probs, LABELS, th)
    assert res["needs_review"] is True and res["review_reason"] == "close_second"
    probs = np.array([0.8, 0.0, 0.0, 0.1, 0.1])
    res = flag({"label": CITY, "label_l1": "城乡建设、环境保护", "score": 0.8, "score_l1": 0.8}, probs, LABELS, th)
    assert res["needs_review"] is False and res["review_reason"] is None


def test_bad_precision_is_an_error_naming_the_range():
    probs, gold = _probs(50)
    with pytest.raises(ValueError, match=r"precision must be a number in \(0, 1\]"):
        fit_thresholds(probs, gold, LABELS, precision=95)
    with pytest.raises(ValueError, match=r"prior_docs must be a number of documents, 0 or more"):
        fit_thresholds(probs, gold, LABELS, precision=0.9, prior_docs=-5)


def _labelled_file(tmp_path):
    rng = np.random.default_rng(1)
    words = {CITY: "城市规划建设", LAW: "法院审判诉讼", HEALTH: "医院医疗卫生", OTHER: "其他事项"}
    rows = []
    for i in range(40):
        label = list(words)[i % 4]
        text = "。".join(words[label] + str(rng.integers(100)) for _ in range(5))
        rows.append({"id": f"d{i}", "title": "", "text": text, "label": label, "split": "validation"})
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_calibrate_thresholds_stores_them_and_predict_flags_documents(tiny_model_copy, tmp_path, capsys):
    before = TopicClassifier(tiny_model_copy).predict("关于加强城市规划管理的通知")
    assert "needs_review" not in before  # no thresholds: results as before
    data = _labelled_file(tmp_path)
    assert main(["calibrate-thresholds", str(tiny_model_copy), str(data), "--precision", "0.95"]) == 0
    out = capsys.readouterr().out
    assert "first level:" in out and "full label:" in out and "coverage" in out
    record = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))["govtopic"]
    assert record["thresholds"]["precision"] == 0.95 and set(record["thresholds"]["full"]) == set(LABELS)
    results = TopicClassifier(tiny_model_copy).predict(["关于加强城市规划管理的通知", "法院审理案件。", ""])
    assert all(isinstance(r["needs_review"], bool) for r in results[:2])
    assert all(r["review_reason"] in (None, *REASONS) for r in results[:2])
    assert results[2]["label"] is None and "reason" in results[2]  # empty documents keep their reason


def test_impossible_thresholds_send_every_document_to_review(tiny_model_copy):
    update_record(tiny_model_copy, thresholds={"precision": 0.99, "margin": 0.0, "l1": {}, "full": {}})
    results = TopicClassifier(tiny_model_copy).predict(["关于加强城市规划管理的通知", "医院卫生监督"])
    assert all(r["needs_review"] and r["review_reason"] == "class_never_reaches_precision" for r in results)


def test_risk_coverage_trades_coverage_for_precision():
    probs, gold = _probs()
    rc = risk_coverage(probs, gold, LABELS)
    for level in ("l1", "full"):
        at = rc[level]["coverage_at_precision"]
        assert 0 < at["0.99"] <= at["0.95"] <= at["0.9"] < 1
        curve = rc[level]["curve"]
        assert curve[-1][0] == 1.0 and curve[0][1] > curve[-1][1]  # the most confident are more often right
    overall = float(np.mean(scores(probs, LABELS)["full"] == np.array(gold, dtype=object)))
    assert rc["full"]["curve"][-1][1] == pytest.approx(overall, abs=1e-4)


def test_evaluation_report_shows_risk_coverage_beside_the_baseline(tiny_model_dir, tmp_path):
    from govtopic.config import Config
    from govtopic.data import load_eval_file
    from govtopic.evaluation import evaluate_split

    cfg = Config()
    cfg.eval.baseline = True
    data = load_eval_file(_labelled_file(tmp_path), cfg.data, cfg.normalize, None)
    result = evaluate_split(tiny_model_dir, data, tmp_path / "eval", cfg, train_split=data)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    for who in ("metrics", "baseline"):
        assert set(saved[who]["risk_coverage"]["l1"]["coverage_at_precision"]) == {"0.9", "0.95", "0.99"}
    assert (tmp_path / "eval" / "risk_coverage.png").read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "## Risk–coverage" in report and "coverage (baseline)" in report and "risk_coverage.png" in report
    assert result["metrics"]["risk_coverage"]["full"]["documents"] == 40


def test_thresholds_on_documents_they_were_not_fitted_on():
    """held_out gives what the thresholds do on new documents: the same decisions as decide(), counted per
    level; on documents like the fitting ones the precision lands near the target, not by construction."""
    from govtopic.review import held_out

    probs, gold = _probs(seed=0)
    th, _ = fit_thresholds(probs, gold, LABELS, precision=0.9)
    new_probs, new_gold = _probs(seed=1)
    out = held_out(new_probs, new_gold, LABELS, th)
    assert out["precision_target"] == 0.9
    for level in ("l1", "full"):
        precision, coverage = _precision(new_probs, new_gold, th, level)
        assert out[level]["overall"]["coverage"] == pytest.approx(coverage)
        assert out[level]["overall"]["precision"] == pytest.approx(precision)
        assert 0.85 < precision < 0.95 and 0.2 < coverage < 1.0
    # Documents unlike training go to a person whatever their score.
    known = np.where(np.arange(len(new_gold)) % 2 == 0, 0.1, 0.9)
    halved = held_out(new_probs, new_gold, LABELS, th, known_share=known)
    assert halved["unlike_training"] == len(new_gold) // 2
    assert halved["l1"]["overall"]["automatic"] < out["l1"]["overall"]["automatic"]


def test_evaluation_reports_what_the_stored_thresholds_let_through(tiny_model_dir, tmp_path):
    """A model with thresholds: the report's figures are what predict() decides on the same documents."""
    from conftest import with_ngram_channel
    from govtopic.config import Config
    from govtopic.data import load_eval_file
    from govtopic.evaluation import evaluate_split

    model = Path(with_ngram_channel(tiny_model_dir, tmp_path / "model", 5.0))  # knows three of the topics
    path = _labelled_file(tmp_path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    docs = [{"title": r["title"], "text": r["text"]} for r in rows]
    # One first level the model predicts goes to a person always, the others pass.
    counts = Counter(r["label_l1"] for r in TopicClassifier(model).predict(docs))
    refused = min(counts, key=counts.get) if len(counts) > 1 else "其他"
    first_levels = {label.split("\\")[0] for label in LABELS}
    th = {
        "precision": 0.9,
        "margin": 0.0,
        "l1": {c: (None if c == refused else 0.0) for c in first_levels},
        "full": {label: 0.0 for label in LABELS},
    }
    update_record(model, thresholds=th)
    cfg = Config()
    cfg.eval.baseline = False
    data = load_eval_file(path, cfg.data, cfg.normalize, None)
    result = evaluate_split(model, data, tmp_path / "eval", cfg)
    figures = result["metrics"]["thresholds"]
    predicted = TopicClassifier(model).predict(docs)
    automatic = [not r["needs_review"] for r in predicted]
    refused_docs = sum(r["label_l1"] == refused for r in predicted)
    unlike = sum(r["review_reason"] == "unlike_training" for r in predicted)
    assert 0 < refused_docs < len(rows)  # some documents pass, some do not
    expected = sum(r["label_l1"] != refused and r["review_reason"] != "unlike_training" for r in predicted)
    assert figures["l1"]["overall"]["automatic"] == sum(automatic) == expected
    assert figures["unlike_training"] == unlike
    hits = [r["label_l1"] == g["label"].split("\\")[0] for r, g, a in zip(predicted, rows, automatic) if a]
    assert figures["l1"]["overall"]["precision"] == pytest.approx(sum(hits) / len(hits))
    report = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "## The model's thresholds on these documents" in report and "tagged without a person" in report


def test_evaluation_gives_the_thresholds_figures_for_each_source(tiny_model_dir, tmp_path):
    """With --group-by, what the thresholds let through on each group's documents, as predict() decides it."""
    from conftest import with_ngram_channel
    from govtopic.config import Config
    from govtopic.data import load_eval_file
    from govtopic.evaluation import evaluate_split

    model = Path(with_ngram_channel(tiny_model_dir, tmp_path / "model", 5.0))
    path = _labelled_file(tmp_path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for i, r in enumerate(rows):
        r["publisher"] = "甲" if i % 3 else "乙"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    predicted = TopicClassifier(model).predict([{"title": r["title"], "text": r["text"]} for r in rows])
    refused = Counter(r["label_l1"] for r in predicted).most_common()[-1][0]
    first_levels = {label.split("\\")[0] for label in LABELS}
    th = {"precision": 0.9, "margin": 0.0, "l1": {c: (None if c == refused else 0.0) for c in first_levels}}
    update_record(model, thresholds={**th, "full": {label: 0.0 for label in LABELS}})
    cfg = Config()
    cfg.eval.baseline = False
    data = load_eval_file(path, cfg.data, cfg.normalize, None, group_by="publisher")
    figures = evaluate_split(model, data, tmp_path / "eval", cfg)["metrics"]["thresholds"]["per_source"]
    decided = TopicClassifier(model).predict([{"title": r["title"], "text": r["text"]} for r in rows])
    for group in ("甲", "乙"):
        mine = [d for d, r in zip(decided, rows) if r["publisher"] == group]
        assert figures[group]["l1"]["documents"] == len(mine)
        assert figures[group]["l1"]["automatic"] == sum(not d["needs_review"] for d in mine)
    assert sum(figures[g]["l1"]["automatic"] for g in figures) < len(rows)  # the refused class went to a person
    report = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "| 甲: first level |" in report and "| 乙: first level |" in report


def test_a_class_seen_a_few_times_is_judged_with_the_whole_model():
    """Six documents of a class, all right, at scores where the model as a whole is right half the time: alone
    they would earn the class a low threshold; pooled with the whole model (the default) they do not. A class
    seen a thousand times keeps about the threshold its own documents give."""
    rng = np.random.default_rng(0)
    big, small = 1000, 6
    n = big + small
    probs = np.full((n, len(LABELS)), 0.0)
    score = np.concatenate([rng.uniform(0.4, 1.0, big), rng.uniform(0.5, 0.6, small)])
    pred = [CITY] * big + [HEALTH] * small
    # The big class is right when its score is high; half right around 0.5-0.6.
    right = np.concatenate([rng.random(big) < np.clip((score[:big] - 0.3) / 0.6, 0, 1), np.ones(small, bool)])
    gold = [p if r else OTHER for p, r in zip(pred, right)]
    for i, p in enumerate(pred):
        probs[i, LABELS.index(p)] = score[i]
        probs[i, LABELS.index(OTHER)] = (1 - score[i]) * 0.6
        probs[i, LABELS.index(LAW)] = (1 - score[i]) * 0.4
    alone, _ = fit_thresholds(probs, gold, LABELS, precision=0.9, margin=0.0, prior_docs=0)
    pooled, report = fit_thresholds(probs, gold, LABELS, precision=0.9, margin=0.0)
    health = HEALTH.split("\\")[0]
    assert alone["l1"][health] is not None and alone["l1"][health] < 0.6  # six of six right: trusted alone
    assert pooled["l1"][health] is None  # judged with the model, whose documents there are right half the time
    assert "卫生、体育" in report["l1"]["never_automatic"] and report["prior_docs"] == 30
    city = CITY.split("\\")[0]
    assert abs(pooled["l1"][city] - alone["l1"][city]) < 0.05


def test_a_read_only_model_folder_is_refused_before_scoring(tiny_model_copy, tmp_path, monkeypatch, capsys):
    """The thresholds go into the folder's config.json: a folder that cannot take them fails at once, with the
    fix, not after the documents are scored."""
    import os

    import govtopic.thresholds as thresholds

    real_access = os.access
    monkeypatch.setattr(
        thresholds.os, "access", lambda p, mode: False if Path(p) == tiny_model_copy else real_access(p, mode)
    )
    scored = []
    monkeypatch.setattr(thresholds.TopicClassifier, "document_logits", lambda *a, **k: scored.append(1))
    before = (tiny_model_copy / "config.json").read_bytes()
    assert main(["calibrate-thresholds", str(tiny_model_copy), str(_labelled_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "is read-only" in err and "calibrate the copy" in err
    assert not scored and (tiny_model_copy / "config.json").read_bytes() == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_docs": 0}, "min_docs must be a whole number of documents, at least 1"),
        ({"min_docs": -1}, "min_docs must be a whole number of documents, at least 1"),
        ({"prior_docs": float("inf")}, "prior_docs must be a number of documents, 0 or more, and finite"),
    ],
)
def test_threshold_settings_that_would_fail_or_mislead_are_refused(kwargs, message):
    probs, gold = _probs(200)
    with pytest.raises(ValueError, match=message):
        fit_thresholds(probs, gold, LABELS, 0.9, **kwargs)


def test_a_precision_no_class_reaches_says_what_to_do():
    from govtopic.review import format_report

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(LABELS)), 300)
    gold = [LABELS[i] for i in probs.argmin(axis=1)]  # a model that is always wrong
    _, report = fit_thresholds(probs, gold, LABELS, 0.99)
    text = format_report(report)
    assert report["l1"]["overall"]["automatic"] == 0
    assert "every document goes to review. Lower --precision" in text
    _, fine = fit_thresholds(*_probs(), LABELS, 0.9)
    assert "Lower --precision" not in format_report(fine)


def _two_source_model(model: Path, tmp_path: Path, named: bool = True) -> dict[str, int]:
    """Point the tiny model's saved config at two training sources, each with its own validation rows, and a
    third (``notes``) with test rows only; returns the validation rows per source. Unnamed sources are known
    by their file's name."""
    import yaml

    from conftest import TAXONOMY

    words = {CITY: "城市规划建设", LAW: "法院审判诉讼", HEALTH: "医院医疗卫生", OTHER: "其他事项"}
    sizes = {"portal": 12, "laws": 20}
    sources = []
    for name, n_val in [*sizes.items(), ("notes", 0)]:
        rows = []
        for i in range(n_val + 8):
            label = list(words)[i % 4]
            split = "validation" if i < n_val else "test" if name == "notes" else "train"
            rows.append({"id": f"{name}{i}", "title": "", "text": words[label] * 3, "label": label, "split": split})
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        sources.append({"name": name, "file": str(path)} if named else {"file": str(path)})
    cfg_path = model / "govtopic_config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    cfg["data"].update({"sources": sources, "train_file": None, "taxonomy": str(TAXONOMY)})
    cfg_path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return sizes


@pytest.mark.parametrize("named", [True, False])
def test_thresholds_report_each_training_source_and_can_be_fitted_on_one(tiny_model_copy, tmp_path, capsys, named):
    sizes = _two_source_model(tiny_model_copy, tmp_path, named)
    out_json = tmp_path / "coverage.json"
    args = ["calibrate-thresholds", str(tiny_model_copy), "--precision", "0.9", "--output", str(out_json)]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert report["documents"] == sum(sizes.values())
    # What the thresholds let through on each source's own rows, both in the JSON and on the terminal.
    assert {n: v["l1"]["documents"] for n, v in report["per_source"].items()} == sizes
    assert "first level by training source:" in out and "  portal:" in out and "  laws:" in out

    out_json.unlink()
    args[args.index("0.9")] = "0.8"
    assert main([*args, "--source", "portal", "--source", "portal"]) == 0
    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert report["documents"] == sizes["portal"]
    assert report["data"] == "the validation rows of training source(s) portal"
    assert "per_source" not in report  # one source: nothing to break down
    stored = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))["govtopic"]["thresholds"]
    assert stored["precision"] == 0.8  # the thresholds fitted on portal's rows replaced the earlier ones


def test_a_source_the_model_did_not_train_on_is_refused_before_anything_is_stored(tiny_model_copy, tmp_path, capsys):
    _two_source_model(tiny_model_copy, tmp_path)
    before = (tiny_model_copy / "config.json").read_bytes()
    assert main(["calibrate-thresholds", str(tiny_model_copy), "--source", "portl"]) != 0
    err = capsys.readouterr().err
    assert "--source portl" in err and "portal, laws, notes" in err
    assert main(["calibrate-thresholds", str(tiny_model_copy), "--source", "notes"]) != 0
    err = capsys.readouterr().err  # a source with every row in test: nothing to fit on
    assert "--source notes: none of its rows are in this split" in err and "portal (12), laws (20)" in err
    data = _labelled_file(tmp_path)
    assert main(["calibrate-thresholds", str(tiny_model_copy), str(data), "--source", "portal"]) != 0
    assert "not used with a DATA file" in capsys.readouterr().err
    assert main(["calibrate-thresholds", str(tiny_model_copy), "--label-map", str(data)]) != 0
    assert "--label-map reads a DATA file's own label spellings" in capsys.readouterr().err
    assert (tiny_model_copy / "config.json").read_bytes() == before


def test_a_source_under_the_target_is_named_with_the_fix():
    from govtopic.review import format_report

    probs, gold = _probs(400)
    _, report = fit_thresholds(probs, gold, LABELS, precision=0.9)
    report["per_source"] = {
        "official": {"l1": {"documents": 150, "automatic": 110, "coverage": 0.733, "precision": 0.88}},
        "regulations": {"l1": {"documents": 200, "automatic": 180, "coverage": 0.9, "precision": 0.95}},
    }
    lines = format_report(report).splitlines()
    official = next(x for x in lines if x.startswith("  official:"))
    regulations = next(x for x in lines if x.startswith("  regulations:"))
    assert "precision 0.880" in official and "under 0.9" in official and "--source official" in official
    assert "under" not in regulations


def test_source_on_a_model_trained_on_one_file_says_to_leave_it_out(tiny_model_copy, tmp_path, capsys):
    import yaml

    data = _labelled_file(tmp_path)
    cfg_path = tiny_model_copy / "govtopic_config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    cfg["data"].update({"train_file": str(data), "sources": []})
    cfg_path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    assert main(["calibrate-thresholds", str(tiny_model_copy), "--source", "labelled"]) != 0
    err = capsys.readouterr().err
    assert "trained on one file (data.train_file)" in err and "leave --source out" in err
