r"""Corrections back in: a Label Studio export and a plain table of id + label as training sources.

Two kinds of source are read as corrections (found by their content, no setting needed):

- a Label Studio JSON export (a ``.json`` file holding a list of tasks), for instance of the queue
  ``govtopic review`` wrote: each task's latest annotation that was not cancelled gives the label (the
  second-level choice's full label ``一级\二级`` when it belongs to the chosen first level, else the first
  level alone), its ``data`` the document id (``doc_id`` or ``id``), title and text;
- a table (JSONL, CSV, TSV, Parquet) with an ``id`` column and the source's label column but neither its text nor
  its title column.

Which label wins: **a later source wins.** A correction whose id names a document of an earlier source
replaces that document's label (the document keeps its text, source and split, so a test document stays in
test); the correction row itself is then dropped. A correction for an id not seen before is a new document
when it has text, and is left out (counted as ``corrections_unmatched``) when it has none. Inside one
correction file an id given twice with different labels is an error listing them with their counts; the same
label twice counts once.

Example (config):
    data:
      sources:
        - {name: official, file: ../shared/data/official.jsonl.gz}
        - {name: reviewed, file: runs/quickstart/review/export.json}   # Label Studio export: wins
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

from govtopic.errors import DataError
from govtopic.labels import SEP, TRAINING_FIX, LabelError, l1

logger = logging.getLogger(__name__)

# Marks rows read from a Label Studio export (their text is in "text" and "title", their label in "label").
_EXPORT = "_label_studio"


def read_export(path: str) -> list[dict] | None:
    """The annotated tasks of a Label Studio JSON export as rows (id, title, text, label), or None when the
    file is not one (anything but a ``.json`` file holding a list of tasks with ``data``)."""
    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file():
        return None
    try:
        tasks = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not (isinstance(tasks, list) and tasks and all(isinstance(t, dict) and "data" in t for t in tasks)):
        return None
    rows = []
    for number, task in enumerate(tasks, 1):
        data = task.get("data") or {}
        ident = data.get("doc_id", data.get("id"))
        rows.append(
            {
                "id": None if ident is None else str(ident),
                "title": data.get("title") or "",
                "text": data.get("text") or "",
                "label": _task_label(task),
                "_task": task.get("id", number),
                _EXPORT: True,
            }
        )
    return rows


def _task_label(task: dict) -> str | None:
    """The label of a task's latest annotation that was not cancelled (None when it has none)."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        return None
    latest = max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), done.index(a)))
    first, full = None, []
    for part in latest.get("result") or []:
        choices = (part.get("value") or {}).get("choices") or []
        if part.get("from_name") == "l1" and choices:
            first = choices[0]
        else:
            full += [c for c in choices if SEP in c]
    if first is None:  # a project with one Choices of full labels
        return full[0] if len(full) == 1 else None
    # A second-level choice left over from a first level the annotator switched away from does not count.
    mine = [c for c in full if l1(c) == first]
    return mine[0] if mine else first


def is_correction_table(rows: list[dict], source) -> bool:
    """A table of id + label: an ``id`` and the label column, neither the text nor the title column."""
    head = rows[0] if rows else {}
    return (
        "id" in head
        and source.label_column in head
        and (source.text_column is None or source.text_column not in head)
        and (source.title_column is None or source.title_column not in head)
    )


def as_corrections(
    rows: list[dict], source, scheme, skipped: dict, path: str, fix: str = TRAINING_FIX
) -> list[dict] | None:
    """Canonical rows (``_label``, ``_title``, ``_text``, ...; ``_correction`` set) when ``rows`` are
    corrections (a Label Studio export or an id + label table), else None. Raises DataError for a file that
    gives one id two labels, or a correction without an id. ``scheme``: the source's ``LabelScheme``; ``fix``:
    what an unknown label's error tells the reader to do (default: the training fix)."""

    export = bool(rows) and rows[0].get(_EXPORT)
    if not (export or is_correction_table(rows, source)):
        return None
    label_key, title_key, text_key = ("label", "title", "text") if export else (source.label_column, None, None)
    no_id = [i + 1 for i, r in enumerate(rows) if r.get("id") in (None, "")]
    if no_id:
        raise DataError(
            f"{path}: {len(no_id)} correction(s) without a document id (first: row {no_id[0]}); a correction names "
            "the document it corrects: give every row an id (Label Studio: data.doc_id)"
        )
    unannotated = [r for r in rows if r.get(label_key) in (None, "")]
    if unannotated:
        skipped["corrections_unannotated"] = skipped.get("corrections_unannotated", 0) + len(unannotated)
    rows = [r for r in rows if r.get(label_key) not in (None, "")]
    ids = [str(r["id"]) for r in rows]
    try:
        labels = scheme.read([r[label_key] for r in rows], path, skipped, ids, fix)
    except LabelError as err:
        raise DataError(str(err)) from err
    out = _one_label_per_id(rows, ids, labels, path, skipped)
    for row in out:
        row.update(
            id=str(row["id"]),
            _title=str(row.get(title_key) or "") if title_key else "",
            _text=str(row.get(text_key) or "") if text_key else "",
            _source=source.name,
            _weight=source.weight,
            _correction=True,
        )
    logger.info("%s: %d correction(s) read", path, len(out))
    return out


def id_conflicts(ids: list[str | None], labels: list[str | None]) -> tuple[int, int, str] | None:
    """The document ids given more than one label, as (ids, their rows, the first five listed with their labels
    and row numbers); None when every id has one label. Rows without an id or a label are left out.

    Example:
        >>> id_conflicts(["a", "b", "a"], ["其他", "其他", "综合政务"])
        (1, 2, 'id a: 其他, 综合政务 (rows 1, 3)')
    """
    seen: dict[str, set] = defaultdict(set)
    where: dict[str, list[int]] = defaultdict(list)
    for number, (ident, label) in enumerate(zip(ids, labels), 1):
        if ident is not None and label is not None:
            seen[ident].add(label)
            where[ident].append(number)
    conflicts = {i: labs for i, labs in seen.items() if len(labs) > 1}
    if not conflicts:
        return None
    shown = "; ".join(
        f"id {i}: {', '.join(sorted(labs))} (rows {', '.join(map(str, where[i][:5]))})"
        for i, labs in list(conflicts.items())[:5]
    )
    more = "; ..." if len(conflicts) > 5 else ""
    return len(conflicts), sum(len(where[i]) for i in conflicts), shown + more


def _one_label_per_id(rows, ids, labels, path: str, skipped: dict) -> list[dict]:
    conflicts = id_conflicts(ids, labels)
    if conflicts:
        n_ids, n_rows, shown = conflicts
        raise DataError(
            f"{path}: {n_ids} document id(s) given different labels in the same file ({n_rows} rows): "
            f"{shown}. Keep one label per id, or put the later decision in a later source (a later source wins)."
        )
    out, kept = [], set()
    for row, ident, label in zip(rows, ids, labels):
        if label is None or ident in kept:
            continue
        kept.add(ident)
        out.append({**row, "_label": label})
    repeated = sum(Counter(i for i, lab in zip(ids, labels) if lab is not None).values()) - len(out)
    if repeated:
        skipped["corrections_repeated"] = skipped.get("corrections_repeated", 0) + repeated
    return out


def apply_corrections(sources_rows: list[list[dict]], skipped: dict) -> list[list[dict]]:
    """Apply correction rows to the documents of earlier sources with the same id: a later source wins.

    Args:
        sources_rows: each source's canonical rows, in the order of ``data.sources``.
        skipped: counts reported by training; ``corrections_applied``, ``corrections_changed`` and
            ``corrections_unmatched`` are added.

    Returns:
        The rows per source, correction rows that were applied (or had no text and no match) left out.

    Example:
        >>> official = [{"id": "a", "_label": "其他", "_text": "...", "_title": ""}]
        >>> reviewed = [{"id": "a", "_label": "卫生、体育\\卫生", "_text": "", "_title": "", "_correction": True}]
        >>> apply_corrections([official, reviewed], {})[0][0]["_label"]
        '卫生、体育\\卫生'
    """
    index: dict[str, list[dict]] = defaultdict(list)
    counts = Counter()
    out = []
    for rows in sources_rows:
        kept = []
        for row in rows:
            ident = row.get("id")
            key = None if ident is None else str(ident)
            if not row.get("_correction"):
                if key is not None:
                    index[key].append(row)
                kept.append(row)
            elif key in index:
                targets = index[key]
                counts["applied"] += 1
                counts["changed"] += any(t["_label"] != row["_label"] for t in targets)
                if len({t["_source"] for t in targets}) > 1:
                    counts["ambiguous"] += 1
                for target in targets:
                    target["_label"] = row["_label"]
            elif row["_text"].strip() or row["_title"].strip():
                index[key].append(row)
                kept.append(row)
            else:
                counts["unmatched"] += 1
        out.append(kept)
    for name in ("applied", "changed", "unmatched"):
        if counts[name]:
            skipped[f"corrections_{name}"] = skipped.get(f"corrections_{name}", 0) + counts[name]
    if counts["unmatched"]:
        logger.warning(
            "%d correction(s) name no document of an earlier source and have no text: left out "
            "(check that the ids are the training files' id column)",
            counts["unmatched"],
        )
    if counts["ambiguous"]:
        logger.warning(
            "%d correction id(s) name documents in more than one source: all were corrected", counts["ambiguous"]
        )
    return out
