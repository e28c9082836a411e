"""A document sent without a title is read with the title its text opens with (govtopic.titles.guess_title)."""

from __future__ import annotations

import json

import pytest

from govtopic.normalize import NormalizeConfig, normalize
from govtopic.titles import guess_title

BODY = (
    "各市人民政府，省政府各部门：\n为加强城市规划管理，经省政府同意，现就有关事项通知如下。\n一、总体要求\n"
    + "城市规划工作。" * 200
)


@pytest.mark.parametrize(
    "text, title",
    [
        ("关于加强城市规划管理的通知\n" + BODY, "关于加强城市规划管理的通知"),
        (
            "河北省人民政府办公厅关于印发河北省重污染天气应急预案的通知\n" + BODY,
            "河北省人民政府办公厅关于印发河北省重污染天气应急预案的通知",
        ),
        # a title wrapped over two lines, after the signature and the date of a cover note
        (
            "局属各单位:\n现将工作方案印发给你们。\n上海市某区民政局\n2018年9月12日\n关于开展优化营商环境“大整改”\n专项行动的工作方案\n为深入贯彻……",
            "关于开展优化营商环境“大整改”专项行动的工作方案",
        ),
        ("（此件公开发布）\n崇明区提升政府效能行动方案\n为提升政府行政效能……", "崇明区提升政府效能行动方案"),
        ("城市规划管理办法（试行）\n第一条 为了……", "城市规划管理办法（试行）"),
        # no heading line: the document a cover note hands on
        ("各区人民政府:\n现将《城市规划管理办法》印发给你们,请遵照执行。\n" + BODY, "城市规划管理办法"),
    ],
)
def test_the_title_a_text_opens_with_is_found(text, title):
    assert guess_title(text) == title


@pytest.mark.parametrize(
    "text",
    [
        BODY,  # opens with the addressees, then sentences
        "今天上午，省政府新闻办举行新闻发布会，介绍有关工作情况。\n记者提问。",
        "一、总体要求\n（一）指导思想\n坚持以人民为中心。",
        "",
    ],
)
def test_a_text_without_a_title_gets_none(text):
    assert guess_title(text) == ""


def test_a_title_deep_in_the_body_is_not_taken_for_the_documents_title():
    text = "\n".join(f"第{i}段，工作要求如下。" for i in range(20)) + "\n关于加强城市规划管理的通知\n"
    assert guess_title(text) == ""


def test_a_txt_document_is_read_as_if_its_title_were_given(tiny_model_dir):
    from govtopic.predict import TopicClassifier

    clf = TopicClassifier(tiny_model_dir)
    title = "关于加强城市规划管理的通知"
    as_txt = clf.predict(title + "\n" + BODY, top_k=3)
    given = clf.predict({"title": title, "text": title + "\n" + BODY}, top_k=3)
    assert as_txt["guessed_title"] == title
    assert "guessed_title" not in given  # a given title is never replaced
    assert as_txt["top_k"] == given["top_k"]
    assert as_txt["windows"] == given["windows"]  # the title window is read in both


def test_title_from_text_off_reads_the_body_alone(tiny_model_copy):
    from govtopic.predict import TopicClassifier

    config = json.loads((tiny_model_copy / "config.json").read_text(encoding="utf-8"))
    config["govtopic"]["long_doc"]["title_from_text"] = False
    (tiny_model_copy / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    clf = TopicClassifier(tiny_model_copy)
    assert clf.long_doc.title_from_text is False
    result = clf.predict("关于加强城市规划管理的通知\n" + BODY)
    assert "guessed_title" not in result
    assert result["windows"] == clf.predict({"text": "关于加强城市规划管理的通知\n" + BODY})["windows"]


def test_a_seed_document_gets_its_heading_as_title(seed_texts):
    """The real documents users send: a heading line survives normalisation and is found."""
    found = {name: guess_title(normalize(text, NormalizeConfig())) for name, text in seed_texts.items()}
    assert "市政办政府工作提升增效意见" in found.values()
