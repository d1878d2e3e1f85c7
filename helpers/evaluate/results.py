"""evaluation.json: the before/after table of the last `evaluate` run, saved beside the evaluated adapter or model
so that `upload` puts it into the model card. Only the table and its numbers, never the answers (--out has those)."""
from __future__ import annotations

import time
from pathlib import Path

from helpers.io import write_json

EVALUATION_NAME = "evaluation.json"


def evaluation_record(task: str, report, heldout: str | Path) -> dict:
    """task: persona | colorist; report: the PersonaReport / ColoristReport of that run."""
    if task == "persona":
        from helpers.evaluate.persona import comparison_rows
        counts = {"identity": len(report.items), "general": len(report.general)}
    else:
        from helpers.evaluate.colorist import comparison_rows
        counts = {"descriptions": len(report.descriptions)}
    headers, rows = comparison_rows(report.before, report.after)
    return {"task": task, "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "heldout": str(heldout), "counts": counts,
            "before": report.before_label or None, "headers": headers, "rows": rows,
            "metrics": {"before": _numbers(report.before), "after": _numbers(report.after)}}


def _numbers(scores: dict | None) -> dict | None:
    """The summary figures of one side (the per-question lists stay out)."""
    if scores is None:
        return None
    return {k: v for k, v in scores.items() if v is None or isinstance(v, (int, float, str))}


def save_evaluation(folder: str | Path, record: dict, note=print) -> Path | None:
    """Write <folder>/evaluation.json atomically; a folder that cannot be written is skipped with a note."""
    path = Path(folder) / EVALUATION_NAME
    try:
        write_json(path, record)
    except OSError as err:
        note(f"note: {path} not written ({err.strerror or err}): the table above is not saved for `upload`'s "
             "model card")
        return None
    return path
