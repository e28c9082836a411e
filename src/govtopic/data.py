"""Loading labelled documents (JSONL, CSV, Parquet) and splitting them into train/validation/test."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from govtopic.config import DataConfig
from govtopic.labels import Taxonomy, l1, parse_label
from govtopic.normalize import NormalizeConfig, normalize_many

logger = logging.getLogger(__name__)

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "val": "validation",
    "test": "test",
}


class DataError(ValueError):
    """A data file that cannot be used as it is; the message names the file, row or column and the fix."""


@dataclass
class Split:
    """Documents of one split, normalised and ready for a tokenizer."""

    texts: list[str]
    labels: list[str | None]
    titles: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class LabelledData:
    train: Split
    validation: Split
    test: Split
    label_names: list[str]
    skipped: dict[str, int] = field(default_factory=dict)


def file_format(path: str | Path) -> str:
    """The datasets builder name for a file, looking through a .gz suffix."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in {".gz", ".bz2", ".xz", ".zst"}:
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in _FORMATS:
        raise DataError(f"{path}: unsupported file type; use .jsonl, .csv or .parquet (optionally .gz)")
    return _FORMATS[suffixes[-1]]


def _find_bad_json_line(path: Path) -> str | None:
    """Name the first line of a JSONL file that does not parse (datasets' own error does not)."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    return f"line {number}: not valid JSON ({err.msg} at column {err.colno})"
                if not isinstance(value, dict):
                    return f"line {number}: expected a JSON object per line, got {type(value).__name__}"
    except UnicodeDecodeError as err:
        return f"not UTF-8 ({err}); convert it, e.g. iconv -f GB18030 -t UTF-8"
    return None


def read_table(path: str | Path) -> list[dict]:
    """Rows of a JSONL/CSV/Parquet file through ``datasets``, with errors that name the file and line."""
    from datasets import load_dataset

    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist; check data.train_file / data.test_file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty; it needs one document per row")
    fmt = file_format(p)
    try:
        rows = load_dataset(fmt, data_files=str(p), split="train").to_list()
    except Exception as err:  # datasets and pyarrow raise several types (bad UTF-8 shows only in to_list)
        where = _find_bad_json_line(p) if fmt == "json" else None
        if where is None and isinstance(err, UnicodeDecodeError):
            where = "not UTF-8; convert it, e.g. iconv -f GB18030 -t UTF-8"
        raise DataError(f"{p}: could not be read as {fmt}: {where or err}") from err
    if not rows:
        raise DataError(f"{p}: no rows found; it needs one document per row")
    return rows


def _require_columns(rows: list[dict], path: str, columns: dict[str, str | None]) -> None:
    present = set(rows[0].keys())
    for setting, column in columns.items():
        if column is not None and column not in present:
            raise DataError(
                f"{path}: no column {column!r} (set by data.{setting}); columns found: "
                f"{', '.join(sorted(present))}. Set data.{setting} to the right column name."
            )


def document_text(row: dict, cfg: DataConfig) -> str:
    """Body text with the title prepended when configured (the same rule for training and prediction)."""
    text = row.get(cfg.text_column)
    text = "" if text is None else str(text)
    if cfg.prepend_title and cfg.title_column:
        title = row.get(cfg.title_column)
        if title:
            text = f"{title}\n{text}"
    return text


def parse_rows(rows: list[dict], path: str, cfg: DataConfig, taxonomy: Taxonomy | None) -> list[dict]:
    """Canonical labels (checked against the taxonomy) for each row; unlabelled rows keep None."""
    _require_columns(rows, path, {"text_column": cfg.text_column, "label_column": cfg.label_column})
    problems = []
    for number, row in enumerate(rows, 1):
        label = parse_label(row.get(cfg.label_column))
        if label is not None and taxonomy is not None:
            why = taxonomy.problem(label)
            if why:
                ident = f" (id {row['id']})" if "id" in row else ""
                problems.append(f"row {number}{ident}: label {label!r}: {why}")
        if label is not None and cfg.label_level == "l1":
            label = l1(label)
        row["_label"] = label
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(
            f"{path}: {len(problems)} label(s) outside the taxonomy {cfg.taxonomy}:\n  {shown}{more}\n"
            "Fix the labels, or set data.taxonomy: null to accept any label."
        )
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


def _to_split(rows: list[dict], indices, cfg: DataConfig, norm: NormalizeConfig | None) -> Split:
    chosen = [rows[i] for i in indices]
    texts = normalize_many([document_text(r, cfg) for r in chosen], norm)
    titles = [str(r.get(cfg.title_column) or "") if cfg.title_column else "" for r in chosen]
    ids = [str(r.get("id", i)) for r, i in zip(chosen, indices)]
    return Split(texts, [r["_label"] for r in chosen], titles, ids)


def assign_splits(rows: list[dict], cfg: DataConfig, seed: int) -> dict[str, list[int]]:
    """Row indices per split: from the split column when present, else seeded stratified splits."""
    labelled = [i for i, r in enumerate(rows) if r["_label"] is not None]
    col = cfg.split_column
    if col and col in rows[0]:
        groups: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
        for i in labelled:
            name = split_name(rows[i].get(col))
            if name is None:
                raise DataError(
                    f"row {i + 1}: split {rows[i].get(col)!r} in column {col!r} is not train/validation/test"
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
    """Read, check, normalise and split the configured data files."""
    if not cfg.train_file:
        raise DataError("data.train_file is not set; point it at a JSONL, CSV or Parquet file of documents")
    taxonomy = Taxonomy.load(cfg.taxonomy) if cfg.taxonomy else None
    rows = parse_rows(read_table(cfg.train_file), cfg.train_file, cfg, taxonomy)
    skipped: dict[str, int] = {"unlabelled": sum(r["_label"] is None for r in rows)}
    groups = assign_splits(rows, cfg, seed)
    if cfg.test_file:
        test = load_eval_file(cfg.test_file, cfg, norm, "test", taxonomy)
        groups["train"] += groups.pop("test")
        groups = _drop_overlap(rows, groups, set(test.texts), cfg, norm, skipped)
    train_idx = groups["train"]
    if cfg.max_train_samples is not None:
        train_idx = train_idx[: cfg.max_train_samples]
    counts = Counter(rows[i]["_label"] for i in train_idx)
    rare = {y for y, c in counts.items() if c < cfg.min_class_count}
    if rare:
        skipped["rare_class_rows"] = sum(counts[y] for y in rare)
        logger.info("dropping %d class(es) with < %d training rows", len(rare), cfg.min_class_count)
        train_idx = [i for i in train_idx if rows[i]["_label"] not in rare]
    if not train_idx:
        raise DataError(f"{cfg.train_file}: no labelled training rows (label column {cfg.label_column!r})")
    train = _to_split(rows, train_idx, cfg, norm)
    validation = _to_split(rows, groups["validation"], cfg, norm)
    if not cfg.test_file:
        test = _to_split(rows, groups["test"], cfg, norm)
    label_names = sorted(set(train.labels))
    logger.info(
        "train %d, validation %d, test %d documents; %d classes; skipped %s",
        len(train),
        len(validation),
        len(test),
        len(label_names),
        skipped,
    )
    return LabelledData(train, validation, test, label_names, skipped)


def _drop_overlap(rows, groups, test_texts: set[str], cfg, norm, skipped: dict) -> dict[str, list[int]]:
    """Training and validation rows whose text is also in the test file are left out (no leak)."""
    out = dict(groups)
    for name in ("train", "validation"):
        texts = normalize_many([document_text(rows[i], cfg) for i in groups[name]], norm)
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
    taxonomy: Taxonomy | None = None,
) -> Split:
    """Labelled documents of one file for evaluation: its ``split`` rows when it has a split column."""
    rows = parse_rows(read_table(path), str(path), cfg, taxonomy)
    col = cfg.split_column
    keep = [i for i, r in enumerate(rows) if r["_label"] is not None]
    if not keep:
        raise DataError(f"{path}: no labelled rows to evaluate (label column {cfg.label_column!r})")
    if split and col and col in rows[0]:
        wanted = split_name(split)
        keep = [i for i in keep if split_name(rows[i].get(col)) == wanted]
        if not keep:
            raise DataError(f"{path}: no labelled rows in split {split!r} of column {col!r}; use --split all")
    return _to_split(rows, keep, cfg, norm)
