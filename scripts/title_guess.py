"""Does reading the title a text opens with pay? Scores a model on labelled documents read four ways.

1. title given apart (``{"title", "text"}``), as the portal's data has it;
2. title written as the first line of the text (a ``.txt`` file), read with ``long_doc.title_from_text`` on;
3. the same text with it off (the body alone, the title only inside the first window);
4. the body alone (no title anywhere), with it on: a cover note may still name the document.

It also prints how often the guessed title is exactly the given one, and the seeds' guessed titles and labels.

    python scripts/title_guess.py runs/cpu-official/model [--data ../shared/data/gold_dev.jsonl]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from govtopic.labels import l1
from govtopic.normalize import normalize
from govtopic.predict import TopicClassifier
from govtopic.titles import guess_title


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--data", default="../shared/data/gold_dev.jsonl", help="labelled JSONL with title, text, label")
    p.add_argument("--seeds", default="../shared/seeds", help="folder of .txt documents to show (skipped if absent)")
    args = p.parse_args()
    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("label") and r.get("title")]
    gold = [l1(r["label"]) for r in rows]
    clf = TopicClassifier(args.model)
    on = clf.long_doc
    off = dataclasses.replace(on, title_from_text=False)

    def accuracy(docs: list, long_doc) -> float:
        clf.long_doc = long_doc
        results = clf.predict(docs)
        clf.long_doc = on
        return sum(r["label_l1"] == g for r, g in zip(results, gold)) / len(gold)

    first_line = [f"{r['title']}\n{r['text']}" for r in rows]
    ways = [
        ("title given apart", [{"title": r["title"], "text": r["text"]} for r in rows], on),
        ("title as the first line, title_from_text on", first_line, on),
        ("title as the first line, title_from_text off", first_line, off),
        ("body alone, title_from_text on", [r["text"] for r in rows], on),
        ("body alone, title_from_text off", [r["text"] for r in rows], off),
    ]
    print(f"{args.data}: {len(rows)} documents, model {args.model}")
    print(f"{'read as':48s} first-level accuracy")
    for name, docs, long_doc in ways:
        print(f"{name:48s} {accuracy(docs, long_doc):.3f}")
    cfg = clf.normalize_config
    exact = sum(guess_title(normalize(t, cfg)) == normalize(r["title"], cfg) for t, r in zip(first_line, rows))
    print(f"guessed title equal to the given one (title as the first line): {exact}/{len(rows)}")
    found = sum(bool(guess_title(normalize(r["text"], cfg))) for r in rows)
    print(f"bodies alone with a guessed title (a cover note naming the document): {found}/{len(rows)}")
    seeds = sorted(Path(args.seeds).glob("*.txt")) if Path(args.seeds).is_dir() else []
    for path, result in zip(seeds, clf.predict([s.read_text(encoding="utf-8") for s in seeds])):
        print(f"seed {path.name}: {result['label']} (title read: {result.get('guessed_title', '')!r})")


if __name__ == "__main__":
    main()
