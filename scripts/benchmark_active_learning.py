"""Active learning on the ``official`` documents: do ``govtopic.suggest``'s picks need fewer labels than random?

The ``official`` train split is the pool, its labels hidden until a document is picked. Each seed starts both
strategies from the same random labelled set, then adds ``--batch`` documents per round: the documents
``govtopic.suggest.select`` picks from the learner's probabilities (the same function ``govtopic suggest``
runs), or random ones. After each round the learner is fitted again and scored on the ``official`` test split
at the first level (accuracy).

Retraining the BERT every round is too slow on a CPU, so the learner is govtopic's n-gram channel
(``govtopic.ngram.NgramChannel``: character 1-3-gram TF-IDF + linear SVM, the part of the CPU recipe that
decides most first-level labels), its scores turned into probabilities by a softmax.

    python scripts/benchmark_active_learning.py                       # test split, 3 seeds
    python scripts/benchmark_active_learning.py --evaluate-on validation --oversample 1   # tuning: pool only

``--evaluate-on validation`` holds out 20% of the pool (govtopic's own stratified split) and scores on it
instead of the test split: settings are chosen there, never on test.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from govtopic.calibration import softmax
from govtopic.config import Config, SourceConfig
from govtopic.data import Split, load_labelled
from govtopic.labels import l1
from govtopic.ngram import NgramChannel
from govtopic.suggest import OVERSAMPLE, document_text, margins, select

# Softmax temperature of the channel's SVM scores (they lie within about ±2). Only the order of the margins
# matters to the selection; 0.1, 1 and 3 were within noise of each other on the validation split.
TEMPERATURE = 1.0


def load(args) -> tuple[Split, Split]:
    """The pool (train split) and the split scored: test, or 20% of the pool held out for tuning."""
    cfg = Config()
    cfg.data.sources = [SourceConfig(name="official", file=args.data)]
    cfg.data.taxonomy = args.taxonomy
    cfg.data.label_map = args.label_map
    cfg.data.label_level = "l1"
    cfg.data.validation_from_train = 0.2 if args.evaluate_on == "validation" else 0.0
    data = load_labelled(cfg.data, cfg.normalize, seed=0)
    return data.train, data.validation if args.evaluate_on == "validation" else data.test


class Learner:
    """The n-gram channel fitted on the labelled documents; probabilities over the classes it has seen."""

    def __init__(self, pool: Split, scored: Split, labelled: np.ndarray, seed: int):
        self.channel = NgramChannel(seed=seed).fit(
            [pool.texts[i] for i in labelled], [pool.labels[i] for i in labelled], [pool.titles[i] for i in labelled]
        )
        self.pool, self.scored = pool, scored

    def probs(self, rows: np.ndarray, temperature: float) -> np.ndarray:
        s = self.channel.scores([self.pool.texts[i] for i in rows], [self.pool.titles[i] for i in rows])
        return softmax(s, temperature)

    def accuracy(self) -> float:
        s = self.channel.scores(self.scored.texts, self.scored.titles)
        pred = np.array(self.channel.classes)[s.argmax(axis=1)]
        return float(np.mean(pred == np.array([l1(y) for y in self.scored.labels])))


def run(pool: Split, scored: Split, texts: list[str], strategy: str, seed: int, args) -> list[tuple[int, float]]:
    """(labelled count, accuracy) after the start and after each round."""
    rng = np.random.default_rng(seed)
    labelled = rng.choice(len(pool), args.start, replace=False)  # the same start for both strategies
    curve = []
    for round_ in range(args.rounds + 1):
        learner = Learner(pool, scored, labelled, seed)
        curve.append((len(labelled), learner.accuracy()))
        if round_ == args.rounds:
            break
        rest = np.setdiff1d(np.arange(len(pool)), labelled)
        if strategy == "random":
            new = rng.choice(rest, args.batch, replace=False)
        else:
            m = margins(learner.probs(rest, args.temperature), learner.channel.classes, "l1")
            picks = select(m, [texts[i] for i in rest], args.batch, args.oversample, seed)
            new = rest[[p["index"] for p in picks]]
        labelled = np.concatenate([labelled, new])
    return curve


def labels_needed(counts: list[int], acc: np.ndarray, target: float) -> float | None:
    """Labels at which a curve first reaches ``target``, interpolated between rounds; None if never."""
    for k, a in enumerate(acc):
        if a >= target - 1e-12:
            if k == 0:
                return float(counts[0])
            a0, c0 = acc[k - 1], counts[k - 1]
            return float(c0 + (target - a0) / (a - a0) * (counts[k] - c0))
    return None


def plot(counts, curves: dict[str, np.ndarray], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, acc in curves.items():
        ax.errorbar(counts, acc.mean(axis=0), yerr=acc.std(axis=0), marker="o", capsize=3, label=name)
    ax.set_xlabel("labelled documents")
    ax.set_ylabel("first-level accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/official.jsonl.gz")
    p.add_argument("--taxonomy", default="../shared/data/taxonomy.yaml")
    p.add_argument("--label-map", default="data/label_map.yaml")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated; each gives its own start set and picks")
    p.add_argument("--start", type=int, default=100, help="labelled documents before the first round")
    p.add_argument("--batch", type=int, default=100, help="documents labelled per round")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--oversample", type=int, default=OVERSAMPLE, help="select()'s candidates per pick")
    p.add_argument("--temperature", type=float, default=TEMPERATURE, help="softmax temperature of the SVM scores")
    p.add_argument("--evaluate-on", choices=["test", "validation"], default="test")
    p.add_argument("--output", default="runs/active_learning", help="folder for the plot and figures")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    started = time.time()
    pool, scored = load(args)
    texts = [document_text(t, x) for t, x in zip(pool.titles, pool.texts)]
    seeds = [int(s) for s in args.seeds.split(",")]
    curves: dict[str, list[list[float]]] = {"random": [], "suggest": []}
    counts: list[int] = []
    for seed in seeds:
        for strategy in curves:
            curve = run(pool, scored, texts, strategy, seed, args)
            counts = [c for c, _ in curve]
            curves[strategy].append([a for _, a in curve])
    acc = {k: np.array(v) for k, v in curves.items()}

    print(
        f"\npool: official train split, {len(pool)} documents; scored on the official {args.evaluate_on} split "
        f"({len(scored)} documents), first-level accuracy; learner: n-gram channel; seeds {args.seeds}; "
        f"start {args.start}, +{args.batch} per round; suggest: select(oversample={args.oversample})\n"
    )
    print("| labelled | random | suggest |")
    print("|---:|---:|---:|")
    for k, c in enumerate(counts):
        cells = [f"{acc[s][:, k].mean():.3f} ± {acc[s][:, k].std():.3f}" for s in ("random", "suggest")]
        print(f"| {c} | " + " | ".join(cells) + " |")

    final = counts[-1]
    print(
        f"\nmean accuracy over the rounds after the start: random {acc['random'][:, 1:].mean():.3f}, "
        f"suggest {acc['suggest'][:, 1:].mean():.3f}"
    )
    target = acc["random"][:, -1].mean()
    need = labels_needed(counts, acc["suggest"].mean(axis=0), target)
    per_seed = []
    for i, seed in enumerate(seeds):
        n = labels_needed(counts, acc["suggest"][i], acc["random"][i, -1])
        per_seed.append({"seed": seed, "random_final": acc["random"][i, -1], "labels_needed": n})
    print()
    if need is None:
        print(f"labels needed by suggest to reach random's final accuracy ({target:.3f}): not reached in {final}")
    else:
        print(
            f"labels needed by suggest to reach random's final accuracy: {need:.0f} ({need / final:.0%} of random's)"
            f"  [random: {final} labels, {target:.3f}]"
        )
    for row in per_seed:
        n = row["labels_needed"]
        shown = "not reached" if n is None else f"{n:.0f} ({n / final:.0%})"
        print(f"  seed {row['seed']}: random's final {row['random_final']:.3f}; suggest reaches it with {shown}")

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    name = f"learning_curve_{args.evaluate_on}.png"
    plot(counts, acc, out / name, f"official {args.evaluate_on} split, {len(seeds)} seeds (mean, sd)")
    figures = {
        "settings": {k: v for k, v in vars(args).items()},
        "labelled": counts,
        "accuracy": {k: v.tolist() for k, v in acc.items()},
        "labels_needed": need,
        "share_of_random": None if need is None else need / final,
        "per_seed": per_seed,
        "seconds": round(time.time() - started, 1),
    }
    (out / f"figures_{args.evaluate_on}.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"\nplot: {out / name}\nfigures: {out / f'figures_{args.evaluate_on}.json'} ({figures['seconds']} s)")


if __name__ == "__main__":
    main()
