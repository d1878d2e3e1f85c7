"""Dataset files -> records, each with the FILE:LINE it starts on; a file or record no reader should take is refused
with a message that says what to do.

Files: .jsonl (one object per line), .json (an array of objects, or one object), or a `datasets` Dataset. UTF-8 (a BOM
is fine); GBK and UTF-16 are recognised and explained. Limits keep one bad record from taking the machine down:
records over MAX_RECORD_BYTES, nesting beyond Python's recursion limit, integers beyond Python's digit limit.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from helpers.errors import TunebookError

MAX_RECORD_BYTES = 16 * 2**20   # one record; a longer text is split into several records (see the message)


class DataFileError(TunebookError, ValueError):
    """The whole file is unusable (missing, empty, not UTF-8, not JSON...). `where` is FILE or FILE:LINE."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


@dataclass(frozen=True)
class Record:
    where: str     # "FILE:LINE" (JSON files) or "NAME[index]" (datasets)
    index: int     # 0-based record number
    value: Any     # the parsed JSON value (should be an object)


@dataclass(frozen=True)
class Issue:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


# ---------------------------------------------------------------- reading files

def read_records(source: str | os.PathLike | Any) -> Iterator[Record | Issue]:
    """Yield each record of a file or Dataset; a record that cannot even be parsed comes as an Issue."""
    if not isinstance(source, (str, os.PathLike)):
        yield from _dataset_records(source)
        return
    path = Path(source)
    name = str(source)
    if not path.exists():
        raise DataFileError(name, "no such file; check the path (relative paths start from "
                                  f"{Path.cwd()})")
    if path.is_dir():
        raise DataFileError(name, "is a folder; give the .json or .jsonl file inside it")
    text = _read_text(path, name)
    if not text.strip():
        raise DataFileError(name, "the file is empty; it needs at least one record")
    stripped = text.lstrip()
    if path.suffix == ".jsonl" or (path.suffix != ".json" and not stripped.startswith("[")
                                   and _looks_like_jsonl(stripped)):
        yield from _jsonl_records(text, name)
    else:
        yield from _json_records(text, name)


def _read_text(path: Path, name: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a UTF-8 BOM (Windows editors) is fine
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        guess = ""
        try:
            data.decode("gb18030")
            guess = " It decodes as GBK/GB18030 (a Chinese Windows encoding)."
        except UnicodeDecodeError:
            pass
        raise DataFileError(f"{name}:{line}", f"not UTF-8 text (byte 0x{data[err.start]:02x}).{guess} Re-save the file "
                                              f"as UTF-8, e.g. iconv -f GB18030 -t UTF-8 {name} > fixed.jsonl") from None


def _looks_like_jsonl(text: str) -> bool:
    first = text.split("\n", 1)[0].strip()
    try:
        return isinstance(json.loads(first), dict) and "\n" in text.strip()
    except ValueError:
        return False


def _jsonl_records(text: str, name: str) -> Iterator[Record | Issue]:
    index = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            yield Issue(where, f"invalid JSON at column {err.colno}: {err.msg}. Each line of a .jsonl file must be one "
                               "complete JSON object (no trailing commas, double quotes only)")
            continue
        yield Record(where, index, value)
        index += 1


def _json_records(text: str, name: str) -> Iterator[Record | Issue]:
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if not text.startswith("[", start):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            hint = ""
            if err.msg == "Extra data" and _looks_like_jsonl(text.lstrip()):
                hint = " The file holds one JSON object per line: name it .jsonl"
            raise DataFileError(f"{name}:{err.lineno}", f"invalid JSON at column {err.colno}: {err.msg}.{hint}") from None
        if isinstance(value, dict):  # one record (its format is checked with the others)
            yield Record(f"{name}:{text.count(chr(10), 0, start) + 1}", 0, value)
            return
        raise DataFileError(name, f"the top level is a JSON {kind_of(value)}; expected an array of records "
                                  "[{...}, {...}] or one record object")
    # Walk the array element by element so each record keeps the line it starts on (json.load loses that).
    pos, index = start + 1, 0
    line, counted = 1, 0  # line numbers are counted incrementally (counting from 0 each time is quadratic)
    while True:
        pos = _skip_ws(text, pos)
        if text.startswith("]", pos):
            break
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{name}:{err.lineno}", f"invalid JSON at column {err.colno}: {err.msg}") from None
        yield Record(f"{name}:{line}", index, value)
        index += 1
        pos = _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("]", pos):
            line = text.count("\n", 0, pos) + 1
            raise DataFileError(f"{name}:{line}", "expected ',' or ']' after a record (missing comma?)")
    if text[pos + 1:].strip():
        line = text.count("\n", 0, pos + 1) + 1
        raise DataFileError(f"{name}:{line}", "extra text after the closing ']'")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _dataset_records(dataset: Any) -> Iterator[Record]:
    if hasattr(dataset, "keys") and not hasattr(dataset, "column_names"):  # DatasetDict
        if "train" not in dataset:
            raise DataFileError("dataset", f"a DatasetDict without a 'train' split (splits: {list(dataset.keys())}); "
                                           "pass dataset['<split>']")
        dataset = dataset["train"]
    name = getattr(getattr(dataset, "info", None), "dataset_name", None) or "dataset"
    for index, row in enumerate(dataset):
        yield Record(f"{name}[{index}]", index, dict(row))


def kind_of(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


