"""`tunebook.json`: what produced an adapter or merged model, so merge, chat and evaluation never ask again.

Written into every adapter folder (and copied into merged models): base model name, path and config hash,
template name and strings, system prompt, mode, LoRA settings, data summary, batching and training facts.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from helpers.errors import TunebookError
from helpers.io import write_json
from helpers.encode.templates import HF_TEMPLATE, get_template

RECORD_NAME = "tunebook.json"


def template_record(name: str) -> dict:
    if name == HF_TEMPLATE:
        return {"name": HF_TEMPLATE}
    template = get_template(name)
    return {"name": name, **{k: v for k, v in dataclasses.asdict(template).items() if k != "name"}}


def write_record(folder: str | Path, record: dict) -> None:
    from helpers import __version__
    write_json(Path(folder) / RECORD_NAME, {"tunebook_version": __version__,
                                            "written": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})


def read_record(folder: str | Path) -> dict | None:
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TunebookError(f"{path}:{err.lineno}: damaged training record ({err.msg}); delete it or retrain") from None


def trained_template(folder: str | Path, default: str | None = None) -> tuple[str | None, str]:
    """(template name, system prompt) a model was trained with, else (default, "")."""
    record = read_record(folder) or {}
    return record.get("template", {}).get("name", default), record.get("system", "")
