"""Turning labelled rows into train/validation/test splits: sources, label schemes, splitting, evaluation files
and corrections. Reading the table files themselves (JSONL, CSV, TSV, Parquet) is ``govtopic.tables``."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from govtopic import corrections
from govtopic.config import DataConfig, SourceConfig
from govtopic.errors import DataError  # noqa: F401 (govtopic.data.DataError, as before)
from govtopic.labels import TRAINING_FIX, LabelError, LabelMap, LabelScheme, Taxonomy, parse_label
from govtopic.normalize import NormalizeConfig, normalize_many
from govtopic.tables import read_table

logger = logging.getLogger(__name__)

_SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "val": "validation",
    "test": "test",
}


@dataclass
class Split:
    """Documents of one split, normalised and ready for a tokenizer: body and title kept apart, so the
    model's title rule (``long_doc.title``) reads them the same way in training and prediction."""

    texts: list[str]
    labels: list[str | None]
    titles: list[str]
    ids: list[str]
    sources: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sources = self.sources or [""] * len(self.texts)
        self.weights = self.weights or [1.0] * len(self.texts)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, keep: list[int]) -> Split:
        return Split(*([getattr(self, f)[i] for i in keep] for f in _SPLIT_FIELDS))


_SPLIT_FIELDS = ("texts", "labels", "titles", "ids", "sources", "weights")


def concat(splits: list[Split]) -> Split:
    return Split(*([x for sp in splits for x in getattr(sp, f)] for f in _SPLIT_FIELDS))


def source_groups(sources: list[str]) -> dict[str, list[int]]:
    """The row positions of each source, sources in name order; empty when every row has the same source (a
    per-source breakdown would repeat the whole).

    Example:
        >>> source_groups(["official", "regulations", "official"])
        {'official': [0, 2], 'regulations': [1]}
    """
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(sources):
        groups.setdefault(name, []).append(i)
    return dict(sorted(groups.items())) if len(groups) > 1 else {}


@dataclass
class LabelledData:
    train: Split
    validation: Split
    test: Split
    label_names: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    scheme: LabelScheme | None = None


def _require_columns(
    rows: list[dict], path: str, columns: dict[str, str | None], prefix: str = "data", against_model: bool = False
) -> None:
    present = set(rows[0].keys())
    for setting, column in columns.items():
        if column is None or column in present:
            continue
        if against_model:
            # evaluate and calibrate-thresholds take no config: the model's own columns are the rule.
            raise DataError(
                f"{path}: no column {column!r}; columns found: {', '.join(sorted(present))}. The model reads "
                f"documents scored against it from the columns it was trained with ({prefix}.{setting}: "
                f"{column!r}): rename the file's column to {column!r}."
            )
        raise DataError(
            f"{path}: no column {column!r} (set by {prefix}.{setting}); columns found: "
            f"{', '.join(sorted(present))}. Rename the file's column to {column!r}, or set {prefix}.{setting} in "
            "the config to the right column name"
            + (" (or to null when the data has none)." if setting == "title_column" else ".")
        )


def resolve_sources(cfg: DataConfig) -> list[SourceConfig]:
    """The training sources: ``data.sources``, or ``data.train_file`` with the data-level columns."""
    if cfg.sources:
        sources = list(cfg.sources)
    elif cfg.train_file:
        sources = [
            SourceConfig(
                file=cfg.train_file,
                text_column=cfg.text_column,
                title_column=cfg.title_column,
                label_column=cfg.label_column,
                split_column=cfg.split_column,
            )
        ]
    else:
        raise DataError("no training data: set data.sources (or data.train_file) to JSONL, CSV, TSV or Parquet files")
    return [dataclasses.replace(s, name=s.name or Path(s.file).name.split(".")[0]) if s.file else s for s in sources]


def check_source_names(names: list[str], cfg: DataConfig) -> None:
    """Raise ``DataError`` unless every name is one of the training sources' (``data.sources``; a source without
    a name is named after its file, e.g. ``portal`` for ``portal.jsonl``). Reads the config only: no file."""
    if not cfg.sources:
        raise DataError(
            f"--source {', '.join(names)}: the model was trained on one file (data.train_file), not on named "
            "data.sources; its validation rows are all from that file: leave --source out"
        )
    known = [s.name for s in resolve_sources(cfg)]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(
            f"--source {', '.join(unknown)}: no training source has that name; the model's training sources "
            f"(data.sources): {', '.join(known)}"
        )


def source_rows(split: Split, names: list[str], cfg: DataConfig) -> Split:
    """The rows of ``split`` that come from the named training sources.

    Args:
        split: a split of the training sources (e.g. ``load_labelled(...).validation``).
        names: the sources to keep (see ``check_source_names``); a name with no rows in ``split`` is a
            ``DataError`` that lists the sources it has rows from.
        cfg: the data config the split was loaded with.

    Example:
        >>> source_rows(load_labelled(cfg.data, cfg.normalize, 42).validation, ["official"], cfg.data)
        Split(texts=[...159 documents...], ...)
    """
    names = list(dict.fromkeys(names))
    check_source_names(names, cfg)
    counts = {name: split.sources.count(name) for name in dict.fromkeys(split.sources)}
    empty = [n for n in names if not counts.get(n)]
    if empty:
        have = ", ".join(f"{name} ({n})" for name, n in counts.items())
        raise DataError(
            f"--source {', '.join(empty)}: none of its rows are in this split (all in train or test); rows here "
            f"come from: {have or 'no source'}. Use one of those"
        )
    return split.subset([i for i, s in enumerate(split.sources) if s in names])


def label_scheme(cfg: DataConfig, source: SourceConfig | None = None) -> LabelScheme:
    """The label scheme for ``cfg`` (with a source's own spellings, which win over data.label_map)."""
    taxonomy = Taxonomy.load(cfg.taxonomy) if cfg.taxonomy else None
    base = Path(cfg.taxonomy).parent if cfg.taxonomy else None
    try:
        shared = LabelMap.load(cfg.label_map, base)
        if source is not None and source.label_map is not None:
            own = LabelMap.load(source.label_map, base)
            shared = LabelMap({**shared.labels, **own.labels}, f"{shared.version}+{source.name}:{own.version}")
        return LabelScheme(taxonomy, shared, cfg.unknown_labels, cfg.label_level)
    except LabelError as err:
        raise DataError(str(err)) from err


def _texts(rows: list[dict], path: str, column: str | None, setting: str) -> list[str]:
    """A text column as strings ('' for missing); any other type is an error naming the row."""
    if column is None:
        return [""] * len(rows)
    out = []
    for number, row in enumerate(rows, 1):
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            ident = f" (id {row['id']})" if row.get("id") is not None else ""
            raise DataError(
                f"{path}: row {number}{ident}: {setting} column {column!r} holds {type(value).__name__} "
                f"{str(value)[:40]!r}, expected text. Fix the row, or point {setting} at a text column."
            )
        out.append(value or "")
    return out


def read_source(source: SourceConfig, cfg: DataConfig, skipped: dict) -> list[dict]:
    """Rows of one source with canonical ``_label``, ``_title``, ``_text``, ``_source`` and ``_weight``.

    A row may hold a title, a body or both: title-only and summary-only rows are documents too.
    """
    path = str(source.file)
    rows = corrections.read_export(path) or read_table(path)  # a Label Studio export, else a table
    # id + label rows, or a Label Studio export (corrections.py)
    corrected = corrections.as_corrections(rows, source, label_scheme(cfg, source), skipped, path)
    if corrected is not None:
        return corrected
    prefix = "data.sources[]" if cfg.sources else "data"
    columns = {
        "label_column": source.label_column,
        "title_column": source.title_column,
        "text_column": source.text_column,
    }
    _require_columns(rows, path, columns, prefix)
    if source.text_column is None and source.title_column is None:
        raise DataError(f"{path}: text_column and title_column are both null; a document needs one of them")
    titles = _texts(rows, path, source.title_column, "title_column")
    bodies = _texts(rows, path, source.text_column, "text_column")
    ids = [row.get("id") for row in rows]
    try:
        labels = label_scheme(cfg, source).read([r.get(source.label_column) for r in rows], path, skipped, ids)
    except LabelError as err:
        raise DataError(str(err)) from err
    for row, label, title, body in zip(rows, labels, titles, bodies):
        row.update(_label=label, _title=title, _text=body, _source=source.name, _weight=source.weight)
        # A label dropped as unknown (data.unknown_labels: drop) is counted there, not again as unlabelled.
        row["_dropped"] = label is None and parse_label(row.get(source.label_column)) is not None
    if not any(r["_label"] is not None and (r["_text"].strip() or r["_title"].strip()) for r in rows):
        raise DataError(
            f"{path}: no usable rows: none has both a label (column {source.label_column!r}) and some text. "
            "Check the source's label_column, text_column and title_column."
        )
    return rows


def parse_rows(
    rows: list[dict],
    path: str,
    cfg: DataConfig,
    scheme: LabelScheme | None = None,
    group_by: str | None = None,
    fix: str = TRAINING_FIX,
) -> list[dict]:
    """Canonical labels, titles and bodies of an evaluation file's rows (data-level columns); ``group_by``
    names a column whose values group the rows in reports (default: one group named after the file)."""
    title_column = cfg.title_column if cfg.title_column in rows[0] else None
    _require_columns(
        rows,
        path,
        {"text_column": cfg.text_column, "label_column": cfg.label_column},
        against_model=fix != TRAINING_FIX,
    )
    scheme = scheme or label_scheme(cfg)
    try:
        labels = scheme.read([r.get(cfg.label_column) for r in rows], path, None, [r.get("id") for r in rows], fix)
    except LabelError as err:
        raise DataError(str(err)) from err
    titles = _texts(rows, path, title_column, "title_column")
    bodies = _texts(rows, path, cfg.text_column, "text_column")
    if group_by is not None and group_by not in rows[0]:
        raise DataError(f"{path}: no column {group_by!r} to group by; columns: {', '.join(sorted(rows[0]))}")
    name = Path(path).name.split(".")[0]
    for row, label, title, body in zip(rows, labels, titles, bodies):
        group = str(row.get(group_by)) if group_by else name
        row.update(_label=label, _title=title, _text=body, _source=group, _weight=1.0)
    return rows


def _stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out); classes with one example stay on the kept side so stratification works."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    if fraction <= 0 or len(labels) < 2:
        return idx, idx[:0]
    counts = Counter(labels)
    single = np.array([counts[y] < 2 for y in labels])
    if single.any():
        logger.info("%d class(es) with one example kept in the larger split", int(single.sum()))
    rest = idx[~single]
    rest_labels = [labels[i] for i in rest]
    n_held = max(1, round(fraction * len(rest)))
    if n_held >= len(rest):
        logger.warning("too few documents (%d) to hold out a fraction of %.2f; nothing held out", len(rest), fraction)
        return idx, idx[:0]
    stratify = rest_labels if n_held >= len(set(rest_labels)) else None
    kept, held = train_test_split(rest, test_size=n_held, random_state=seed, stratify=stratify)
    return np.sort(np.concatenate([kept, idx[single]])), np.sort(held)


def _to_split(rows: list[dict], indices, norm: NormalizeConfig | None) -> Split:
    chosen = [rows[i] for i in indices]
    texts = normalize_many([r["_text"] for r in chosen], norm)
    titles = normalize_many([r["_title"] for r in chosen], norm)
    ids = [str(r.get("id", i)) for r, i in zip(chosen, indices)]
    sources = [r["_source"] for r in chosen]
    weights = [float(r["_weight"]) for r in chosen]
    return Split(texts, [r["_label"] for r in chosen], titles, ids, sources, weights)


def assign_splits(rows: list[dict], cfg: DataConfig, seed: int, col: str | None = None) -> dict[str, list[int]]:
    """Row indices per split: from the split column ``col`` when present, else seeded stratified splits."""
    labelled = [i for i, r in enumerate(rows) if r["_label"] is not None]
    if col and col in rows[0]:
        groups: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
        for i in labelled:
            name = split_name(rows[i].get(col))
            if name is None:
                raise DataError(
                    f"{rows[i]['_source']}: row {i + 1}: split {rows[i].get(col)!r} in column {col!r} is not "
                    "train/validation/test; fix the row or set the source's split_column to null"
                )
            groups[name].append(i)
    else:
        labels = [rows[i]["_label"] for i in labelled]
        rest, test = _stratified_split(labels, cfg.test_fraction, seed)
        groups = {"train": [labelled[i] for i in rest], "validation": [], "test": [labelled[i] for i in test]}
    if not groups["validation"] and cfg.validation_from_train > 0:
        train = groups["train"]
        kept, held = _stratified_split([rows[i]["_label"] for i in train], cfg.validation_from_train, seed)
        groups = {**groups, "train": [train[i] for i in kept], "validation": [train[i] for i in held]}
    return groups


def load_labelled(cfg: DataConfig, norm: NormalizeConfig | None, seed: int) -> LabelledData:
    """Read, check, normalise and split every training source into one train/validation/test split.

    Each source keeps its own split column (or gets a seeded stratified split), so every source is
    represented in validation and test and reports can give figures per source.
    """
    sources = resolve_sources(cfg)
    skipped: dict[str, int] = {}
    parts: dict[str, list[Split]] = {"train": [], "validation": [], "test": []}
    test = load_eval_file(cfg.test_file, cfg, norm, "test") if cfg.test_file else None
    # Corrections (govtopic/corrections.py) relabel earlier sources' documents with the same id: a later source wins.
    read = corrections.apply_corrections([read_source(s, cfg, skipped) for s in sources], skipped)
    for source, rows in zip(sources, read):
        if not rows:  # every row of a correction source went to an earlier source's document
            continue
        _check_repeated_ids(rows, str(source.file))
        unlabelled = sum(r["_label"] is None and not r.get("_dropped") for r in rows)
        if unlabelled:
            skipped["unlabelled"] = skipped.get("unlabelled", 0) + unlabelled
        groups = assign_splits(rows, cfg, seed, source.split_column)
        if test is not None:
            groups = {**groups, "train": groups["train"] + groups["test"], "test": []}
            groups = _drop_overlap(rows, groups, set(test.texts), cfg, norm, skipped)
        empty = {i for i in groups["train"] if not (rows[i]["_text"].strip() or rows[i]["_title"].strip())}
        if empty:
            skipped["empty_rows"] = skipped.get("empty_rows", 0) + len(empty)
            groups["train"] = [i for i in groups["train"] if i not in empty]
        for name in parts:
            parts[name].append(_to_split(rows, groups[name], norm))
    train = concat(parts["train"])
    if cfg.max_train_samples is not None:
        train = train.subset(list(range(min(cfg.max_train_samples, len(train)))))
    counts = Counter(train.labels)
    rare = {y for y, c in counts.items() if c < cfg.min_class_count}
    if rare:
        skipped["rare_class_rows"] = sum(counts[y] for y in rare)
        logger.info("dropping %d class(es) with < %d training rows", len(rare), cfg.min_class_count)
        train = train.subset([i for i, y in enumerate(train.labels) if y not in rare])
    if not len(train):
        raise DataError(f"{', '.join(str(s.file) for s in sources)}: no labelled training rows")
    validation = concat(parts["validation"])
    test = test if test is not None else concat(parts["test"])
    scheme = label_scheme(cfg)
    label_names = scheme.model_labels(train.labels)
    if len(label_names) < 2:
        raise DataError(
            f"{', '.join(str(s.file) for s in sources)}: the training rows hold only one class "
            f"({', '.join(label_names) or 'none'}); a classifier needs at least two. Add documents of other classes "
            "(another source under data.sources), or check the label column and data.label_level"
        )
    logger.info(
        "train %d, validation %d, test %d documents from %d source(s); %d classes; skipped %s",
        len(train),
        len(validation),
        len(test),
        len(sources),
        len(label_names),
        skipped,
    )
    return LabelledData(train, validation, test, label_names, skipped, scheme)


def _check_repeated_ids(rows: list[dict], path: str) -> None:
    """One document id, one label: an id given different labels in one source is an error naming them (the
    model would learn both); an id repeated with the same label is a warning (the document weighs double)."""
    ids = [str(r["id"]) if r.get("id") is not None and str(r["id"]).strip() else None for r in rows]
    labels = [r["_label"] for r in rows]
    conflicts = corrections.id_conflicts(ids, labels)
    if conflicts:
        n_ids, _, shown = conflicts
        raise DataError(
            f"{path}: {n_ids} document id(s) given different labels ({shown}). "
            "Keep one row per document, or put the corrected labels in a corrections source listed after this one "
            "(data/README.md), which wins for the same id"
        )
    counts = Counter(i for i, label in zip(ids, labels) if i is not None and label is not None)
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        logger.warning(
            "%s: %d document id(s) repeated with the same label (e.g. %s): each copy is trained on",
            path,
            len(repeated),
            ", ".join(repeated[:3]),
        )


def _drop_overlap(rows, groups, test_texts: set[str], cfg, norm, skipped: dict) -> dict[str, list[int]]:
    """Training and validation rows whose text is also in the test file are left out (no leak)."""
    out = dict(groups)
    for name in ("train", "validation"):
        texts = normalize_many([rows[i]["_text"] for i in groups[name]], norm)
        out[name] = [i for i, t in zip(groups[name], texts) if t not in test_texts]
        dropped = len(groups[name]) - len(out[name])
        if dropped:
            skipped[f"{name}_rows_also_in_test_file"] = dropped
            logger.warning("%d %s row(s) also in %s left out", dropped, name, cfg.test_file)
    return out


def split_name(value: object) -> str | None:
    """train / validation / test from the spellings data files use (dev, valid, val, ...)."""
    return _SPLIT_NAMES.get(str(value or "").strip().lower())


def load_eval_file(
    path: str | Path,
    cfg: DataConfig,
    norm: NormalizeConfig | None,
    split: str | None = "test",
    scheme: LabelScheme | None = None,
    group_by: str | None = None,
    corrections_files: list[str | Path] | None = None,
    counts: dict | None = None,
    fix: str = TRAINING_FIX,
) -> Split:
    """Labelled documents of one file for evaluation: its ``split`` rows when it has a split column.

    ``fix`` is what the error about labels outside the taxonomy tells the reader to do (a config's settings by
    default; ``labels.EVALUATION_FIX`` for a file scored against a model). ``counts``, when given, receives
    ``unlabelled`` (rows of the split left out for want of a label) and ``split_column`` (whether the file has
    one, so that ``split`` chose the rows).

    Labels are read through the label scheme: a gold label outside the taxonomy (after the label map) is an
    error listing each spelling, never a silently wrong figure. ``corrections_files`` (id + label tables or
    Label Studio exports, as training reads them) relabel the documents with their ids, a later file winning,
    so that a model trained with corrections is scored against the same labels; the counts are logged.
    """
    rows = parse_rows(read_table(path), str(path), cfg, scheme, group_by, fix)
    if corrections_files:
        rows = _corrected(rows, path, cfg, corrections_files, scheme or label_scheme(cfg), fix)
    col = cfg.split_column
    has_split = bool(split and col and col in rows[0])
    chosen = range(len(rows))
    if has_split:
        wanted = split_name(split)
        chosen = [i for i in chosen if split_name(rows[i].get(col)) == wanted]
    keep = [i for i in chosen if rows[i]["_label"] is not None]
    if not keep:
        where = f" in split {split!r} of column {col!r}; use --split all" if has_split else ""
        raise DataError(f"{path}: no labelled rows to evaluate (label column {cfg.label_column!r}){where}")
    if counts is not None:
        counts.update(unlabelled=len(chosen) - len(keep), split_column=has_split)
    return _to_split(rows, keep, norm)


def _corrected(
    rows: list[dict], path, cfg: DataConfig, files: list[str | Path], scheme: LabelScheme, fix: str = TRAINING_FIX
) -> list[dict]:
    """``rows`` with the labels of ``files``' corrections applied by id. A file that is not corrections (it
    has a text or title column) is an error: evaluation never adds documents."""
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise DataError(
            f"corrections file(s) not found: {', '.join(missing)} (a relative path is read from {Path.cwd()}); "
            "check the --corrections path"
        )
    sources = []
    for file in files:
        source = SourceConfig(
            name=Path(file).name.split(".")[0],
            file=str(file),
            label_column=cfg.label_column,
            text_column=cfg.text_column,
            title_column=cfg.title_column,
        )
        found = corrections.read_export(str(file)) or read_table(file)
        skipped: dict = {}
        corrected = corrections.as_corrections(found, source, scheme, skipped, str(file), fix)
        if corrected is None:
            raise DataError(
                f"{file}: not a corrections file: give an id and a {cfg.label_column!r} column and no "
                f"{cfg.text_column!r} or {cfg.title_column!r} column, or a Label Studio export"
            )
        sources.append(corrected)
    counts: dict = {}
    evaluated = corrections.apply_corrections([rows, *sources], counts)[0]
    ids = {str(r.get("id")) for r in rows if r.get("id") is not None}
    elsewhere = len({str(c["id"]) for corrected in sources for c in corrected} - ids)
    logger.info(
        "%s: %d label(s) corrected from %s (%d changed; %d correction(s) name documents not in this file)",
        path,
        counts.get("corrections_applied", 0),
        ", ".join(map(str, files)),
        counts.get("corrections_changed", 0),
        elsewhere,
    )
    return evaluated


def document_text(row: dict, cfg: DataConfig) -> str:
    """Title and body of a table row as one text (pre-training reads all the text there is)."""
    parts = [row.get(c) for c in (cfg.title_column, cfg.text_column) if c]
    return "\n".join(str(p) for p in parts if isinstance(p, str) and p)
