"""Dataset files -> records, each with the FILE:LINE it starts on; a file or record no reader should take is refused
with a message that says what to do.

Files: .jsonl (one object per line), .json (an array of objects, or one object), or a `datasets` Dataset. UTF-8 (a BOM
is fine); GBK and UTF-16 are recognised and explained. Limits keep one bad record from taking the machine down:
records over MAX_RECORD_BYTES, nesting beyond Python's recursion limit, integers beyond Python's digit limit.
"""
from __future__ import annotations

import codecs
import json
import os
import re
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
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataFileError(name, "UTF-16 text (what Windows Notepad calls \"Unicode\"); re-save it as UTF-8, e.g. "
                                  f"iconv -f UTF-16 -t UTF-8 {name} > fixed{path.suffix or '.jsonl'}")
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


class _Unreadable(Exception):
    """One record the JSON reader cannot or must not take; the message says why and what to do."""


def _check_size(text: str, start: int = 0, end: int | None = None) -> None:
    """Refuse the record text[start:end] over MAX_RECORD_BYTES of UTF-8 (counted only when its characters could
    reach that: UTF-8 takes at most 4 bytes a character)."""
    end = len(text) if end is None else end
    if (end - start) * 4 <= MAX_RECORD_BYTES:
        return
    size = len(text[start:end].encode("utf-8", errors="surrogatepass"))
    if size > MAX_RECORD_BYTES:
        raise _Unreadable(f"this record is {size / 2**20:.0f} MB; records over {MAX_RECORD_BYTES // 2**20} MB are "
                          "refused (a tokenizer needs many times that in memory). Split the text into several records "
                          "(e.g. pretrain text into chunks of a few thousand characters)")


def _decode(decoder: json.JSONDecoder, text: str, pos: int):
    """raw_decode with the limits a learner's file can hit turned into messages (nothing else is caught)."""
    try:
        value, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise _Unreadable("nested too deeply (thousands of [ or { inside each other); no dataset needs that: "
                          "check how the file was generated") from None
    except ValueError as err:  # Python's int digit limit (CVE-2020-10735): json raises a plain ValueError
        raise _Unreadable(f"a number is too long to read ({err}); write it as a string") from None
    if "\\ud" in text[pos:end].lower() and _has_lone_surrogate(value):
        raise _Unreadable("a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff without its pair), "
                          "which is no character; fix or remove it")
    return value, end


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack += list(item.keys()) + list(item.values())
        elif isinstance(item, list):
            stack += item
    return False


def _json_hint(text: str, err: json.JSONDecodeError) -> str:
    before = text[:err.pos].rstrip()
    if before.endswith(",") and text[err.pos:err.pos + 1] in "]}":
        return " There is a trailing comma before the closing bracket: JSON allows none, remove it."
    return ""


def _jsonl_records(text: str, name: str) -> Iterator[Record | Issue]:
    index, decoder = 0, json.JSONDecoder()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            _check_size(line)
            start = len(line) - len(line.lstrip())
            value, end = _decode(decoder, line, start)
            if line[end:].strip():
                raise json.JSONDecodeError("Extra data", line, end)
        except json.JSONDecodeError as err:
            yield Issue(where, f"invalid JSON at column {err.colno}: {err.msg}.{_json_hint(line, err)} Each line of a "
                               ".jsonl file must be one complete JSON object (no trailing commas, double quotes only)")
            continue
        except _Unreadable as err:
            yield Issue(where, str(err))
            continue
        yield Record(where, index, value)
        index += 1


def _json_records(text: str, name: str) -> Iterator[Record | Issue]:
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if not text.startswith("[", start):
        try:
            value, end = _decode(decoder, text, start)
            if text[end:].strip():
                raise json.JSONDecodeError("Extra data", text, end + len(text[end:]) - len(text[end:].lstrip()))
        except json.JSONDecodeError as err:
            hint = _json_hint(text, err)
            if err.msg == "Extra data" and _looks_like_jsonl(text.lstrip()):
                hint = " The file holds one JSON object per line: name it .jsonl"
            raise DataFileError(f"{name}:{err.lineno}", f"invalid JSON at column {err.colno}: {err.msg}.{hint}") from None
        except _Unreadable as err:
            raise DataFileError(f"{name}:1", str(err)) from None
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
            begin = pos
            value, pos = _decode(decoder, text, pos)
            _check_size(text, begin, pos)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{name}:{err.lineno}", f"invalid JSON at column {err.colno}: {err.msg}."
                                                       f"{_json_hint(text, err)}") from None
        except _Unreadable as err:  # the array cannot be walked past an unreadable record: the file is refused
            raise DataFileError(f"{name}:{line}", str(err)) from None
        yield Record(f"{name}:{line}", index, value)
        index += 1
        pos = _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos += 1
            if text.startswith("]", _skip_ws(text, pos)):
                at = text.count("\n", 0, pos) + 1
                raise DataFileError(f"{name}:{at}", "a trailing comma before the closing ']': JSON allows none; "
                                                    "remove it")
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


