"""Tests for govtopic.normalize on the real seed documents and on edge cases."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import opencc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govtopic.normalize import NormalizeConfig, describe_changes, normalize, normalize_many

# The shared seed folder next to the repository; the repository's own copy serves a clean clone (CI).
SEED_DIRS = [
    Path(__file__).resolve().parents[1].parent / "shared" / "seeds",
    Path(__file__).resolve().parents[1] / "data" / "seeds",
]
STEP_FIELDS = [f.name for f in dataclasses.fields(NormalizeConfig)]
# Lowercase pinyin with tone marks in round brackets, as the seeds write it.
PINYIN_IN_BRACKETS = re.compile(r"\([a-zāáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜü ]+\)")
FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in ":(),;0123456789"}


@pytest.fixture(scope="module")
def seeds() -> dict[str, str]:
    """The five seed documents keyed by their number ("000" ... "004")."""
    found = [sorted(d.glob("*.txt")) for d in SEED_DIRS]
    files = next((f for f in found if len(f) >= 5), None)
    if files is None:
        pytest.skip(f"the five seed documents (000_*.txt ... 004_*.txt) are in none of {[str(d) for d in SEED_DIRS]}")
    return {f.name[:3]: f.read_text(encoding="utf-8") for f in files}


def without(field: str) -> NormalizeConfig:
    """The default config with one step switched off."""
    return dataclasses.replace(NormalizeConfig(), **{field: False})


def to_full_width(text: str) -> str:
    return text.translate(str.maketrans(FULL_WIDTH))


# ------------------------------------------------------------------ one test per step, on the seeds
def test_nfkc_makes_full_width_punctuation_and_digits_half_width(seeds):
    wide = to_full_width(seeds["000"])
    assert "：" in wide and "（" in wide
    assert normalize(wide) == normalize(seeds["000"])
    kept = normalize(wide, without("nfkc"))
    assert "（一）指导思想" in kept and "(一)" not in kept


def test_pinyin_annotations_removed_and_ordinary_brackets_kept(seeds):
    raw = seeds["002"]
    annotations = len(PINYIN_IN_BRACKETS.findall(raw))
    assert annotations == 190  # the seed really is annotated
    out = normalize(raw)
    assert not PINYIN_IN_BRACKETS.search(out)
    assert out.count("(") == raw.count("(") - annotations  # every other bracket survives
    for kept in ("(简称“三思三创”)", "(2月底前完成)", "(资金)", "(一)"):
        assert kept in out
    assert out.startswith("根据区委关于开展")


@pytest.mark.parametrize(
    "text",
    [
        "崇明区(此件公开发布)",
        "发展(2020)",
        "方案(一)",
        "增长(GDP)",
        "应用(gdp)",
        "使用(app)",
        "系统(v2)",
        "社区(简称“三思三创”)",
        "word(jù)",
    ],
)
def test_pinyin_step_keeps_brackets_that_are_not_pinyin(text):
    assert normalize(text, NormalizeConfig(lowercase_latin=False)) == text


@pytest.mark.parametrize(
    "text",
    [
        "根據(jù)規定",
        "根據（jù）規定",
        "根據(jù)(jù)規定",
        "根據(gēn jù)規定",
        "根據(ju4)規定",
        "根據(gen1ju4)規定",
    ],
)
def test_pinyin_forms_removed(text):
    assert normalize(text) == "根据规定"


def test_pinyin_removed_before_conversion_so_phrases_convert_as_words():
    # OpenCC converts 乾隆 as a name and 瞭解 as a word only when no annotation splits them.
    assert normalize("乾(qián)隆年間,瞭(liǎo)解情況") == "乾隆年间,了解情况"


def test_traditional_converted_to_simplified(seeds):
    out = normalize(seeds["002"])
    assert out.startswith("根据区委关于开展“思进思变思发展、创业创新创一流”(简称“三思三创”)主题教育实践活动")
    assert not set("區據發創業統規現優總體") & set(out)
    assert "總體要求" in normalize(seeds["002"], without("to_simplified"))


def test_metadata_header_removed_from_seed_000_without_leaking_the_label(seeds):
    out = normalize(seeds["000"])
    assert out.startswith("各乡、镇人民政府,区政府各委、办、局,区各直属单位,在崇市属有关部门:\n现将《崇明区")
    for leaked in (
        "主题分类",
        "综合政务-政务公开",
        "索引号",
        "SY0024781711202400009",
        "沪崇府发〔2024〕1号",
        "公开主体",
        "失效日期",
    ):
        assert leaked not in out
    assert "2024年1月2日" in out  # the signature date in the body stays


def test_metadata_header_removed_from_seeds_001_003_004(seeds):
    out1 = normalize(seeds["001"])
    assert out1.startswith("今天上午,省政府新闻办举行新闻发布会")
    assert "原标题" not in out1 and "发表于山东" not in out1 and "2023-11-21" not in out1
    out3 = normalize(seeds["003"])
    assert out3.startswith("市政办政府工作提升增效意见\n\n各镇政府、街道办事处")
    assert out3.count("市政办政府工作提升增效意见") == 1 and "时间:" not in out3
    out4 = normalize(seeds["004"])
    assert out4.startswith("局机关各科室、局属各单位:")
    assert "其他-其他" not in out4 and "主题分类" not in out4


def test_metadata_label_lines_removed_anywhere_but_body_lines_kept(seeds):
    paragraphs = seeds["001"].split("\n")
    middle = len(paragraphs) // 2
    body = paragraphs[:middle] + ["主题分类:\n综合政务-政务公开", "主题词:行政效能"] + paragraphs[middle:]
    out = normalize("\n".join(body))
    assert "主题分类" not in out and "综合政务-政务公开" not in out and "行政效能\n" not in out
    assert out == normalize(seeds["001"])
    # A meeting notice's own 时间 line is body text, not a header: its value is not a bare date.
    notice = "会议通知\n时间:2024年1月1日上午9点\n地点:市政府三楼会议室\n来源于各部门的报告将在会上讨论。"
    assert normalize(notice) == notice


def test_boilerplate_removed_from_the_end(seeds):
    assert normalize(seeds["000"]).endswith("\n6.崇明区深化作风建设专项行动方案")
    assert normalize(seeds["004"]).endswith("\n督查组成员签名:")
    out1 = normalize(seeds["001"])
    assert out1.endswith("\n(山东省人民政府新闻办公室)")
    assert "阅读量" not in out1 and "看评论" not in out1
    out2 = normalize(seeds["002"])
    assert out2.endswith("所带来的新变化。") and "免责声明" not in out2
    for seed in seeds.values():
        assert "请为本文选择" not in normalize(seed)


def test_boilerplate_words_in_the_body_are_kept(seeds):
    paragraphs = seeds["001"].split("\n")
    middle = len(paragraphs) // 2
    line = "来源:省统计局的数据显示,办件时间平均缩短一半。"
    out = normalize("\n".join(paragraphs[:middle] + [line] + paragraphs[middle:]))
    assert line in out


def test_boilerplate_only_stripped_from_the_last_few_lines(seeds):
    raw = seeds["000"]
    line = "来源:区政府办公室"
    # Above the six-line attachment list: part of the document, not its footer.
    out = normalize(raw.replace("附件:1.", line + "\n附件:1."))
    assert line + "\n附件:1." in out


def test_table_debris_removed_and_cell_text_kept(seeds):
    raw = seeds["004"]
    assert "\n|\n" in raw and "牵头部门 |" in raw
    out = normalize(raw)
    assert "|" not in out
    lines = out.split("\n")
    for cell in ("问题清单", "牵头部门", "参与部门", "督查时间", "被督查单位"):
        assert cell in lines
    assert "|||||||" in normalize(raw, without("strip_tables"))
    assert normalize("| 类型 | | 主要问题 |") == "类型 主要问题"
    assert normalize("权威发布|山东推进") == "权威发布|山东推进"  # a lone pipe inside text stays


def test_html_markup_removed(seeds):
    paragraphs = seeds["003"].split("\n\n")
    page = "".join(f"<p class='txt'>{p.replace('服务', '服务&nbsp;', 1)}</p>\n" for p in paragraphs)
    page = "<html><head><style>p {color: red}</style></head><body>" + page + "<!-- end --></body></html>"
    assert normalize(page).replace("服务 ", "服务") == normalize(seeds["003"])
    assert normalize("<p>根据&nbsp;规定</p><br/>第二段&amp;lt;b&amp;gt;") == "根据 规定\n\n第二段"
    assert "<p>" in normalize("<p>根据规定</p>", without("strip_html"))


def test_whitespace_collapsed_but_paragraphs_kept(seeds):
    out = normalize(seeds["003"])
    assert "\n\n" in out and "\n\n\n" not in out
    assert normalize("第一段  \t 内容 \n\n\n\n 第二段\n第三段\n") == "第一段 内容\n\n第二段\n第三段"
    assert normalize(seeds["004"]).count("\n") > 50  # single line breaks (one per cell) survive
    assert "  \t " in normalize("第一段  \t 内容", without("collapse_whitespace"))


def test_control_characters_always_removed(seeds):
    noisy = seeds["001"].replace("\n", "\r\n").replace("。", "。\x00\u200b", 3).replace("山东", "山\x1b东", 2)
    noisy = "\ufeff" + noisy
    assert normalize(noisy) == normalize(seeds["001"])
    all_off = NormalizeConfig(**{name: False for name in STEP_FIELDS})
    assert normalize("根据\x00\x07规定\x9f\r\n下一行\rX", all_off) == "根据规定\n下一行\nX"


@pytest.mark.parametrize(
    ("field", "text", "fragment"),
    [
        ("strip_html", "<p>正文内容</p>", "<p>"),
        ("nfkc", "正文内容：ＡＢＣ１２３", "ＡＢＣ１２３"),
        ("to_simplified", "總體要求", "總體"),
        ("strip_pinyin", "根據(jù)規定", "(jù)"),
        ("strip_metadata", "主题分类:综合政务\n正文内容。", "主题分类"),
        ("strip_boilerplate", "正文内容。\n阅读量:65.0W", "阅读量"),
        ("strip_tables", "问题清单 |\n|||\n正文内容", "|"),
        ("collapse_whitespace", "正文  内容\n\n\n\n下一段", "\n\n\n\n"),
    ],
)
def test_each_switch_controls_its_step(field, text, fragment):
    assert fragment not in normalize(text)
    assert fragment in normalize(text, without(field))


# ------------------------------------------------------------------ invariance users rely on
def test_same_document_with_or_without_header(seeds):
    raw = seeds["000"]
    body = raw[raw.index("各乡、镇人民政府") :]
    expected = normalize(raw)
    assert normalize(body) == expected
    assert normalize("主题分类:综合政务-政务公开\n" + body) == expected
    assert normalize("主题分类：综合政务\n发布日期：2024-01-19\n" + body) == expected


def test_traditional_with_pinyin_normalises_like_simplified(seeds):
    raw = seeds["003"]
    traditional = opencc.OpenCC("s2t").convert(raw)
    assert traditional != raw
    annotated = traditional.replace("政", "政(zhèng)").replace("效", "效(xiào)").replace("發", "發（fā）")
    assert normalize(annotated) == normalize(raw)
    assert normalize(to_full_width(annotated)) == normalize(raw)


def test_simplified_and_traditional_versions_of_seed_002_agree(seeds):
    simplified_first = opencc.OpenCC("t2s").convert(seeds["002"])
    assert normalize(simplified_first) == normalize(seeds["002"])


# ------------------------------------------------------------------ idempotence and edge cases
def test_one_pass_already_reaches_the_fixed_point(seeds):
    # No step undoes or feeds another on real text: a second pass of every step changes nothing.
    for text in [*seeds.values(), "根據(jù)(jù)規定", "<p>第一段</p>\n\n\n<p>第二段 |</p>"]:
        out = normalize(text)
        assert set(describe_changes(out).values()) == {0}


# Pieces that make steps meet: entities that decode to tags, pinyin after pipes, headers after titles.
FRAGMENTS = [
    "據",
    "区",
    "(jù)",
    "（jù）",
    "(zhōng guó)",
    "|",
    " | ",
    "\n",
    "\n\n\n",
    " ",
    "\t",
    "来源:",
    "來源:",
    "主题分类:",
    "综合政务",
    "时间:",
    "2022-06-05 11:39:00",
    "发表于山东",
    "索引号:",
    "<p>",
    "</p>",
    "<br/>",
    "&amp;",
    "&lt;",
    "&gt;",
    "&nbsp;",
    "＆",
    "＜",
    "amp;",
    "lt;",
    "请为本文选择一个合适的主题。",
    "阅读量:5",
    "扫一扫",
    "正文内容,很长的一句话。",
    "标题",
    "\r",
    "\x00",
    "\u200b",
    "😀",
    "é",
    "\u0301",
    "(",
    ")",
    "：",
]
tricky_text = st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join)
any_config = st.builds(NormalizeConfig, **{name: st.booleans() for name in STEP_FIELDS})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), tricky_text, st.lists(st.one_of(st.text(max_size=4), tricky_text)).map("".join)))
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=200, deadline=None)
@given(tricky_text, any_config)
def test_normalize_is_idempotent_with_any_switches(text, config):
    once = normalize(text, config)
    assert normalize(once, config) == once


@pytest.mark.parametrize("text", ["", " ", "\n\n", " \t\n\u3000\xa0 ", "\x00\x1b\u200b"])
def test_empty_and_blank_input_give_empty_string(text):
    assert normalize(text) == ""


def test_emoji_kept_and_stable():
    text = "点赞👍 政府服务😀👨\u200d👩\u200d👧"
    assert normalize(text) == text


def test_lone_surrogates_do_not_crash():
    assert normalize("根據\ud800規定") == "根据规定"


def test_non_str_input_names_the_problem():
    with pytest.raises(TypeError, match="expects a str, got float"):
        normalize(float("nan"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decode bytes first"):
        normalize("正文".encode())  # type: ignore[arg-type]


def test_million_character_document(seeds):
    text = "\n".join(seeds.values()) * 50
    assert len(text) > 1_000_000
    out = normalize(text)
    assert 0 < len(out) < len(text)
    assert "主题分类" not in out and "(jù)" not in out


def test_normalize_many_matches_normalize(seeds):
    texts = list(seeds.values()) + [""]
    config = without("to_simplified")
    assert normalize_many(iter(texts), config) == [normalize(t, config) for t in texts]
    assert normalize_many([]) == []


def test_describe_changes_reports_each_step(seeds):
    raw = seeds["002"]
    report = describe_changes(raw)
    assert list(report) == [
        "strip_html",
        "controls",
        "nfkc",
        "lowercase_latin",
        "strip_pinyin",
        "to_simplified",
        "strip_tables",
        "strip_boilerplate",
        "strip_metadata",
        "collapse_whitespace",
    ]
    assert report["strip_pinyin"] == sum(len(m) for m in PINYIN_IN_BRACKETS.findall(raw))
    assert report["to_simplified"] > 1000
    assert report["strip_metadata"] == 0
    assert describe_changes(seeds["004"])["strip_tables"] > 0
    assert "to_simplified" not in describe_changes(raw, without("to_simplified"))
    # Counts stay per step on a long, repetitive document (a character diff would misalign the copies).
    assert describe_changes(raw * 20)["strip_pinyin"] == 20 * report["strip_pinyin"]


def test_latin_is_lowercased_so_the_vocabulary_knows_it():
    from transformers import AutoTokenizer

    from conftest import TOKENIZER_DIR

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    text = normalize("全年GDP增长5%")
    assert text == "全年gdp增长5%"
    assert tok.unk_token_id not in tok(text)["input_ids"]
    assert normalize("全年GDP增长", NormalizeConfig(lowercase_latin=False)) == "全年GDP增长"
