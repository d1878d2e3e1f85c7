"""Dataset files -> conversations, with XTuner's map-fn semantics and FILE:LINE messages for bad records.

Formats (auto-detected from the first record, or named):
  conversation  {"conversation": [{"system"?, "input", "output", "output_with_loss"?}, ...]}   (XTuner)
  openai        {"messages": [{"role", "content", "loss"?}, ...]}                 (openai_map_fn)
  alpaca        {"instruction", "input"?, "output"}                               (alpaca_map_fn)
  colorist      {"description", "color"}                                          (colors_map_fn)
  sharegpt      {"conversations": [{"from", "value"}, ...]}                       (wizardlm_map_fn + system)
  pretrain      {"text"}                                                          (pretrain_map_fn)
  default       {"input", "output"}                                               (default_map_fn)
Files (.jsonl, .json, a `datasets` Dataset) are read into records by helpers.data.records.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from helpers.data.conversation import Conversation, Turn
from helpers.data.records import DataFileError, Issue, kind_of as _kind, read_records
from helpers.data.system_prompts import SYSTEM_TEMPLATES
from helpers.errors import TunebookError

FORMATS = ("conversation", "openai", "alpaca", "colorist", "sharegpt", "pretrain", "default")
_SIGNATURES = [  # checked in order; the first whose keys are all present wins
    ("conversation", {"conversation"}),
    ("openai", {"messages"}),
    ("sharegpt", {"conversations"}),
    ("colorist", {"description", "color"}),
    ("alpaca", {"instruction", "output"}),
    ("pretrain", {"text"}),
    ("default", {"input", "output"}),
]
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                   "model": "assistant", "system": "system"}


class RecordError(TunebookError, ValueError):
    """One record is wrong; the message says what and how to fix it."""


@dataclass
class LoadResult:
    conversations: list[Conversation] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    format: str = ""
    records: int = 0
    skipped: list[Issue] = field(default_factory=list)  # records XTuner drops on purpose (alpaca "<nooutput>")


# ---------------------------------------------------------------- normalising records

def detect_format(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    keys = set(record)
    for name, needed in _SIGNATURES:
        if needed <= keys:
            return name
    return None


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        raise RecordError(f"{what} is an object {_preview(value)}, not text. Put the plain question/answer string "
                          "there (camp4's get_data.py wrote a whole template record into `input` this way)")
    raise RecordError(f"{what} is a {_kind(value)} ({_preview(value)}), not text; it must be a string")


def _preview(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def _loss_flag(value: Any, what: str) -> bool:
    # XTuner: str(value).lower() == "true"; accept real booleans and the two strings, refuse anything else.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise RecordError(f"{what} must be true or false, not {_preview(value)}")


def _list_of_objects(record: dict, key: str) -> list[dict]:
    items = record[key]
    if not isinstance(items, list):
        raise RecordError(f'"{key}" is a {_kind(items)}; it must be a list of objects')
    if not items:
        raise RecordError(f'"{key}" is empty; a record needs at least one exchange')
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RecordError(f'{key}[{i}] is a {_kind(item)} ({_preview(item)}); it must be an object')
    return items


def _from_conversation(record: dict) -> Conversation:
    turns = []
    for i, turn in enumerate(_list_of_objects(record, "conversation")):
        for key in ("input", "output"):
            if key not in turn:
                raise RecordError(f'conversation[{i}] has no "{key}" (keys: {", ".join(turn) or "none"})')
        turns.append(Turn(input=_text(turn["input"], f"conversation[{i}].input"),
                          output=_text(turn["output"], f"conversation[{i}].output"),
                          system=_text(turn.get("system") or "", f"conversation[{i}].system"),
                          output_with_loss=_loss_flag(turn.get("output_with_loss", True),
                                                      f"conversation[{i}].output_with_loss")))
    if all(not t.output for t in turns) and any(t.input for t in turns):
        raise RecordError("no turn has an answer (every output is empty); the model would learn to say nothing")
    if all(not t.output and not t.input for t in turns):
        raise Skip("nothing to train on (only a system text, empty input and output): dropped")
    return Conversation(turns)


def _from_messages(messages: list[dict], key: str, role_key: str, content_key: str, roles: dict[str, str]) -> Conversation:
    """openai_map_fn: skip leading assistant messages; system goes to the next answer; user texts concatenate."""
    normalised = []
    for i, message in enumerate(messages):
        for k in (role_key, content_key):
            if k not in message:
                raise RecordError(f'{key}[{i}] has no "{k}" (keys: {", ".join(message) or "none"})')
        role = message[role_key]
        if role not in roles:
            raise RecordError(f'{key}[{i}].{role_key} is {_preview(role)}; known roles: {", ".join(roles)}')
        normalised.append((roles[role], _text(message[content_key], f"{key}[{i}].{content_key}"),
                           _loss_flag(message.get("loss", True), f"{key}[{i}].loss")))
    while normalised and normalised[0][0] == "assistant":
        normalised.pop(0)
    turns, system, user = [], "", ""
    for role, content, loss in normalised:
        if role == "system":
            system = content
        elif role == "user":
            user += content
        else:
            turns.append(Turn(input=user, output=content, system=system, output_with_loss=loss))
            system, user = "", ""
    if not turns:
        raise RecordError(f"no assistant reply in {key}; each record needs at least one answer to train on")
    return Conversation(turns)


def _from_colorist(record: dict) -> Conversation:
    description = _text(record["description"], "description")
    # colors_map_fn keeps only the text after the first colon ("Light Sky Blue: A calming..." -> "A calming...").
    prompt = ":".join(description.split(":")[1:]).strip()
    if not prompt:
        raise RecordError('description has no text after a "Name:" prefix; XTuner keeps only what follows the first '
                          'colon, so write it as "Colour name: what it looks like"')
    return Conversation([Turn(input=prompt, output=_text(record["color"], "color"),
                              system=SYSTEM_TEMPLATES["colorist"])])


class Skip(Exception):
    """A record XTuner's map fn deliberately drops (not an error)."""


def normalise(record: Any, fmt: str) -> Conversation:
    """One record in format `fmt` -> Conversation. Raises RecordError (bad) or Skip (dropped on purpose)."""
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a JSON object, not a {_kind(record)} ({_preview(record)})")
    found = detect_format(record)
    needed = dict(_SIGNATURES)[fmt]
    if not needed <= set(record):
        missing = ", ".join(sorted(needed - set(record)))
        looks = f"; it looks like the {found} format" if found else ""
        raise RecordError(f'missing "{missing}" for the {fmt} format (keys: {", ".join(record) or "none"}){looks}')
    if fmt == "conversation":
        return _from_conversation(record)
    if fmt == "openai":
        return _from_messages(_list_of_objects(record, "messages"), "messages", "role", "content",
                              {"system": "system", "user": "user", "assistant": "assistant"})
    if fmt == "sharegpt":
        return _from_messages(_list_of_objects(record, "conversations"), "conversations", "from", "value",
                              _SHAREGPT_ROLES)
    if fmt == "alpaca":
        output = _text(record["output"], "output")
        if output == "<nooutput>":
            raise Skip("alpaca output is <nooutput> (XTuner drops these)")
        # alpaca_map_fn keeps the newline even when input is empty.
        prompt = f"{_text(record['instruction'], 'instruction')}\n{_text(record.get('input', ''), 'input')}"
        return Conversation([Turn(input=prompt, output=output)])
    if fmt == "colorist":
        return _from_colorist(record)
    if fmt == "pretrain":
        text = _text(record["text"], "text").strip()
        if not text:
            raise RecordError("text is empty")
        return Conversation([Turn(input="", output=text)], pretrain=True)
    if fmt == "default":
        return Conversation([Turn(input=_text(record["input"], "input"), output=_text(record["output"], "output"))])
    raise ValueError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)} or auto")


def load_conversations(source: str | os.PathLike | Any, fmt: str = "auto", limit_issues: int | None = None) -> LoadResult:
    """Read and normalise every record; bad records become Issues (nothing is raised for record errors)."""
    if fmt != "auto" and fmt not in FORMATS:
        raise DataFileError(str(source), f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)} or auto")
    result = LoadResult(format=fmt if fmt != "auto" else "")
    for item in read_records(source):
        if isinstance(item, Issue):
            result.issues.append(item)
            result.records += 1
            continue
        result.records += 1
        if not result.format:
            result.format = detect_format(item.value) or ""
            if not result.format:
                keys = ", ".join(item.value) if isinstance(item.value, dict) else _kind(item.value)
                result.issues.append(Issue(item.where, f"cannot tell the data format from this record (keys: {keys}); "
                                                       f"expected one of: {_signature_help()}. Pass --format to choose"))
                continue
        try:
            conversation = normalise(item.value, result.format)
        except RecordError as err:
            result.issues.append(Issue(item.where, str(err)))
            continue
        except Skip as skip:
            result.skipped.append(Issue(item.where, str(skip)))
            continue
        conversation.source = item.where
        result.conversations.append(conversation)
    return result


def _signature_help() -> str:
    return "; ".join(f"{name} ({', '.join(sorted(keys))})" for name, keys in _SIGNATURES)


def conversations_from_records(records: Iterable[dict], fmt: str = "auto") -> list[Conversation]:
    """For in-memory records (notebooks, tests): normalise or raise the first problem as a RecordError."""
    out = []
    for index, record in enumerate(records):
        use = detect_format(record) if fmt == "auto" else fmt
        if not use:
            raise RecordError(f"record {index}: cannot tell the data format (keys: {', '.join(record)})")
        try:
            out.append(normalise(record, use))
        except Skip:
            continue
        except RecordError as err:
            raise RecordError(f"record {index}: {err}") from None
    return out
