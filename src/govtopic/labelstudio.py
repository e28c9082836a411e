r"""The review queue: documents a person should look at, most useful first, as JSONL and as a Label Studio import.

``govtopic review MODEL INPUT... --output QUEUE_DIR`` predicts every document with the model's thresholds
(``govtopic calibrate-thresholds``) and writes those with ``needs_review`` to

- ``queue.jsonl``: one document per line, least certain first (smallest gap between the two most probable
  classes at the level in doubt, then lowest score), with the model's label, its top alternatives, the evidence
  passage and ``why`` it is there; then, unranked, the documents the model could not read (empty, another
  script) and those that could not be read from their file at all (``error``), so none is dropped;
- ``label_studio_tasks.json``: the same documents as Label Studio tasks, the model's guess as a pre-annotation;
- ``label_studio_config.xml``: a labelling config for the taxonomy: first-level Choices, then the second-level
  Choices of the chosen first level (``visibleWhen="choice-selected"``); each second-level choice stores the
  full label ``一级\二级`` (its ``alias``), so an export reads back without the taxonomy.

The export of the finished project is a training source (``govtopic.corrections``).
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import quoteattr

from govtopic.fsutil import (
    FileSafetyError,
    atomic_write_text,
    check_folder_claimable,
    claim_folder,
)
from govtopic.labels import SEP, l1
from govtopic.review import describe

logger = logging.getLogger(__name__)

# Documents predicted together: bounds memory while keeping batches full.
_CHUNK = 256
# Alternatives kept per document for the reviewer.
_TOP_K = 5
L1_TAG = "l1"  # name of the first-level Choices; second-level ones are l2_0, l2_1, ... in taxonomy order


def taxonomy_classes(labels: list[str], taxonomy: str | None = None) -> dict[str, list[str]]:
    r"""First-level classes mapped to their second-level classes: from a taxonomy YAML when given, else from the
    model's own labels.

    Example:
        >>> taxonomy_classes(["卫生、体育\\卫生", "其他"])
        {'卫生、体育': ['卫生'], '其他': []}
    """
    if taxonomy:
        from govtopic.labels import Taxonomy

        return Taxonomy.load(taxonomy).classes
    out: dict[str, list[str]] = {}
    for label in labels:
        first, _, second = label.partition(SEP)
        out.setdefault(first, [])
        if second:
            out[first].append(second)
    return out


def labelling_config(classes: dict[str, list[str]]) -> str:
    r"""A Label Studio labelling config (XML) for the two-level taxonomy.

    Args:
        classes: first-level classes mapped to their second-level classes (see ``taxonomy_classes``).

    Example:
        >>> print(labelling_config({"其他": []}))  # doctest: +ELLIPSIS
        <View>...<Choices name="l1" toName="text" ...><Choice value="其他"/></Choices>...</View>
    """
    lines = [
        "<View>",
        '  <Header value="$title"/>',
        '  <Text name="text" value="$text"/>',
        '  <Header value="Why: $why" size="6"/>',
        f'  <Choices name="{L1_TAG}" toName="text" choice="single-radio" required="true" showInline="true">',
    ]
    lines += [f"    <Choice value={quoteattr(first)}/>" for first in classes]
    lines.append("  </Choices>")
    for i, (first, seconds) in enumerate(classes.items()):
        if not seconds:
            continue
        lines.append(
            f'  <Choices name="l2_{i}" toName="text" choice="single-radio" showInline="true" '
            f'visibleWhen="choice-selected" whenTagName="{L1_TAG}" whenChoiceValue={quoteattr(first)}>'
        )
        lines += [f"    <Choice value={quoteattr(s)} alias={quoteattr(first + SEP + s)}/>" for s in seconds]
        lines.append("  </Choices>")
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def _choice(tag: str, value: str) -> dict:
    return {"from_name": tag, "to_name": "text", "type": "choices", "value": {"choices": [value]}}


def to_task(item: dict, classes: dict[str, list[str]]) -> dict:
    """One queue item as a Label Studio task, with the model's guess as a pre-annotation (a prediction)."""
    label = item.get("label_suggested") or item.get("label")
    result = []
    if label:
        first = l1(label)
        result.append(_choice(L1_TAG, first))
        names = list(classes)
        if SEP in label and first in classes:
            result.append(_choice(f"l2_{names.index(first)}", label))
    data = {k: item.get(k) for k in ("doc_id", "source", "title", "text", "why")}
    data["model_label"] = label
    return {
        "data": data,
        "predictions": [{"model_version": "govtopic", "score": item.get("score"), "result": result}],
    }


def _priority(result: dict) -> tuple[float, float]:
    """Smaller first: the gap between the two best classes at the level in doubt, then the score."""
    level = "top_k" if result.get("review_reason") == "second_level_unsure" else "top_k_l1"
    alts = result.get(level) or []
    gap = alts[0]["score"] - alts[1]["score"] if len(alts) > 1 else 1.0
    return gap, float(result.get("score_l1") or 0.0)


def _chunks(records, size: int) -> Iterator[list]:
    chunk = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _older_queue(path: Path) -> bool:
    """A queue folder written before folders were marked: exactly the files a queue holds."""
    return {p.name for p in path.iterdir()} <= set(QUEUE_FILES)


QUEUE_FILES = ("queue.jsonl", "label_studio_tasks.json", "label_studio_config.xml")


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A folder that turns out not to be writable (a read-only file system, no permission) named with the fix."""
    try:
        yield
    except OSError as err:
        if not isinstance(err, PermissionError) and err.errno != errno.EROFS:
            raise
        raise FileSafetyError(
            f"review queue folder {path} cannot be written ({err.strerror}: {err.filename}); make it writable or "
            "choose another folder (--output)"
        ) from err


def _explicit_taxonomy(taxonomy: str) -> dict[str, list[str]]:
    """The classes of a ``--taxonomy`` file, read before any work so that a wrong path fails at once."""
    import yaml

    if not Path(taxonomy).is_file():
        raise ValueError(
            f"--taxonomy {taxonomy}: no such file; pass a YAML file of first-level classes mapped to lists of "
            "second-level classes, or leave --taxonomy out to use the model's"
        )
    try:
        return taxonomy_classes([], taxonomy)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ValueError(f"--taxonomy {taxonomy}: {err}") from err


def _model_taxonomy(model_dir: str) -> str | None:
    """The taxonomy file of the model's own config, when it is there."""
    from govtopic.evaluation import saved_config

    if not (Path(model_dir) / "config.json").is_file():
        return None  # a Hub id: its config is not here
    cfg = saved_config(model_dir)
    return cfg.data.taxonomy if cfg.data.taxonomy and Path(cfg.data.taxonomy).is_file() else None


def _not_read(rec) -> dict:
    """A document that could not be read, as a queue line: no text, the problem as its reason."""
    return {
        "doc_id": rec.id or rec.source,
        "source": rec.source,
        "title": "",
        "text": None,
        "label": None,
        "reason": rec.error,
        "error": rec.error,
        "why": f"not read: {rec.error}",
    }


def _predict_queue(clf, records, batch_size: int) -> tuple[list[dict], list[dict], dict]:
    """Predict every record: the documents that need a person, the unranked ones (in input order), counts."""
    counts = {"documents": 0, "automatic": 0, "queued": 0, "no_topic": 0, "read_errors": 0, "duplicate_ids": 0}
    counts["by_reason"] = {}
    queue, unranked, seen, duplicates = [], [], {}, {}  # seen: id -> its first source; duplicates: id -> sources
    for chunk in _chunks(records, _CHUNK):
        readable = [r for r in chunk if r.error is None]
        results = iter(clf.predict([r.document() for r in readable], batch_size, _TOP_K, return_evidence=True))
        for rec in chunk:
            doc_id = rec.id or rec.source
            if doc_id in seen:
                duplicates.setdefault(doc_id, [seen[doc_id]]).append(rec.source)
            seen.setdefault(doc_id, rec.source)
            if rec.error is not None:
                counts["read_errors"] += 1
                logger.warning("%s: not read: %s", rec.source, rec.error)
                unranked.append(_not_read(rec))
                continue
            res = next(results)
            counts["documents"] += 1
            item = {"doc_id": doc_id, "source": rec.source, "title": rec.title or "", "text": rec.text}
            if res["label"] is None:
                counts["no_topic"] += 1
                unranked.append({**item, **res, "why": f"not read: {res.get('reason')}"})
            elif res.get("needs_review"):
                queue.append({**item, **res, "why": describe(res, clf.record.thresholds)})
                reason = res["review_reason"]
                counts["by_reason"][reason] = counts["by_reason"].get(reason, 0) + 1
            else:
                counts["automatic"] += 1
    counts["duplicate_ids"] = sum(len(v) - 1 for v in duplicates.values())
    if duplicates:
        shown = ", ".join(f"{k!r} ({', '.join(v[:2])})" for k, v in list(duplicates.items())[:5])
        logger.warning(
            "%d document(s) repeat the id of an earlier document: %s%s. Their queue lines and Label Studio tasks "
            "share a doc_id, so an export cannot tell them apart: give every document its own id (--id-column), "
            "and pass each input once",
            counts["duplicate_ids"],
            shown,
            ", ..." if len(duplicates) > 5 else "",
        )
    return queue, unranked, counts


def write_review_queue(
    model_dir: str,
    inputs: list[str],
    output_dir: str,
    text_column: str = "text",
    title_column: str | None = None,
    id_column: str = "id",
    taxonomy: str | None = None,
    batch_size: int = 32,
) -> dict:
    """Predict ``inputs`` and write the documents that need a person into ``output_dir`` (see the module doc).

    Documents that cannot be read (a malformed line, an undecodable file, a ``text`` that is not text) are
    listed in ``queue.jsonl`` after the ranked ones, unranked, with ``text: null``, the problem as ``error`` and
    ``reason``, and ``why: "not read: ..."``; like empty documents they have no text to label, so they are not
    Label Studio tasks. A document whose id an earlier one already has is queued as it is, counted and warned
    about: an export names documents by id.

    Args:
        model_dir: a model folder whose record holds thresholds (``govtopic calibrate-thresholds``).
        inputs: .txt files, folders of them, or JSONL/CSV/Parquet tables (as ``govtopic predict`` reads them).
        output_dir: the queue folder (created; its three files are replaced).
        text_column, title_column, id_column: table columns (title: the model's own by default, '' for none).
        taxonomy: taxonomy YAML for the labelling config (default: the model's config's, else its labels).
        batch_size: windows per forward pass.

    Returns:
        Counts (``documents`` read, ``automatic``, ``queued``, ``no_topic``: empty or unreadable text;
        ``read_errors``: documents that could not be read from their file, both listed last; ``duplicate_ids``:
        documents whose id an earlier one has; ``by_reason``) and ``files``.

    Example:
        >>> calibrate_thresholds("runs/quickstart/model", precision=0.95)  # once: the queue needs thresholds
        >>> write_review_queue("runs/quickstart/model", ["inbox.jsonl"], "runs/quickstart/review")["queued"]
        12
    """
    from govtopic.inputs import Columns, check_inputs, iter_records
    from govtopic.predict import TopicClassifier

    # Before any work: the queue folder must be writable and new, empty, or an earlier queue (never a folder of
    # the user's); the inputs and the taxonomy must be there.
    out = Path(output_dir)
    # Writable, and never a folder of the user's.
    check_folder_claimable(out, "review queue", "--output", legacy=_older_queue)
    check_inputs(inputs)
    classes = _explicit_taxonomy(taxonomy) if taxonomy else None
    clf = TopicClassifier(model_dir)
    if not clf.record.thresholds:
        raise ValueError(
            f"{model_dir}: the model has no review thresholds (config.json govtopic.thresholds is empty); "
            f"fit them first: govtopic calibrate-thresholds {model_dir} [LABELLED_FILE] --precision 0.95"
        )
    with _writing(out):  # only now, so that a refusal above leaves nothing behind
        claim_folder(out, "review queue", "--output", legacy=_older_queue)
    if classes is None:
        classes = taxonomy_classes(clf.labels, _model_taxonomy(model_dir))
    records = iter_records(inputs, Columns.from_options(text_column, id_column, title_column, clf.record))
    queue, unranked, counts = _predict_queue(clf, records, batch_size)
    queue.sort(key=_priority)
    counts["queued"] = len(queue)
    lines = [json.dumps({"rank": i + 1, **x}, ensure_ascii=False) for i, x in enumerate(queue)]
    lines += [json.dumps({"rank": None, **x}, ensure_ascii=False) for x in unranked]
    tasks = [to_task(x, classes) for x in queue]  # unranked documents have no text to label
    with _writing(out):
        counts["files"] = {
            "queue": atomic_write_text(out / "queue.jsonl", "".join(line + "\n" for line in lines)),
            "label_studio_tasks": atomic_write_text(
                out / "label_studio_tasks.json", json.dumps(tasks, ensure_ascii=False, indent=1) + "\n"
            ),
            "label_studio_config": atomic_write_text(out / "label_studio_config.xml", labelling_config(classes)),
        }
    logger.info("%d of %d documents need a person; queue in %s", len(queue), counts["documents"], out)
    if counts["read_errors"]:
        logger.warning(
            "%d document(s) could not be read: listed last in %s, unranked, with why 'not read: ...'",
            counts["read_errors"],
            out / "queue.jsonl",
        )
    return counts
