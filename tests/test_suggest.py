"""Which documents to label next: unsure documents first, spread over what the pool holds, from the CLI too."""

import json
import logging

import numpy as np
import pytest

from conftest import TOPIC_WORDS, with_ngram_channel
from govtopic.cli import main
from govtopic.suggest import margins, select, suggest

CITY, LAW, HEALTH = (TOPIC_WORDS[k] for k in TOPIC_WORDS)


@pytest.fixture(scope="module")
def trained_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with an n-gram channel fitted on three clear topics and a large weight: it knows them."""
    return with_ngram_channel(tiny_model_dir, tmp_path_factory.mktemp("suggest") / "model", 8.0)


def _doc(words: str, i: int, n: int = 8) -> str:
    w = words.split()
    return "。".join(f"本条例{w[(i + k) % len(w)]}{w[(i + 2 * k + 1) % len(w)]}有关工作" for k in range(n))


def _pool() -> list[dict]:
    """Clear documents of each topic, and documents mixing two topics half and half."""
    pool = [
        {"id": f"{name}{i}", "text": _doc(words, i)}
        for i in range(6)
        for name, words in (("city", CITY), ("law", LAW), ("health", HEALTH))
    ]
    pool.append({"id": "mixed-city-health", "text": _doc(CITY, 0, 4) + "。" + _doc(HEALTH, 1, 4)})
    pool.append({"id": "mixed-law-health", "text": _doc(LAW, 2, 4) + "。" + _doc(HEALTH, 3, 4)})
    return pool


def test_suggest_returns_budget_distinct_documents_of_the_pool_most_useful_first(trained_model):
    pool = _pool()
    picks = suggest(trained_model, pool, budget=5)
    ids = [p["id"] for p in picks]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert set(ids) <= {d["id"] for d in pool}
    assert [p["rank"] for p in picks] == [1, 2, 3, 4, 5]
    assert [p["score"] for p in picks] == sorted((p["score"] for p in picks), reverse=True)
    assert all("margin" in p["reason"] and p["label_l1"] for p in picks)


def test_a_document_the_model_is_unsure_of_ranks_above_the_ones_it_knows(trained_model):
    pool = _pool()
    picks = suggest(trained_model, pool, budget=len(pool), oversample=1)
    rank = {p["id"]: p["rank"] for p in picks}
    clear = [rank[d["id"]] for d in pool if not d["id"].startswith("mixed")]
    assert rank["mixed-city-health"] < min(clear) and rank["mixed-law-health"] < min(clear)
    assert picks[0]["score"] > picks[-1]["score"]


def test_near_copies_of_one_unsure_document_are_suggested_once():
    """Five near-copies are the most uncertain; margin alone picks three of them, diversity picks one."""
    copies = [f"关于加强城市医院建设管理的通知 第{i}号" for i in range(5)]
    others = ["关于开展法院审判监督工作的意见", "关于做好药品价格管理的通知", "关于规范律师执业的规定"]
    sure = [f"城市规划建设用地许可{i}" for i in range(6)]
    texts = copies + others + sure
    margin = np.array([0.01, 0.011, 0.012, 0.013, 0.014, 0.05, 0.06, 0.07] + [0.9] * 6)
    alone = select(margin, texts, budget=3, oversample=1)
    assert [p["index"] for p in alone] == [0, 1, 2]
    picks = select(margin, texts, budget=3, oversample=3)
    chosen = [p["index"] for p in picks]
    assert sum(i < 5 for i in chosen) == 1 and chosen[0] == 0  # the most uncertain copy, once, first
    assert len({p["cluster"] for p in picks}) == 3


def test_first_level_margin_sums_the_second_levels():
    labels = ["城乡建设、环境保护\\城市规划", "城乡建设、环境保护\\环境监测、保护与治理", "卫生、体育\\卫生"]
    probs = np.array([[0.45, 0.45, 0.10], [0.50, 0.0, 0.50]])
    assert margins(probs, labels, "l1") == pytest.approx([0.8, 0.0])
    assert margins(probs, labels, "full") == pytest.approx([0.0, 0.0])


def test_a_budget_larger_than_the_pool_takes_every_readable_document_and_says_so(trained_model, caplog):
    pool = [_doc(CITY, 1), _doc(HEALTH, 2), "", "   "]
    with caplog.at_level(logging.WARNING, logger="govtopic.suggest"):
        picks = suggest(trained_model, pool, budget=10)
    assert sorted(p["id"] for p in picks) == ["0", "1"]  # empty documents are never suggested
    assert "budget 10 is more than the 2 readable pool documents" in caplog.text


@pytest.mark.parametrize("budget", [0, -3, 2.5, True])
def test_a_budget_that_is_not_a_positive_count_is_refused(trained_model, budget):
    with pytest.raises(ValueError, match="budget must be a whole number of documents, at least 1"):
        suggest(trained_model, [_doc(CITY, 1)], budget=budget)


def test_an_empty_pool_is_refused(trained_model):
    with pytest.raises(ValueError, match="the pool is empty"):
        suggest(trained_model, [], budget=3)
    with pytest.raises(ValueError, match="none of the 2 pool documents can be read"):
        suggest(trained_model, ["", " "], budget=3)


# ---------------------------------------------------------------- govtopic suggest
def _write_pool(path, pool):
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in pool), encoding="utf-8")
    return str(path)


def test_cli_writes_the_picks_as_jsonl(trained_model, tmp_path, capsys):
    pool = _write_pool(tmp_path / "pool.jsonl", _pool())
    out = tmp_path / "to_label.jsonl"
    assert main(["suggest", trained_model, pool, "--budget", "4", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert len({r["id"] for r in rows}) == 4
    assert all(r["text"] and r["source"].startswith(pool) and r["reason"] for r in rows)
    assert str(out) in capsys.readouterr().out
    # A second run replaces its own file.
    assert main(["suggest", trained_model, pool, "--budget", "2", "--output", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2


def test_cli_refuses_bad_budgets_an_empty_pool_and_files_it_did_not_write(trained_model, tmp_path, capsys):
    pool = _write_pool(tmp_path / "pool.jsonl", _pool())
    out = str(tmp_path / "to_label.jsonl")
    assert main(["suggest", trained_model, pool, "--budget", "0", "--output", out]) == 2
    assert "--budget must be at least 1" in capsys.readouterr().err
    empty = _write_pool(tmp_path / "empty.jsonl", [])
    assert main(["suggest", trained_model, empty, "--budget", "3", "--output", out]) == 2
    assert "the pool is empty" in capsys.readouterr().err
    mine = tmp_path / "notes.jsonl"
    mine.write_text("my own notes\n", encoding="utf-8")
    assert main(["suggest", trained_model, pool, "--budget", "3", "--output", str(mine)]) == 2
    assert "was not written by govtopic" in capsys.readouterr().err
    assert mine.read_text(encoding="utf-8") == "my own notes\n"
    assert main(["suggest", trained_model, pool, "--budget", "3", "--output", pool]) == 2
    assert "also an input" in capsys.readouterr().err


def test_cli_says_when_the_budget_is_more_than_the_pool(trained_model, tmp_path, capsys):
    pool = _write_pool(tmp_path / "pool.jsonl", _pool()[:3])
    out = tmp_path / "to_label.jsonl"
    assert main(["suggest", trained_model, pool, "--budget", "50", "--output", str(out)]) == 0
    assert "budget 50 is more than the 3 readable documents" in capsys.readouterr().err
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
