"""Build the bundled sample data/ from ../shared/data, so the quickstart works on a fresh clone.

Every regulation is kept (labelled and unlabelled, with its fixed split), its body cut at a sentence end
near ``--max-chars`` characters; the 91 official Hebei documents and the portal-labelled ``official.jsonl.gz``
are copied whole.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCE_END = re.compile(r"[。；;！!？?\n]")


def cut(text: str, max_chars: int) -> str:
    """The text up to the last sentence end before ``max_chars`` (or hard at max_chars)."""
    if len(text) <= max_chars:
        return text
    ends = [m.end() for m in SENTENCE_END.finditer(text, 0, max_chars)]
    return text[: ends[-1]] if ends and ends[-1] > max_chars // 2 else text[:max_chars]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "data"))
    parser.add_argument("--max-chars", type=int, default=1500)
    args = parser.parse_args()
    shared, out = Path(args.shared), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = ("id", "title", "text", "label", "label_l1", "label_l2", "label_source", "level", "split")
    with gzip.open(shared / "regulations.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    target = out / "regulations_sample.jsonl.gz"
    with gzip.GzipFile(target, "wb", mtime=0) as gz:
        for row in rows:
            item = {k: row.get(k) for k in keep}
            item["text_chars"] = len(row["text"])
            item["text"] = cut(row["text"], args.max_chars)
            gz.write((json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8"))
    (out / "taxonomy.yaml").write_bytes((shared / "taxonomy.yaml").read_bytes())
    (out / "gold_dev.jsonl").write_bytes((shared / "gold_dev.jsonl").read_bytes())
    (out / "official.jsonl.gz").write_bytes((shared / "official.jsonl.gz").read_bytes())
    print(f"{len(rows)} rows written to {target} ({target.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
