"""Tables saved in the encodings Chinese offices use are read as the text they hold, whatever their first line."""

import gzip

import pytest

from govtopic.encodings import detect_chinese_encoding
from govtopic.inputs import Columns, iter_records
from govtopic.tables import read_table

# A notice body of about 6,000 bytes in GBK: longer than one read buffer, so a sample of whole lines taken
# from the first buffer would hold the ASCII header alone.
LONG_BODY = "各区人民政府，市政府各部门：为进一步加强城市规划管理，现就有关事项通知如下。" * 80
SHORT_BODY = "各县农业农村局做好春耕备耕"


def write_table(path, text: str, encoding: str):
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("name", ["docs.csv", "docs.tsv", "docs.csv.gz"])
@pytest.mark.parametrize("encoding", ["gbk", "gb18030"])
def test_gbk_table_with_an_ascii_header_and_a_long_first_row_is_read_as_written(tmp_path, name, encoding):
    sep = "\t" if ".tsv" in name else ","
    text = (
        f"id{sep}title{sep}text\n"
        f"1{sep}关于加强城市规划管理的通知{sep}{LONG_BODY}\n"
        f"2{sep}关于做好春耕生产工作的通知{sep}{SHORT_BODY}\n"
    )
    path = write_table(tmp_path / name, text, encoding)
    records = list(iter_records([str(path)], Columns(title="title")))
    assert [r.error for r in records] == [None, None]
    assert [r.text for r in records] == [LONG_BODY, SHORT_BODY]  # not Big5 nonsense, not "undecodable"
    assert records[1].title == "关于做好春耕生产工作的通知"


def test_training_reads_the_same_gbk_table(tmp_path):
    text = f"id,text,label\n1,{LONG_BODY},城乡建设、环境保护\n2,{SHORT_BODY},农业、林业、水利\n"
    rows = read_table(write_table(tmp_path / "labelled.csv", text, "gb18030"))
    assert [r["text"] for r in rows] == [LONG_BODY, SHORT_BODY]


def test_a_row_longer_than_the_sample_is_still_read_as_gbk(tmp_path):
    # No line break at all in the first 64 KiB: the sample ends inside a row, maybe inside a character.
    body = "城市规划管理" * 8000  # 96,000 bytes in GBK
    path = write_table(tmp_path / "docs.csv", f"id,text\n1,{body}\n2,{SHORT_BODY}\n", "gbk")
    records = list(iter_records([str(path)]))
    assert [r.text for r in records] == [body, SHORT_BODY]


def test_ascii_alone_is_not_called_big5():
    assert detect_chinese_encoding(b"id,title,text\n") == "gb18030"


def test_big5_table_is_still_read_as_big5(tmp_path):
    text = f"id,text\n1,{'關於加強城市規劃管理的通知，各區人民政府' * 300}\n"
    records = list(iter_records([str(write_table(tmp_path / "docs.csv", text, "big5"))]))
    assert records[0].error is None and records[0].text.startswith("關於加強城市規劃管理的通知")
