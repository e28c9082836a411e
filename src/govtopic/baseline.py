"""A character n-gram TF-IDF + LinearSVC baseline, trained on the same split the model was trained on.

It is the figure a transformer has to beat (the data README's reference: 0.835 accuracy / 0.790 macro-F1 at
the first level on the regulations test split). Probabilities are a softmax of the SVM's decision values
divided by a temperature fitted on out-of-fold decision values. ``CalibratedClassifierCV`` was not used: it
refuses classes with fewer examples than folds, and the taxonomy has second-level classes with one or two
training documents. The fitted temperature matters because the report sums probabilities over second-level
children: an untempered softmax of margins near ±1 is so flat that first-level classes with many children
would win by count alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import KFold
from sklearn.svm import LinearSVC

from govtopic.calibration import fit_temperature, softmax

logger = logging.getLogger(__name__)


class TfidfBaseline:
    """Character 1–3-gram TF-IDF over the first ``max_chars`` characters, then a linear SVM.

    ``calibration_folds`` folds of out-of-fold decision values fit the softmax temperature (0 skips it and
    keeps T = 1). The vectoriser is fitted once on all training texts and shared by the folds: the IDF
    weights leak slightly across folds, which is harmless for fitting a single scalar.
    """

    def __init__(
        self,
        ngram_range: tuple[int, int] = (1, 3),
        max_chars: int = 3000,
        max_features: int | None = 200_000,
        C: float = 1.0,
        seed: int = 0,
        calibration_folds: int = 3,
    ):
        self.ngram_range = tuple(ngram_range)
        self.max_chars = max_chars
        self.max_features = max_features
        self.C = C
        self.seed = seed
        self.calibration_folds = calibration_folds
        self.temperature = 1.0
        self.classes_: list[str] = []

    def _cut(self, texts: Sequence[str]) -> list[str]:
        return [(t or "")[: self.max_chars] for t in texts]

    def _svm(self) -> LinearSVC:
        return LinearSVC(C=self.C, random_state=self.seed)

    def fit(self, texts: Sequence[str], labels: Sequence[str | None]) -> TfidfBaseline:
        """Fit on the documents that have a label (rows with a None label are skipped)."""
        if len(texts) != len(labels):
            raise ValueError(f"got {len(texts)} texts but {len(labels)} labels")
        rows = [(t, y) for t, y in zip(texts, labels) if y]
        y = np.array([r[1] for r in rows], dtype=object)
        if len(set(y)) < 2:
            raise ValueError(f"the baseline needs at least 2 classes to train on, got {sorted(set(y))}")
        self.vectorizer = TfidfVectorizer(
            analyzer="char",
            ngram_range=self.ngram_range,
            sublinear_tf=True,
            max_features=self.max_features,
            dtype=np.float32,
        )
        x = self.vectorizer.fit_transform(self._cut([r[0] for r in rows]))
        self.model = self._svm().fit(x, y)
        self.classes_ = [str(c) for c in self.model.classes_]
        self.temperature = self._fit_temperature(x, y)
        logger.info(
            "baseline trained on %d documents, %d classes, %d features, temperature %.3f",
            len(y),
            len(self.classes_),
            x.shape[1],
            self.temperature,
        )
        return self

    def _scores(self, model: LinearSVC, x) -> np.ndarray:
        """Decision values as an (n, classes of ``model``) matrix, also in the two-class case."""
        d = model.decision_function(x)
        return np.column_stack([-d, d]) if d.ndim == 1 else d

    def _fit_temperature(self, x, y: np.ndarray) -> float:
        if self.calibration_folds < 2 or len(y) < 2 * self.calibration_folds:
            return 1.0
        index = {c: i for i, c in enumerate(self.classes_)}
        scores = np.full((len(y), len(self.classes_)), -np.inf)
        seen = np.zeros(len(y), dtype=bool)
        folds = KFold(self.calibration_folds, shuffle=True, random_state=self.seed)
        for train, held in folds.split(x):
            if len(set(y[train])) < 2:
                continue
            model = self._svm().fit(x[train], y[train])
            cols = [index[c] for c in model.classes_]
            scores[np.ix_(held, cols)] = self._scores(model, x[held])
            # A held-out document whose class this fold never saw has no likelihood to offer.
            seen[held] = np.isin(y[held], model.classes_)
        y_idx = np.array([index[c] if s else -1 for c, s in zip(y, seen)])
        return fit_temperature(scores, y_idx)

    def predict_proba(self, texts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """Probabilities (n, len(labels)) in the column order of ``labels``.

        A label the baseline never saw gets 0. Classes the baseline knows but ``labels`` lacks are dropped and
        each row renormalised over the remaining ones, so rows still sum to 1.
        """
        if not self.classes_:
            raise RuntimeError("TfidfBaseline.predict_proba called before fit()")
        labels = list(labels)
        own = softmax(self._scores(self.model, self.vectorizer.transform(self._cut(texts))), self.temperature)
        out = np.zeros((len(texts), len(labels)))
        index = {c: i for i, c in enumerate(self.classes_)}
        shared = [(j, index[lab]) for j, lab in enumerate(labels) if lab in index]
        if not shared:
            raise ValueError(
                f"none of the {len(labels)} labels asked for is among the baseline's "
                f"{len(self.classes_)} training classes (e.g. {self.classes_[:3]})"
            )
        cols, src = zip(*shared)
        out[:, list(cols)] = own[:, list(src)]
        total = out.sum(axis=1, keepdims=True)
        return out / np.where(total > 0, total, 1.0)
