"""The n-gram channel: scores from character n-grams, mixed with the transformer's logits (``mix``).

With a few thousand short labelled rows (titles, summaries) and no pretrained weights, a small transformer
learns less than a linear model over character 1–3-grams; the two make different mistakes. The channel is a
TF-IDF + linear SVM at the **first level**, fitted on the model's training split, with the title and the
start of the body as separate feature blocks (a title's n-grams mean more than the same n-grams deep in a
body: on the validation split of the official recipe, 0.842 first-level accuracy against 0.831 for one block
over title + body). Classes are weighted by the inverse of their frequency: portals file many documents under
a few classes (其他, 综合政务), and unweighted the channel rarely names the small ones (official recipe, weight
chosen on validation: ``official`` test 0.743 → 0.751, ``gold_dev`` 0.670 → 0.692, regulations test macro-F1
0.880 → 0.906). Its
scores are added, times a weight chosen on the validation split, to every full label of that level; rows with
a first-level-only label train it like any other.

A second linear SVM over the same features scores the model's own classes (full labels ``一级\\二级``, and first
levels without children such as ``其他``), fitted on the rows labelled at that depth, and is added with a second
weight, choosing **within** a first level only (``mix``: the level's probability is the transformer's and the
first-level block's, the share of each of its classes the transformer's and the full-label block's). Without it
the second level is the small transformer's choice alone (official recipe, gov.cn test rows: full-label
accuracy 0.525 → 0.617, first level unchanged). Added to the logits instead, it moved documents
between first levels with the conventions of the rows labelled at full depth (gov.cn, regulations) and against
those of portals that publish the first level alone: on the official recipe, Hebei titles 0.670 → 0.505.
Folders written before the block keep ``ngram_full_weight`` 0 and predict as before.

It lives in the model folder as tensors (``ngram_channel.safetensors``: IDF weights of each block,
coefficients and intercepts) and its vocabularies as JSON (``ngram_vocab.json``), never pickle, so the folder
is still one model with one ``predict()``. Plain ``transformers`` loading the folder ignores the channel (the
README says so).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from govtopic.calibration import softmax
from govtopic.labels import l1, split_levels

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "ngram_channel.safetensors"
VOCAB_FILE = "ngram_vocab.json"
# Characters of the body read by the channel (measured on the official recipe's validation split: 1,000 read
# as well as 500 and better than 3,000).
MAX_CHARS = 1000
# The two feature blocks: title n-grams and body n-grams, each with its own vocabulary and IDF weights.
BLOCKS = ("title", "body")
# A document whose Chinese character 2-3-grams are mostly unknown to the channel's vocabulary is unlike anything
# in training. Share of known n-grams in the first MAX_CHARS characters, official recipe (lowest, median): gold_dev
# 0.346, 0.532; official test 0.339, 0.827; regulations test 0.433, 0.818; a recipe 0.10, a sports report 0.17,
# a short story 0.11, English or a table of numbers 0 (python scripts/unlike_training.py runs/cpu-official/model).
UNFAMILIAR_SHARE = 0.25
_HAN = re.compile(r"[\u3400-\u9fff]")
# Weights tried on the validation split; 0 keeps the transformer alone.
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
# Weights of the full-label block tried with each of them; 0 leaves the second level to the transformer.
FULL_WEIGHT_GRID = (0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0)


def _block_texts(texts: list[str], titles: list[str] | None) -> dict[str, list[str]]:
    return {"title": list(titles or [""] * len(texts)), "body": [t[:MAX_CHARS] for t in texts]}


# Runs of whitespace, which the character analyser reads as one space (as scikit-learn's does).
_SPACES = re.compile(r"\s\s+")
# Bits per code point in a packed n-gram key (Unicode needs 21): three fit in an int64.
_BITS = 21


def _points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)


def _pack(points: np.ndarray, n: int) -> np.ndarray:
    """The key of every n-gram of ``points``, in order: its code points packed ``_BITS`` bits each."""
    keys = points[: len(points) - n + 1].copy()
    for j in range(1, n):
        keys = (keys << _BITS) | points[j : len(points) - n + 1 + j]
    return keys


class _GramIndex:
    """A fitted character n-gram vocabulary as sorted integer keys, so that a document's n-grams are counted
    with a few numpy operations rather than one dictionary lookup each (scikit-learn's loop, 3-4 times slower:
    most of the channel's time). The counts are the vectorizer's own (``CountVectorizer.transform``: same
    preprocessing, runs of whitespace read as one space); tests/test_speed_equivalence.py checks it."""

    def __init__(self, vectorizer):
        self.preprocess = vectorizer.build_preprocessor()
        self.width = len(vectorizer.vocabulary_)
        low, high = vectorizer.ngram_range
        self.sizes = range(low, high + 1)
        keys: dict[int, list[int]] = {n: [] for n in self.sizes}
        columns: dict[int, list[int]] = {n: [] for n in self.sizes}
        for gram, column in vectorizer.vocabulary_.items():
            if len(gram) in keys:
                key = 0
                for char in gram:
                    key = (key << _BITS) | ord(char)
                keys[len(gram)].append(key)
                columns[len(gram)].append(column)
        self.tables = {}
        for n in self.sizes:
            k, c = np.asarray(keys[n], dtype=np.int64), np.asarray(columns[n], dtype=np.int64)
            order = np.argsort(k)
            self.tables[n] = (k[order], c[order])

    def read(self, texts: list[str]):
        """(counts: documents × vocabulary CSR, han: per text its 2–3-grams holding a Chinese character)."""
        from scipy.sparse import csr_matrix

        columns, values, rows, han = [], [], [0], np.zeros(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            points = _points(_SPACES.sub(" ", self.preprocess(text)))
            found = []
            for n in self.sizes:
                table, column = self.tables[n]
                if len(points) < n or not len(table):
                    continue
                keys = _pack(points, n)
                at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
                found.append(column[at[table[at] == keys]])
            used, count = np.unique(np.concatenate(found) if found else np.zeros(0, np.int64), return_counts=True)
            columns.append(used)
            values.append(count)
            rows.append(rows[-1] + len(used))
            chinese = (points >= 0x3400) & (points <= 0x9FFF)
            han[i] = sum(
                int(np.count_nonzero(np.logical_or.reduce([chinese[j : len(chinese) - n + 1 + j] for j in range(n)])))
                for n in (2, 3)
                if len(chinese) >= n
            )
        counts = csr_matrix(
            (
                np.concatenate(values or [np.zeros(0, np.int64)]),
                np.concatenate(columns or [np.zeros(0, np.int64)]),
                np.asarray(rows),
            ),
            shape=(len(texts), self.width),
        )
        return counts, han


class NgramChannel:
    """Character 1–3-gram TF-IDF + linear SVM scores per first-level class and, fitted with ``classes``, per
    class of the model (full labels).

    Args:
        max_features: n-grams kept (the most frequent); bounds the folder size (about 4 bytes × classes each).
        C: the SVM's regularisation.
        class_weight: ``"balanced"`` (default: each class weighted by the inverse of its frequency) or None.
        seed: for the SVM's coordinate descent.

    Example:
        >>> channel = NgramChannel().fit(["关于印发城市规划管理办法的通知", ...], ["城乡建设、环境保护", ...])
        >>> channel.scores(["城市规划"]).shape
        (1, 22)
        >>> channel = NgramChannel().fit(texts, labels, titles, classes=model_labels)  # with the full-label block
        >>> first, full = channel.parts(["城市规划"], None, model_labels)
        >>> mix(logits, first, full, 8.0, 4.0, model_labels).shape
        (1, 114)
    """

    def __init__(
        self, max_features: int = 100_000, C: float = 0.5, seed: int = 0, class_weight: str | None = "balanced"
    ):
        self.max_features, self.C, self.seed, self.class_weight = max_features, C, seed, class_weight
        self.classes: list[str] = []
        self.vectorizers: dict = {}
        # The full-label block: the model's classes it scores, and its coefficients (None when not fitted).
        self.full_classes: list[str] = []
        self.coef_full: np.ndarray | None = None
        self.bias_full: np.ndarray | None = None
        # Per block, the vocabulary columns known_share counts, and the transposed coefficients (built on use).
        self._han_columns: dict[str, np.ndarray] = {}
        self._indexes: dict[str, _GramIndex] = {}
        self._transposed: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _vectorizer(self, block: str, vocabulary: dict[str, int] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        # Titles are short: half the n-gram budget is plenty.
        cap = self.max_features // 2 if block == "title" else self.max_features
        return TfidfVectorizer(
            analyzer="char",
            ngram_range=(1, 3),
            sublinear_tf=True,
            max_features=None if vocabulary else cap,
            vocabulary=vocabulary,
            dtype=np.float32,
        )

    def _features(self, texts: list[str], titles: list[str] | None, fit: bool = False):
        from scipy.sparse import csr_matrix, hstack

        if not fit:
            return self._read(texts, titles)[0]
        blocks = _block_texts(texts, titles)
        parts = []
        for block in BLOCKS:
            try:
                self.vectorizers[block] = self._vectorizer(block)
                parts.append(self.vectorizers[block].fit_transform(blocks[block]))
            except ValueError:  # no titles (or no bodies) at all: an empty block
                self.vectorizers[block] = None
        self._han_columns, self._indexes = {}, {}
        return hstack(parts).tocsr() if parts else csr_matrix((len(texts), 0), dtype=np.float32)

    def _read(self, texts: list[str], titles: list[str] | None):
        """One pass over the documents' n-grams: (TF-IDF features, the share of known n-grams per document).

        Each block's raw counts are taken once; the TF-IDF features (sublinear term frequency times IDF, rows
        of unit length, as the block's ``TfidfVectorizer.transform`` gives) and the known share are both
        computed from them, so a document is analysed once per block, not twice.
        """
        from scipy.sparse import csr_matrix, hstack
        from sklearn.preprocessing import normalize

        blocks = _block_texts(texts, titles)
        parts, known, totals = [], {}, {}
        for block in BLOCKS:
            vectorizer = self.vectorizers.get(block)
            if vectorizer is None:
                continue
            if block not in self._indexes:
                self._indexes[block] = _GramIndex(vectorizer)
            counts, totals[block] = self._indexes[block].read(blocks[block])  # raw counts, the block's vocabulary
            known[block] = np.asarray(counts[:, self._han_grams(block)].sum(axis=1)).ravel()
            x = counts.astype(np.float32)
            np.log(x.data, out=x.data)
            x.data += 1.0
            x.data *= np.asarray(vectorizer.idf_, dtype=np.float32)[x.indices]
            parts.append(normalize(x, norm="l2", copy=False))
        features = hstack(parts).tocsr() if parts else csr_matrix((len(texts), 0), dtype=np.float32)
        share = np.ones(len(texts), dtype=np.float32)
        for i, (title, body) in enumerate(zip(blocks["title"], blocks["body"])):
            block, text = ("body", body) if body.strip() else ("title", title)
            if block not in known or not text.strip():
                continue
            total = totals[block][i]
            share[i] = known[block][i] / total if total else 0.0
        return features, share

    def _decide(self, x, coef: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Decision values ``x @ coef.T + bias``. The transposed coefficients are made contiguous once per
        block and kept: scipy copies a transposed view on every product (most of the channel's time)."""
        key = id(coef)
        cached = self._transposed.get(key)
        if cached is None or cached[0] is not coef:
            cached = self._transposed[key] = (coef, np.ascontiguousarray(coef.T))
        return np.asarray(x @ cached[1] + bias, dtype=np.float32)

    def _han_grams(self, block: str) -> np.ndarray:
        """Columns of the block's vocabulary that ``known_share`` counts: 2–3-grams with a Chinese character."""
        if block not in self._han_columns:
            vocabulary = self.vectorizers[block].vocabulary_
            columns = np.zeros(len(vocabulary), dtype=bool)
            for gram, column in vocabulary.items():
                columns[column] = len(gram) >= 2 and _HAN.search(gram) is not None
            self._han_columns[block] = columns
        return self._han_columns[block]

    def fit(
        self,
        texts: list[str],
        labels: list[str | None],
        titles: list[str] | None = None,
        classes: list[str] | None = None,
    ) -> NgramChannel:
        """Fit on documents with a label (cut to the first level); rows without one are skipped.

        Args:
            texts: normalised bodies.
            labels: one label per text (``一级\\二级``, ``一级`` or None).
            titles: normalised titles, or None.
            classes: the model's classes; given, a second SVM scores them, fitted on the rows whose label is one
                of them (a first-level-only label of a level with children trains the first-level SVM only).
        """
        from sklearn.svm import LinearSVC

        keep = [i for i, y in enumerate(labels) if y]
        y = [l1(labels[i]) for i in keep]
        if len(set(y)) < 2:
            raise ValueError("the n-gram channel needs at least two first-level classes in training")
        x = self._features([texts[i] for i in keep], [titles[i] for i in keep] if titles else None, fit=True)
        if x.shape[1] == 0:
            raise ValueError("the n-gram channel found no text to learn from (every title and body is empty)")
        svm = LinearSVC(C=self.C, class_weight=self.class_weight, random_state=self.seed).fit(x, y)
        self.classes = [str(c) for c in svm.classes_]
        coef = svm.coef_ if len(self.classes) > 2 else np.vstack([-svm.coef_[0], svm.coef_[0]])
        bias = svm.intercept_ if len(self.classes) > 2 else np.array([-svm.intercept_[0], svm.intercept_[0]])
        # liblinear gives Fortran-ordered arrays; safetensors stores the raw buffer, so make them C-ordered.
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        logger.info("n-gram channel: %d documents, %d classes, %d n-grams", len(y), len(self.classes), x.shape[1])
        if classes is not None:
            self._fit_full(x, [labels[i] for i in keep], set(classes))
        return self

    def _fit_full(self, x, labels: list[str], classes: set[str]) -> None:
        """The full-label SVM over the features ``x`` of the rows whose label is one of the model's classes."""
        from sklearn.svm import LinearSVC

        rows = [i for i, y in enumerate(labels) if y in classes]
        if len({labels[i] for i in rows}) < 2:
            logger.info("n-gram channel: fewer than two model classes among full labels; no full-label block")
            return
        svm = LinearSVC(C=self.C, class_weight=self.class_weight, random_state=self.seed)
        svm.fit(x[rows], [labels[i] for i in rows])
        self.full_classes = [str(c) for c in svm.classes_]
        two = len(self.full_classes) == 2
        coef = np.vstack([-svm.coef_[0], svm.coef_[0]]) if two else svm.coef_
        bias = np.array([-svm.intercept_[0], svm.intercept_[0]]) if two else svm.intercept_
        self.coef_full = np.ascontiguousarray(coef, dtype=np.float32)
        self.bias_full = np.ascontiguousarray(bias, dtype=np.float32)
        logger.info("n-gram channel full-label block: %d documents, %d classes", len(rows), len(self.full_classes))

    @property
    def has_full(self) -> bool:
        """Whether the channel scores the model's classes too (folders written before this block: False)."""
        return self.coef_full is not None

    def scores(self, texts: list[str], titles: list[str] | None = None) -> np.ndarray:
        """Decision values (documents × first-level classes, in ``self.classes`` order)."""
        x = self._features(texts, titles)
        return self._decide(x, self.coef, self.bias)

    def known_share(self, texts: list[str], titles: list[str] | None = None) -> np.ndarray:
        """Per document, the share of its character 2–3-grams with a Chinese character (body, or title when the
        body is empty) that are in the channel's vocabulary: how much the document resembles what the model was
        trained on. A table of numbers or an English text has no such n-gram and gets 0."""
        return self._read(texts, titles)[1]

    def full_scores(self, texts: list[str], titles: list[str] | None, labels: list[str]) -> np.ndarray:
        """Scores per full label: each label gets its first level's score (0 for a level it never saw)."""
        return self._spread(self.scores(texts, titles), labels)

    def parts(self, texts: list[str], titles: list[str] | None, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The two blocks' scores per label, unweighted: (first-level scores spread to each label, full-label
        scores; zeros without a full-label block). Weights are chosen on them (``choose_weights``)."""
        return self.read(texts, titles, labels)[:2]

    def read(
        self, texts: list[str], titles: list[str] | None, labels: list[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``parts`` and ``known_share`` from one pass over the documents' n-grams: (first-level scores per
        label, full-label scores per label, known share per document). Prediction reads all three."""
        x, share = self._read(texts, titles)
        first = self._spread(self._decide(x, self.coef, self.bias), labels)
        if not self.has_full:
            return first, np.zeros_like(first), share
        own = self._decide(x, self.coef_full, self.bias_full)
        return first, self._spread(own, labels, self.full_classes, key=str), share

    def _spread(self, own: np.ndarray, labels: list[str], classes: list[str] | None = None, key=l1) -> np.ndarray:
        """Scores per class of a block (``own``, columns ``classes``: the first-level block's by default) as
        scores per model label: each label gets the column of ``key(label)``, 0 for one the block never saw."""
        index = {c: i for i, c in enumerate(self.classes if classes is None else classes)}
        out = np.zeros((own.shape[0], len(labels)), dtype=np.float32)
        for j, label in enumerate(labels):
            if key(label) in index:
                out[:, j] = own[:, index[key(label)]]
        return out

    # ------------------------------------------------------------ the model folder
    def save(self, folder: str | Path) -> None:
        from safetensors.numpy import save_file

        folder = Path(folder)
        vocab = {
            block: {str(k): int(v) for k, v in v_.vocabulary_.items()} if v_ is not None else None
            for block, v_ in ((b, self.vectorizers.get(b)) for b in BLOCKS)
        }
        meta = {"classes": self.classes, "ngram_range": [1, 3], "max_chars": MAX_CHARS, "vocabulary": vocab}
        tensors = {"coef": self.coef, "bias": self.bias}
        if self.has_full:
            meta["full_classes"] = self.full_classes
            tensors.update(coef_full=self.coef_full, bias_full=self.bias_full)
        (folder / VOCAB_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        for block in BLOCKS:
            if self.vectorizers.get(block) is not None:
                tensors[f"idf_{block}"] = np.ascontiguousarray(self.vectorizers[block].idf_, dtype=np.float32)
        save_file(tensors, str(folder / WEIGHTS_FILE))

    @classmethod
    def load(cls, folder: str | Path) -> NgramChannel | None:
        """The channel kept in ``folder``, or None when it has none. A damaged channel is an error."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from govtopic.modeling import ModelLoadError

        folder = Path(folder)
        if not (folder / WEIGHTS_FILE).is_file() and not (folder / VOCAB_FILE).is_file():
            return None
        width = 0
        try:
            meta = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
            tensors = load_file(str(folder / WEIGHTS_FILE))
            channel = cls()
            channel.classes = [str(c) for c in meta["classes"]]
            for block in BLOCKS:
                vocab = meta["vocabulary"].get(block)
                if vocab is None:
                    channel.vectorizers[block] = None
                    continue
                vectorizer = channel._vectorizer(block, {str(k): int(v) for k, v in vocab.items()})
                vectorizer.idf_ = tensors[f"idf_{block}"]
                if len(vectorizer.idf_) != len(vocab):
                    raise ValueError(f"the {block} block has {len(vocab)} n-grams but {len(vectorizer.idf_)} weights")
                channel.vectorizers[block] = vectorizer
                width += len(vocab)
            channel.coef, channel.bias = tensors["coef"], tensors["bias"]
            if "full_classes" in meta:
                channel.full_classes = [str(c) for c in meta["full_classes"]]
                channel.coef_full, channel.bias_full = tensors["coef_full"], tensors["bias_full"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as err:
            raise ModelLoadError(
                f"{folder}: the n-gram channel ({WEIGHTS_FILE}, {VOCAB_FILE}) cannot be read: {err}. Copy the "
                "folder again, fit the channel again (python scripts/fit_ngram_channel.py MODEL_DIR), or delete "
                "both files and set ngram_weight to 0 in config.json to use the transformer alone."
            ) from err
        full_ok = not channel.has_full or (
            channel.coef_full.shape == (len(channel.full_classes), width)
            and channel.bias_full.shape == (len(channel.full_classes),)
        )
        if (
            channel.coef.shape != (len(channel.classes), width)
            or channel.bias.shape != (len(channel.classes),)
            or not full_ok
        ):
            raise ModelLoadError(
                f"{folder}: the n-gram channel's tensors do not match its vocabulary; fit it again with "
                "python scripts/fit_ngram_channel.py MODEL_DIR"
            )
        if not all(np.isfinite(t).all() for t in tensors.values()):
            raise ModelLoadError(f"{folder}: the n-gram channel holds non-finite values; the files are damaged")
        return channel


def mix(
    logits: np.ndarray, first: np.ndarray, full: np.ndarray, weight: float, full_weight: float, labels: list[str]
) -> np.ndarray:
    """The model's scores with the channel in: log-probabilities per label (documents × ``labels``).

    The first level comes from the transformer's logits plus ``weight`` times the first-level block; the choice
    among a level's classes comes from the transformer's logits plus ``full_weight`` times the full-label block:
    ``log p(label) = log p(level) + log p(label | level)``. The full-label block never moves a document to another
    first level, so rows labelled with a first level only (a portal that publishes 一级 alone), which it never
    saw, keep their say over the level. With ``full_weight`` 0 this is ``logits + weight * first``, as in
    folders written before the block (the same probabilities).

    Args:
        logits: the transformer's pooled logits.
        first, full: the channel's unweighted scores (``NgramChannel.parts``).
        weight, full_weight: the two blocks' weights (the model record's ``ngram_weight``, ``ngram_full_weight``).
        labels: the model's classes, in logit order.

    Example:
        >>> scores = mix(logits, *channel.parts(texts, titles, labels), 8.0, 4.0, labels)
    """
    level_logits = logits + weight * first
    if not full_weight:
        return level_logits
    log_level, _, owner = split_levels(level_logits, labels)
    _, within, _ = split_levels(logits + full_weight * full, labels)
    return (log_level[:, owner] + within).astype(np.float32)


def choose_weights(
    logits: np.ndarray, first: np.ndarray, full: np.ndarray, gold: list[str | None], labels: list[str]
) -> tuple[float, float, dict]:
    """The two blocks' weights on validation documents: the first-level block's (``WEIGHT_GRID``) by first-level
    accuracy plus macro-F1, then the full-label block's (``FULL_WEIGHT_GRID``) by full-label accuracy plus
    macro-F1 on the rows labelled with one of the model's classes (under ``mix`` it changes only the choice
    within a level); ties go to the smaller weight. Macro-F1 beside accuracy: portals file many documents under
    a few classes, and on a few hundred validation documents accuracy alone moves with two or three of them
    (official recipe: accuracy 0.858 at weight 4 against 0.850 at 8, macro-F1 0.770 against 0.792).

    Args:
        logits: the transformer's pooled logits of the validation documents.
        first, full: the channel's unweighted scores (``NgramChannel.parts``).
        gold: the documents' labels (None: not scored).
        labels: the model's classes, in logit order.

    Returns:
        (weight, full_weight, tried): ``tried`` maps ``"weight/full_weight"`` to [first-level accuracy,
        full-label accuracy, first-level macro-F1, full-label macro-F1].

    Example:
        >>> weight, full_weight, tried = choose_weights(logits, *channel.parts(texts, titles, labels), gold, labels)
    """
    from sklearn.metrics import f1_score

    from govtopic.labels import hierarchical_decode

    keep = [i for i, y in enumerate(gold) if y]
    if not keep:
        return 1.0, 0.0, {}
    wanted = np.array([l1(gold[i]) for i in keep])
    column = {c: j for j, c in enumerate(labels)}
    at_full = np.array([gold[i] in column for i in keep])
    wanted_full = np.array([column.get(gold[i], -1) for i in keep])
    logits, first, full = logits[keep], first[keep], full[keep]

    def figures(w: float, wf: float) -> tuple[float, float, float, float]:
        index, names, l1_probs = hierarchical_decode(softmax(mix(logits, first, full, w, wf, labels)), labels)
        chosen = np.array(names)[l1_probs.argmax(axis=1)]
        out = [np.mean(chosen == wanted), 0.0, f1_score(wanted, chosen, average="macro", zero_division=0), 0.0]
        if at_full.any():
            out[1] = np.mean(index[at_full] == wanted_full[at_full])
            out[3] = f1_score(wanted_full[at_full], index[at_full], average="macro", zero_division=0)
        return tuple(round(float(x), 4) for x in out)

    tried = {(w, 0.0): figures(w, 0.0) for w in WEIGHT_GRID}
    weight = max(WEIGHT_GRID, key=lambda w: (tried[(w, 0.0)][0] + tried[(w, 0.0)][2], -w))
    if np.any(full) and at_full.any():
        tried.update({(weight, wf): figures(weight, wf) for wf in FULL_WEIGHT_GRID if wf})
    full_weight = max(
        (k[1] for k in tried if k[0] == weight), key=lambda wf: (tried[(weight, wf)][1] + tried[(weight, wf)][3], -wf)
    )
    return weight, full_weight, {f"{a:g}/{b:g}": list(v) for (a, b), v in tried.items()}
