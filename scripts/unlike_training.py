"""How much a document resembles what a model was trained on: the share of its Chinese character 2–3-grams known to
the model's n-gram channel (``known_ngrams`` in results; below ``govtopic.ngram.UNFAMILIAR_SHARE`` a result needs
review as ``unlike_training``). Prints the share's spread on labelled government documents and on a few texts
that are not government documents, and what predict() answers for those.

    python scripts/unlike_training.py runs/cpu-official/model
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from govtopic.ngram import UNFAMILIAR_SHARE
from govtopic.normalize import normalize
from govtopic.predict import TopicClassifier

OTHERS = {
    "recipe": "红烧肉的做法：五花肉切块，冷水下锅焯水，捞出洗净。锅中放少许油，加冰糖小火炒出糖色，放入肉块翻炒上色，"
    "加入生抽、老抽、料酒、葱姜八角，倒入开水没过肉，大火烧开后转小火炖一个小时，最后大火收汁即可出锅。",
    "sports report": "昨晚的比赛中，主队凭借下半场的两个进球逆转客队。第七十分钟，替补登场的前锋接队友传中头球破门，"
    "第八十五分钟又在禁区外一脚远射锁定胜局。赛后主教练表示球员们展现了顽强的斗志。",
    "short story": "她推开窗，月光洒在院子里的桂花树上，风里有淡淡的香气。多年以前，祖母就坐在这棵树下给她讲故事，"
    "讲那些关于远方和大海的传说。如今祖母已经不在了，只剩下这棵树还在静静地开花。",
    "English": "The committee met on Tuesday to review the quarterly budget and agreed to postpone the decision.",
    "table of numbers": "2023 1 234.5 678.9 12.3%\n2024 2 345.6 789.0 13.4%\n2025 3 456.7 890.1 14.5%",
    "site footer": "首页 | 网站地图 | 联系我们\n版权所有 © 2024 某某市人民政府办公室 主办\n技术支持：某某科技有限公司",
}


def _rows(path: str, split: str | None) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if (split is None or r.get("split") == split) and (r.get("text") or r.get("title"))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--data", default="../shared/data", help="folder with gold_dev.jsonl, official and regulations")
    args = p.parse_args()
    clf = TopicClassifier(args.model)
    if clf.ngram is None:
        raise SystemExit(f"{args.model} has no n-gram channel: known_ngrams is not computed for it")
    sets = {
        "gold_dev": _rows(str(Path(args.data) / "gold_dev.jsonl"), None),
        "official test": _rows(str(Path(args.data) / "official.jsonl.gz"), "test"),
        "regulations test": _rows(str(Path(args.data) / "regulations.jsonl.gz"), "test"),
    }
    print(f"known share of Chinese 2-3-grams (flagged below {UNFAMILIAR_SHARE}), model {args.model}")
    print(f"{'documents':18s} {'n':>5s} {'min':>6s} {'1%':>6s} {'5%':>6s} {'median':>7s} {'flagged':>8s}")
    for name, rows in sets.items():
        texts = [normalize(r.get("text") or "", clf.normalize_config) for r in rows]
        titles = [normalize(r.get("title") or "", clf.normalize_config) for r in rows]
        share = clf.ngram.known_share(texts, titles)
        print(
            f"{name:18s} {len(rows):5d} {share.min():6.3f} {np.percentile(share, 1):6.3f} "
            f"{np.percentile(share, 5):6.3f} {np.median(share):7.3f} {int((share < UNFAMILIAR_SHARE).sum()):8d}"
        )
    for name, r in zip(OTHERS, clf.predict(list(OTHERS.values()))):
        print(
            f"{name:18s} known {r.get('known_ngrams', float('nan')):.3f}  label {r['label']}  "
            f"needs_review {r.get('needs_review')}  {r.get('review_reason') or r.get('reason') or ''}"
        )


if __name__ == "__main__":
    main()
