"""Text normalisation shared by training, evaluation and prediction, one switchable step per config field.

Steps run in this order, because each relies on the ones before it:

1. ``strip_html``: decode entities and drop tags first, so ``&#65306;`` or ``&nbsp;`` reach NFKC.
2. control characters (always): they break tokenizers, and OpenCC cannot encode lone surrogates.
3. ``nfkc``: full-width ``：（）`` become ``:()``, so every later pattern only needs the ASCII forms.
4. ``strip_pinyin``: before ``to_simplified``, so OpenCC's phrase tables see whole words: ``乾(qián)隆``
   would become ``干隆``, while ``乾隆`` stays ``乾隆``.
5. ``to_simplified``: OpenCC t2s, so the line patterns below mostly meet Simplified text.
6. ``strip_tables``, 7. ``strip_boilerplate``, 8. ``strip_metadata``: line-level deletions, tables first so
   that a header line ending in ``" |"`` still reads as a header, and the header last so that it is read
   from the lines that remain. Footer and header keys also match their Traditional spellings, so switching
   ``to_simplified`` off leaves these steps working.
9. ``collapse_whitespace``: last, to tidy the gaps the deletions leave.

``normalize`` repeats the pipeline until the text stops changing (real documents are stable after one pass;
contrived input, such as an entity that decodes to a tag, can need another), so ``normalize`` is idempotent.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import opencc


@dataclass
class NormalizeConfig:
    # Unicode NFKC: full-width ASCII, digits and punctuation become half-width; compatibility forms unify.
    nfkc: bool = True
    # Traditional -> Simplified via OpenCC t2s; the pretrained vocabulary covers Simplified best.
    to_simplified: bool = True
    # Remove pinyin annotations in brackets after characters: 根據(jù) -> 根據.
    strip_pinyin: bool = True
    # Remove the metadata header (索引号, 主题分类, 发布日期, 来源 ...) and 主题分类/主题词 lines anywhere,
    # so no label text leaks into the input.
    strip_metadata: bool = True
    # Remove the topic-request sentence anywhere and page footers (来源:, 阅读量, 免责声明 ...) at the end.
    strip_boilerplate: bool = True
    # Remove table debris: lines of only "|" and whitespace, "|" at line ends, runs of "|" inside lines.
    strip_tables: bool = True
    # Collapse runs of spaces/tabs to one space and 3+ line breaks to one blank line; strip line ends.
    collapse_whitespace: bool = True
    # Drop HTML tags (block tags become line breaks) and decode entities such as &nbsp; left by scraping.
    strip_html: bool = True
    # Lowercase ASCII letters: the bert-base-chinese vocabulary has no uppercase Latin, so "GDP" would be [UNK].
    lowercase_latin: bool = True


# Header keys removed at the start of a document, with their value on the same or the next line.
# Extend here; Traditional spellings are derived automatically.
METADATA_KEYS: tuple[str, ...] = (
    "索引号",
    "主题分类",
    "主题词",
    "公开主体",
    "发布机构",
    "发文机关",
    "发文字号",
    "文号",
    "成文日期",
    "发布日期",
    "生效日期",
    "失效日期",
    "有效性",
    "公开方式",
    "公开范围",
    "体裁分类",
    "组配分类",
    "来源",
    "信息来源",
    "文章来源",
    "时间",
    "发布时间",
    "日期",
    "作者",
    "原标题",
    "标题",
    "编辑",
    "责任编辑",
)
# Keys whose value must look like a date or time: "时间:上午9点在三楼开会" is body text, not a header.
DATE_KEY_SUFFIXES: tuple[str, ...] = ("日期", "时间")
# Header keys written without a colon ("发表于山东").
COLONLESS_METADATA_KEYS: tuple[str, ...] = ("发表于",)
# Keys that can carry the label itself: removed wherever they start a line, not only in the header.
LABEL_KEYS: tuple[str, ...] = ("主题分类", "主题词")
# Footer lines "key: ..." removed from the end of a document.
FOOTER_KEYS: tuple[str, ...] = (
    "来源",
    "信息来源",
    "文章来源",
    "阅读量",
    "阅读数",
    "浏览量",
    "浏览次数",
    "点击数",
    "访问量",
    "免责声明",
    "责任编辑",
    "编辑",
    "审核",
    "校对",
    "版权所有",
    "主办单位",
    "网站标识码",
)
# Short footer lines containing one of these are removed from the end of a document.
FOOTER_PHRASES: tuple[str, ...] = (
    "看评论",
    "扫一扫",
    "分享到",
    "打印本页",
    "打印此页",
    "关闭窗口",
    "关闭本页",
    "【打印】",
    "【关闭】",
    "收藏本页",
    "返回顶部",
    "上一篇",
    "下一篇",
    "相关链接",
)
# The dataset's instruction to annotators; removed wherever it appears.
REQUEST_SENTENCES: tuple[str, ...] = (
    "为了便于其他人查询和了解政策,请为本文选择一个合适的主题。",
    "请为本文选择一个合适的主题。",
    "请为本文选择一个合适的主题",
)
# Words every request sentence contains (same in both scripts): a text without them skips the two searches.
_REQUEST_HINT = "本文" if all("本文" in s for s in REQUEST_SENTENCES) else ""

# The end of a document is scanned upwards until this many non-footer lines have been kept, or a long one.
_TAIL_KEPT_LINES = 3
_TAIL_LONG_LINE = 60
_FOOTER_PHRASE_LINE = 30
# A value on its own line after an empty header key is short and not a sentence.
_MAX_VALUE_CHARS = 40
_SENTENCE_PUNCT = re.compile(r"[,，。;；!！?？:：]")
# Contrived input settles within a couple of passes; the bound only guards against pathological nesting.
_MAX_PASSES = 4

_HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
# Line breaks in other spellings become "\n"; other C0/C1 controls, lone surrogates and invisible
# format characters are deleted. U+200D is kept because emoji sequences need it.
_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff\u00ad\u200b\u200c\u200e\u200f\u2060\ufeff]")

# (opening, closing) of blocks whose content is not text.
_HTML_HIDDEN = tuple(
    (re.compile(a, re.I), re.compile(b, re.I))
    for a, b in ((r"<!--", r"-->"), (r"<script\b", r"</script\s*>"), (r"<style\b", r"</style\s*>"))
)
_HTML_BREAK = re.compile(r"</?(?:p|br|div|li|tr|h[1-6]|table|ul|ol|hr|section|article)\b[^<>]*>", re.I)
_HTML_CELL = re.compile(r"</?t[dh]\b[^<>]*>", re.I)
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>|<![A-Za-z][^<>]*>")
# "&amp;" chains are double-escaping: "&amp;amp;lt;" decodes straight to "<".
_ENTITY = re.compile(r"&(?:amp;)*(#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")

_TONED = "āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜńňǹḿ"
# A syllable has a vowel, so "(v2)" or "(gdp)" is not pinyin; the group needs a tone mark or tone digit,
# so plain lowercase words such as "(app)" are kept.
# Syllables are split by a separator or after a tone digit, never by guessing, so a failed match cannot
# backtrack through every way of cutting a long run of letters.
_SYLLABLE = rf"[bcdfghjklmnpqrstwxyz]*[aeiouü{_TONED}][a-zü{_TONED}]*[1-5]?"
_PINYIN_INSIDE = rf" ?(?=[^)）\n]*[{_TONED}1-5]){_SYLLABLE}(?:(?:[ '’-]|(?<=[1-5])){_SYLLABLE}){{0,7}} ?[)）]"
_PINYIN_GROUP = rf"[(（]{_PINYIN_INSIDE}"
# Repeated groups ("據(jù)(jù)") go together, or the second would be found only on the next pass. The match
# starts at the bracket, with the character before it checked behind: the same matches as a pattern opening
# with that check, but the regex engine jumps from bracket to bracket instead of trying every position.
_PINYIN = re.compile(rf"[(（](?<=[{_HAN}][(（]){_PINYIN_INSIDE}(?:{_PINYIN_GROUP})*")

_PIPE_RUN = re.compile(r"\|(?:[^\S\n]*\|)+")
# Characters trimmed from the ends of a table line: pipes and every kind of space (str.strip stays linear
# where an end-anchored regex would backtrack on long runs of pipes).
_CELL_EDGE = "|" + "".join(c for c in map(chr, range(0x3001)) if c.isspace() and c != "\n")

# No two optional spaces side by side: on a line with a long run of spaces they would backtrack for ages.
_DATE = r"\d{4} ?[-/.年] ?\d{1,2} ?[-/.月] ?\d{1,2}日?"
_TIME = r"\d{1,2}:\d{2}(?::\d{2})?"
_DATE_OR_TIME = rf"(?:{_DATE}(?:\s*{_TIME})?|{_TIME})"
_DATE_LINE = re.compile(rf"\s*{_DATE_OR_TIME}\s*")
_SPACES = re.compile(r"[^\S\n]+")
_UPPER_LATIN = re.compile(r"[A-Z]+")
_BLANK_LINES = re.compile(r"\n{3,}")

_converters: dict[str, opencc.OpenCC] = {}


def _converter(name: str) -> opencc.OpenCC:
    """A shared OpenCC converter, created on first use (creating one reads its dictionaries).

    Two threads may both create one at first; ``setdefault`` is atomic, so both then use the same.
    """
    conv = _converters.get(name)
    if conv is None:
        try:
            # The "tofu risk" dictionaries map rare characters to rarer ones that fonts and the BERT
            # vocabulary lack; without them such characters are left as they are.
            conv = opencc.OpenCC(name, include_tofu_risk_dictionaries=False)
        except TypeError:  # opencc releases before 1.2 have no such option
            conv = opencc.OpenCC(name)
        conv = _converters.setdefault(name, conv)
    return conv


def _both_scripts(phrase: str) -> str:
    """A regex matching ``phrase`` in Simplified, Traditional or Taiwan spelling, character by character."""
    parts = []
    for ch in phrase:
        forms = {ch, _converter("s2t").convert(ch), _converter("s2tw").convert(ch)}
        parts.append(re.escape(ch) if len(forms) == 1 else "[" + "".join(sorted(forms)) + "]")
    return "".join(parts).replace(":", "[:：]").replace(",", "[,，]")


def _alternatives(phrases: Iterable[str]) -> str:
    # Longest first, so "发布日期" is not read as "发布" plus the rest.
    return "|".join(_both_scripts(p) for p in sorted(phrases, key=len, reverse=True))


@dataclass(frozen=True)
class _LinePatterns:
    key: re.Pattern[str]
    date_key: re.Pattern[str]
    date_value: re.Pattern[str]
    label_key: re.Pattern[str]
    footer: re.Pattern[str]
    footer_phrase: re.Pattern[str]
    request_line: re.Pattern[str]
    request: re.Pattern[str]


@lru_cache(maxsize=1)
def _line_patterns() -> _LinePatterns:
    """Patterns built from the key tuples above (once: deriving Traditional spellings needs OpenCC)."""
    keys = _alternatives(METADATA_KEYS)
    colonless = _alternatives(COLONLESS_METADATA_KEYS)
    footer = _alternatives(FOOTER_KEYS)
    request = _alternatives(REQUEST_SENTENCES)
    return _LinePatterns(
        # Matched against stripped lines, so no trailing \s* that would backtrack against ".*".
        key=re.compile(rf"(?P<key>{keys})\s*[:：]\s*(?P<value>.*)|(?:{colonless})\S.*"),
        date_key=re.compile(rf"(?:{_alternatives(DATE_KEY_SUFFIXES)})$"),
        # A date, optionally followed by more keys on the same line ("2023-11-21 16:28 来源:山东发布").
        date_value=re.compile(rf"{_DATE_OR_TIME}\s*(?:(?:{keys}|{footer})\s*[:：].*)?"),
        label_key=re.compile(rf"(?:{_alternatives(LABEL_KEYS)})\s*[:：]\s*(?P<value>.*)"),
        footer=re.compile(rf"\s*(?:{footer})\s*[:：]"),
        footer_phrase=re.compile(_alternatives(FOOTER_PHRASES)),
        request_line=re.compile(rf"^[^\S\n]*(?:{request})[^\S\n]*(?:\n|$)", re.M),
        request=re.compile(request),
    )


def _strip_html(text: str) -> str:
    if "<" not in text and "&" not in text:
        return text
    text = _ENTITY.sub(lambda m: html.unescape(f"&{m.group(1)};"), text)
    for opening, closing in _HTML_HIDDEN:
        text = _drop_blocks(text, opening, closing)
    text = _HTML_BREAK.sub("\n", text)
    text = _HTML_CELL.sub(" ", text)
    return _HTML_TAG.sub("", text)


def _drop_blocks(text: str, opening: re.Pattern[str], closing: re.Pattern[str]) -> str:
    """``text`` without its opening...closing blocks, in linear time even if a block is never closed."""
    parts, pos = [], 0
    while (start := opening.search(text, pos)) is not None:
        end = closing.search(text, start.end())
        if end is None:  # no later block can be closed either
            break
        parts.append(text[pos : start.start()])
        pos = end.end()
    parts.append(text[pos:])
    return "".join(parts)


def _remove_controls(text: str) -> str:
    return _CONTROLS.sub("", _LINE_BREAKS.sub("\n", text))


def _nfkc(text: str) -> str:
    # The quick check is far cheaper than normalising, and most text (every second pass) is already NFKC.
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


def _strip_pinyin(text: str) -> str:
    if "(" not in text and "（" not in text:
        return text
    return _PINYIN.sub("", text)


def _to_simplified(text: str) -> str:
    conv = _converter("t2s")
    out = conv.convert(text)
    # A few mappings chain (薴 -> 苧 -> 苎); converting again reaches the end of the chain.
    return out if out == text else conv.convert(out)


def _strip_tables(text: str) -> str:
    if "|" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        if "|" in line:
            # A space, not nothing: gluing cells together could put a character right before "(pīn)".
            line = _PIPE_RUN.sub(" ", line).strip(_CELL_EDGE)
            if not line:  # the line was only pipes and spaces
                continue
        lines.append(line)
    return "\n".join(lines)


def _is_footer(line: str, pats: _LinePatterns) -> bool:
    if pats.footer.match(line):
        return True
    # Short only: "关闭窗口" in a long line is a sentence about something else.
    return len("".join(line.split())) <= _FOOTER_PHRASE_LINE and pats.footer_phrase.search(line) is not None


def _strip_boilerplate(text: str) -> str:
    pats = _line_patterns()
    if _REQUEST_HINT in text:
        text = pats.request_line.sub("", text)
        text = pats.request.sub("", text)
    lines = text.split("\n")
    keep = [True] * len(lines)
    kept = 0
    # Only the end of the document: the same words higher up can be body text ("来源:统计局数据").
    # Counting kept lines, not lines seen, keeps the scan where it was when footers have been removed.
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if not line.strip():
            continue
        if _is_footer(line, pats):
            keep[i] = False
            continue
        kept += 1
        if kept > _TAIL_KEPT_LINES or len(line.strip()) > _TAIL_LONG_LINE:
            break
    return "\n".join(line for line, k in zip(lines, keep) if k)


def _is_value(line: str) -> bool:
    """Whether a line can be the value of the empty header key above it: short, not a sentence."""
    return len(line) <= _MAX_VALUE_CHARS and not _SENTENCE_PUNCT.search(line)


def _header_line(line: str, pats: _LinePatterns) -> tuple[bool, bool]:
    """(is a header line, its value is on the next line) for one stripped line."""
    if _DATE_LINE.fullmatch(line):
        return True, False
    m = pats.key.fullmatch(line)
    if m is None:
        return False, False
    key, value = m.group("key"), m.group("value")
    if key is None:  # a colon-less key such as 发表于
        return True, False
    if pats.date_key.search(key):
        return (not value or pats.date_value.fullmatch(value) is not None), False
    return True, not value


def _header_drops(lines: list[str], pats: _LinePatterns) -> set[int]:
    """Indices of the header block at the start.

    One line that is not a header line may sit among header lines (a title, or the addressee after the
    header); a second different one ends the block. A title repeated after the header keeps one copy.
    """
    drops: set[int] = set()
    title: int | None = None
    value_due = False
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        is_header, next_is_value = _header_line(line, pats)
        if is_header or (value_due and _is_value(line)):
            drops.add(i)
            value_due = is_header and next_is_value
            continue
        value_due = False
        if title is not None and line != lines[title].strip():
            break
        if title is not None:
            drops.add(title)
        title = i
    return drops


def _strip_metadata(text: str) -> str:
    pats = _line_patterns()
    lines = text.split("\n")
    drops = _header_drops(lines, pats)
    value_due = False
    # 主题分类/主题词 anywhere: they may carry the label itself.
    for i, raw in enumerate(lines):
        m = pats.label_key.fullmatch(raw.strip())
        if m is not None:
            drops.add(i)
            value_due = not m.group("value")
        elif value_due and raw.strip():
            if _is_value(raw.strip()):
                drops.add(i)
            value_due = False
    return "\n".join(line for i, line in enumerate(lines) if i not in drops)


def _lowercase_latin(text: str) -> str:
    # Only the runs of A-Z are rewritten: str.translate would look up every (mostly Chinese) character.
    return _UPPER_LATIN.sub(lambda m: m.group().lower(), text)


def _collapse_whitespace(text: str) -> str:
    text = _SPACES.sub(" ", text)
    # Spaces are single now, so deleting those before and then after each line break is " ?\n ?" -> "\n".
    text = text.replace(" \n", "\n").replace("\n ", "\n")
    return _BLANK_LINES.sub("\n\n", text).strip()


# (name, step); name is the NormalizeConfig field that switches the step, or "controls" (always on).
_STEPS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("strip_html", _strip_html),  # first, though last in NormalizeConfig (added after the others)
    ("controls", _remove_controls),
    ("nfkc", _nfkc),
    ("lowercase_latin", _lowercase_latin),
    ("strip_pinyin", _strip_pinyin),
    ("to_simplified", _to_simplified),
    ("strip_tables", _strip_tables),
    ("strip_boilerplate", _strip_boilerplate),
    ("strip_metadata", _strip_metadata),
    ("collapse_whitespace", _collapse_whitespace),
)


def _enabled_steps(config: NormalizeConfig) -> list[tuple[str, Callable[[str], str]]]:
    return [(name, step) for name, step in _STEPS if name == "controls" or getattr(config, name)]


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        hint = " (decode bytes first)" if isinstance(text, (bytes, bytearray)) else ""
        if isinstance(text, float) or text is None:
            hint = " (a missing value in the text column?)"
        raise TypeError(f"normalize() expects a str, got {type(text).__name__}{hint}")
    return text


def normalize(text: str, config: NormalizeConfig | None = None) -> str:
    """Normalise one document with the steps switched on in ``config`` (all of them by default).

    The result is stable: ``normalize(normalize(x)) == normalize(x)``. Control characters are always
    removed. Empty or whitespace-only input gives ``""``.
    """
    text = _check_text(text)
    steps = _enabled_steps(config or NormalizeConfig())
    for _ in range(_MAX_PASSES):
        out = text
        for _name, step in steps:
            out = step(out)
        if out == text:
            break
        text = out
    return text


def normalize_many(texts: Iterable[str], config: NormalizeConfig | None = None) -> list[str]:
    """``normalize`` applied to each text, in order."""
    config = config or NormalizeConfig()
    return [normalize(t, config) for t in texts]


def _changed_chars(before: str, after: str) -> int:
    """Characters removed or replaced, as a multiset difference.

    Exact for deletions and substitutions, linear in time and blind to reordering, which no step does.
    (A character-level diff is quadratic on long documents and misaligns repeated paragraphs.)
    """
    old, new = Counter(before), Counter(after)
    return max(sum((old - new).values()), sum((new - old).values()))


def describe_changes(text: str, config: NormalizeConfig | None = None) -> dict[str, int]:
    """Characters removed or changed by each enabled step, in pipeline order, for one pass over ``text``.

    Keys are the ``NormalizeConfig`` field names plus ``"controls"``; switched-off steps are left out.
    A deletion counts the characters deleted, a substitution one per character replaced (``&nbsp;`` -> space
    counts 6).
    """
    text = _check_text(text)
    report: dict[str, int] = {}
    for name, step in _enabled_steps(config or NormalizeConfig()):
        out = step(text)
        report[name] = _changed_chars(text, out)
        text = out
    return report
