"""Talks to a running Label Studio through label-studio-sdk; run by tests/test_label_studio_live.py.

It runs with ``.venv-labelstudio/bin/python`` (the SDK lives there, not in govtopic's .venv), one step per call,
and prints its answer as one JSON object on stdout:

    python tests/labelstudio_client.py URL TOKEN import QUEUE_DIR       -> {"project": id, "tasks": [...]}
    python tests/labelstudio_client.py URL TOKEN annotate TASK_ID RESULT_JSON  -> {"annotation": id}
    python tests/labelstudio_client.py URL TOKEN export PROJECT_ID FILE [all]  -> {"file": FILE, "tasks": n}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from label_studio_sdk import LabelStudio


def import_queue(ls: LabelStudio, queue_dir: str) -> dict:
    """A project with the queue's labelling config, its tasks imported, and the tasks as Label Studio holds them."""
    queue = Path(queue_dir)
    config = (queue / "label_studio_config.xml").read_text(encoding="utf-8")
    project = ls.projects.create(title="govtopic review queue", label_config=config)
    tasks = json.loads((queue / "label_studio_tasks.json").read_text(encoding="utf-8"))
    imported = ls.projects.import_tasks(id=project.id, request=tasks, return_task_ids=True)
    held = [
        {"id": t.id, "data": t.data, "predictions": [{"result": p.result} for p in (t.predictions or [])]}
        for t in ls.tasks.list(project=project.id, fields="all")
    ]
    return {
        "project": project.id,
        "parsed_label_config": project.parsed_label_config,
        "imported": imported.task_count,
        "predictions_imported": imported.prediction_count,
        "tasks": held,
    }


def annotate(ls: LabelStudio, task_id: int, result: list[dict]) -> dict:
    """An annotation submitted on a task, as the labelling screen sends it."""
    annotation = ls.annotations.create(id=task_id, result=result, was_cancelled=False, lead_time=3.5)
    return {"annotation": annotation.id}


def export(ls: LabelStudio, project_id: int, file: str, every_task: bool = False) -> dict:
    """The project's JSON export as the Export button downloads it (the annotated tasks, or ``every_task``),
    written to ``file``."""
    chunks = ls.projects.exports.download_sync(project_id, export_type="JSON", download_all_tasks=every_task)
    data = b"".join(chunks)
    Path(file).write_bytes(data)
    return {"file": file, "tasks": len(json.loads(data))}


def main(argv: list[str]) -> int:
    url, token, step, *args = argv
    ls = LabelStudio(base_url=url, api_key=token)
    if step == "import":
        answer = import_queue(ls, args[0])
    elif step == "annotate":
        answer = annotate(ls, int(args[0]), json.loads(args[1]))
    elif step == "export":
        answer = export(ls, int(args[0]), args[1], every_task=args[2:] == ["all"])
    else:
        raise SystemExit(f"unknown step {step!r}: expected import, annotate or export")
    print(json.dumps(answer, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
