"""predict() and TopicClassifier on a tiny random model: shapes, order, long documents, errors, threads."""

import dataclasses
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import LABELS
from govtopic import TopicClassifier, predict
from govtopic.config import LongDocConfig
from govtopic.predict import get_classifier

DOCS = ["关于加强城市规划管理的通知。" * k for k in (1, 3, 40, 2, 120, 5)] + ["法院审理案件。", "医院卫生监督"]


def test_str_gives_one_result_list_gives_list(tiny_model_dir):
    one = predict("关于加强城市规划管理的通知", model=tiny_model_dir)
    assert isinstance(one, dict) and one["label"] in LABELS
    assert one["label_l1"] == one["label"].split("\\")[0]
    assert 0 < one["score"] <= one["score_l1"] <= 1
    many = predict(DOCS, model=tiny_model_dir)
    assert isinstance(many, list) and len(many) == len(DOCS)
    assert predict([], model=tiny_model_dir) == []


def test_order_is_the_callers_whatever_the_batching(tiny_model_dir):
    clf = TopicClassifier(tiny_model_dir)
    alone = [clf.predict(d) for d in DOCS]
    order = list(range(len(DOCS)))
    random.Random(0).shuffle(order)
    shuffled = clf.predict([DOCS[i] for i in order], batch_size=3)
    for pos, i in enumerate(order):
        assert shuffled[pos]["label"] == alone[i]["label"]
        assert shuffled[pos]["score"] == pytest.approx(alone[i]["score"], abs=1e-4)


def test_top_k_alternatives_and_first_level_sums(tiny_model_dir):
    res = predict(DOCS[0], model=tiny_model_dir, top_k=3)
    assert [a["label"] for a in res["top_k"]][0] in LABELS and len(res["top_k"]) == 3
    scores = [a["score"] for a in res["top_k"]]
    assert scores == sorted(scores, reverse=True)
    full = TopicClassifier(tiny_model_dir).predict(DOCS[0], top_k=len(LABELS))["top_k"]
    city = sum(a["score"] for a in full if a["label"].startswith("城乡建设、环境保护\\"))
    l1 = {a["label"]: a["score"] for a in res["top_k_l1"]}
    assert l1["城乡建设、环境保护"] == pytest.approx(city, abs=1e-5)
    assert res["label_l1"] == res["top_k_l1"][0]["label"]  # the two levels agree


def test_long_document_is_read_whole_with_chunks(tiny_model_dir):
    long_doc = "第一章 总则。" * 60  # 360 tokens: 7 windows of 64, within the cap
    res = predict(long_doc, model=tiny_model_dir)
    assert 1 < res["windows"] <= LongDocConfig().max_windows and res["truncated"] is False
    head = predict(long_doc, model=tiny_model_dir, long_doc="head")
    assert head["windows"] == 1 and head["truncated"] is True


def test_window_cap_is_reported(tiny_model_dir):
    res = predict("很长的文件。" * 100_000, model=tiny_model_dir)  # 600,000 characters
    assert res["label"] in LABELS and res["truncated"] is True and res["windows"] == LongDocConfig().max_windows


def test_evidence_points_into_the_document(tiny_model_dir):
    text = "城市规划管理。" * 100 + "法院审理刑事案件。" * 100
    res = predict(text, model=tiny_model_dir, return_evidence=True)
    ev = res["evidence"]
    assert 0 <= ev["start"] < ev["end"] <= len(text)
    assert ev["text"] == text[ev["start"] : ev["end"]]


def test_empty_documents_get_no_topic(tiny_model_dir):
    res = predict(["", "   \n\t", "正常的通知"], model=tiny_model_dir)
    assert res[0]["label"] is None and res[0]["reason"] == "empty document"
    assert res[1]["label"] is None and res[1]["score"] is None
    assert res[2]["label"] in LABELS


def test_documents_of_punctuation_alone_get_no_topic(tiny_model_dir):
    res = predict(["。。，，！？", {"title": "……", "text": "——（）"}, "第1条。", "☎"], model=tiny_model_dir)
    for r in res[:2]:
        assert r["label"] is None and r["score"] is None and "only punctuation" in r["reason"]
    assert res[2]["label"] in LABELS  # a digit or a character is a word
    assert "only punctuation" not in (res[3].get("reason") or "")  # a symbol is left to the unknown-character check


def test_a_title_longer_than_its_window_is_reported_as_truncated(tiny_model_dir):
    """A body pasted into the title field is read only as far as the title window goes: the result says so."""
    long_title = "关于加强城市规划管理工作的通知" * 40
    res = predict(
        [
            {"title": long_title, "text": "各区人民政府。"},
            {"title": "关于加强城市规划管理的通知", "text": "各区人民政府。"},
        ],
        model=tiny_model_dir,
    )
    assert res[0]["truncated"] is True
    assert res[1]["truncated"] is False


@pytest.mark.parametrize(
    "bad, where",
    [
        ([None], "position 0"),
        (["ok", 3], "position 1"),
        (["ok", ["nested"]], "position 1"),
        ([b"bytes"], "decode bytes"),
    ],
)
def test_bad_input_types_name_the_position(tiny_model_dir, bad, where):
    with pytest.raises(TypeError, match=where):
        predict(bad, model=tiny_model_dir)


def test_bytes_document_is_a_type_error(tiny_model_dir):
    with pytest.raises(TypeError, match="decode"):
        predict(b"\xe4\xb8\xad", model=tiny_model_dir)


def test_model_from_environment_and_missing_model(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("GOVTOPIC_MODEL", str(tiny_model_dir))
    assert predict("城市规划")["label"] in LABELS
    monkeypatch.delenv("GOVTOPIC_MODEL")
    with pytest.raises(ValueError, match="GOVTOPIC_MODEL.*govtopic train"):
        predict("城市规划")


def test_model_is_loaded_once(tiny_model_dir):
    assert get_classifier(tiny_model_dir) is get_classifier(str(tiny_model_dir))


def test_threads_give_the_same_results_as_sequential_calls(tiny_model_dir):
    clf = TopicClassifier(tiny_model_dir)
    expected = [clf.predict(d)["label"] for d in DOCS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda d: clf.predict(d)["label"], DOCS * 4))
    assert got == expected * 4


def test_folder_loads_with_transformers(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, pipeline

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    assert set(model.config.id2label.values()) == set(LABELS)
    out = pipeline("text-classification", model=str(tiny_model_dir), device="cpu")("城市规划管理")
    assert out[0]["label"] in LABELS


def test_messy_input_is_handled(tiny_model_dir):
    docs = [
        "<p>关于&nbsp;城市规划</p><br/>的通知",
        "控制\x00字符\x07与😀表情 mixed English 文字",
        "索引号:\nSY001\n主题分类:\n其他",
    ]
    res = predict(docs, model=tiny_model_dir)
    assert res[0]["label"] in LABELS and res[1]["label"] in LABELS
    # Only a metadata header: nothing is left to classify, so no topic is invented.
    assert res[2]["label"] is None and "normalisation" in res[2]["reason"]


@pytest.mark.slow
def test_million_character_document_in_bounded_memory(tiny_model_dir):
    import subprocess
    import sys

    code = (
        "import resource, sys\n"
        "from govtopic import predict\n"
        "doc = '第一条 本市加强城市规划管理，GDP增长。' * 50000\n"
        "r = predict(doc, model=sys.argv[1])\n"
        "print(len(doc), r['windows'], r['truncated'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    chars, windows, truncated, peak_kb = out.stdout.split()
    assert int(chars) >= 1_000_000 and int(windows) == LongDocConfig().max_windows and truncated == "True"
    assert int(peak_kb) < 2_000_000  # well under 2 GB for a 1,000,000-character document


def test_first_alternative_is_the_returned_label(tiny_model_dir):
    for res in predict(DOCS, model=tiny_model_dir, top_k=4):
        assert res["top_k"][0]["label"] == res["label"]
        assert res["top_k_l1"][0]["label"] == res["label_l1"]


def test_text_with_no_readable_characters_gets_no_topic(tiny_model_dir):
    res = predict("\u200d", model=tiny_model_dir)  # a zero-width joiner survives normalisation, no token
    assert res["label"] is None and res["reason"]


def test_same_document_in_any_dress_gets_the_same_prediction(tiny_model_dir, seed_texts):
    import opencc

    body = seed_texts["003_3d56d1888d1ed129.txt"]
    header = "索引号:\nSY0024781711202400009\n主题分类:\n综合政务-政务公开\n公开主体:\n上海市崇明区人民政府办公室\n"
    traditional = opencc.OpenCC("s2t").convert(body)
    annotated = traditional.replace("據", "據(jù)").replace("發", "發(fā)")
    res = predict([body, header + body, traditional, annotated], model=tiny_model_dir, top_k=3)
    assert len({r["label"] for r in res}) == 1
    for r in res[1:]:
        assert r["score"] == pytest.approx(res[0]["score"], abs=1e-5)


def test_head_reads_the_same_text_as_whole_document_normalisation(tiny_model_dir):
    """head/head_tail normalise only the ends of a long document; the windows must not change."""
    from govtopic.normalize import normalize
    from govtopic.strategies import encode

    clf = TopicClassifier(tiny_model_dir)
    body = "".join(f"第{i}条 根據(jù)本市規定，加強城市規劃管理，GDP增長{i}%。\n" for i in range(400))
    doc = "索引号:\nSY001\n主题分类:\n其他\n" + body + "阅读量:12\n"
    for strategy in ("head", "head_tail"):
        cfg = dataclasses.replace(clf.long_doc, strategy=strategy)
        fast = encode(clf.tokenizer, [clf.normalize_for(doc, cfg)], cfg).input_ids
        whole = encode(clf.tokenizer, [normalize(doc, clf.normalize_config)], cfg).input_ids
        assert fast == whole
