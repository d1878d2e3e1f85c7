"""Replace a text in every string of a JSON / JSONL dataset: camp4's change_script.py, made safe and streaming.

    python -m data_gen.replace_name assistant_Tuner.jsonl mine.jsonl --old 尖米 --new 伍鲜同志
    python -m data_gen.replace_name data.json data.json --old 机智流 --new 小鲜 --keys     # in place, keys too

Every string value is replaced at any depth (dicts in lists in dicts...); dict keys only with --keys. The file is
streamed: JSONL line by line, a JSON array element by element, so one record at a time is in memory and the file
may be larger than memory. The output is written to a temporary file beside OUT, read back and compared with the
input record by record (same count; same nesting, keys and value types), and only then renamed over OUT: OUT, also
when it is IN, is never half-written. Exit 2, with FILE:LINE where there is one, for bad input (not UTF-8, invalid
JSON), when the text never occurs, or when the check fails.
Layout is kept: JSONL stays JSONL (one compact record per line), an array is written as json.dump(indent=4) writes
it (camp3's style), a file holding one object stays one object.
"""
from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import stat
import sys
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any, Iterable, Iterator

from helpers.errors import TunebookError, command
from helpers.data.formats import DataFileError
from helpers.io import atomic_file

CHUNK = 1 << 16            # bytes read at a time from a JSON array (memory use scales with it, not with the file)
_WHITESPACE = re.compile(r"[ \t\r\n]*")


@dataclass
class ReplaceReport:
    records: int = 0
    changed_records: int = 0
    replacements: int = 0      # occurrences replaced in string values
    key_hits: int = 0          # occurrences in keys (replaced only with keys=True)
    layout: str = ""           # "jsonl", "array" or "object"


# ---------------------------------------------------------------- replacing and comparing one record

def replace_value(value: Any, old: str, new: str, keys: bool = False) -> tuple[Any, int, int]:
    """(value with `old` replaced in every string, replacements in values, occurrences in keys)."""
    if isinstance(value, str):
        count = value.count(old)
        return (value.replace(old, new) if count else value), count, 0
    if isinstance(value, list):
        items, total, in_keys = [], 0, 0
        for item in value:
            item, count, key_count = replace_value(item, old, new, keys)
            items.append(item)
            total, in_keys = total + count, in_keys + key_count
        return items, total, in_keys
    if isinstance(value, dict):
        out, total, in_keys = {}, 0, 0
        for key, item in value.items():
            in_keys += key.count(old)
            item, count, key_count = replace_value(item, old, new, keys)
            out[key.replace(old, new) if keys else key] = item
            total, in_keys = total + count, in_keys + key_count
        return out, total, in_keys
    return value, 0, 0


def shape(value: Any, rename=None) -> Any:
    """The structure of a JSON value without its strings: nesting, keys (renamed by `rename`), value types."""
    if isinstance(value, dict):
        return ("object", tuple((rename(k) if rename else k, shape(v, rename)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(shape(v, rename) for v in value))
    return type(value).__name__


# ---------------------------------------------------------------- streaming readers

def _not_utf8(where: str, byte: int) -> DataFileError:
    return DataFileError(where, f"not UTF-8 text (byte 0x{byte:02x}). Re-save the file as UTF-8, e.g. "
                                "iconv -f GB18030 -t UTF-8 IN > fixed.jsonl for a Chinese Windows (GBK) file")


def _decoded_chunks(handle, name: str, size: int) -> Iterator[str]:
    """Text chunks of a binary file; bad bytes raise FILE:LINE."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    newlines = 0
    while True:
        data = handle.read(size)
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as err:   # err.object = pending bytes + data; pending bytes hold no newline
            line = newlines + err.object[:err.start].count(b"\n") + 1
            raise _not_utf8(f"{name}:{line}", err.object[err.start]) from None
        newlines += data.count(b"\n")
        if text:
            yield text
        if not data:
            return


def _jsonl_values(lines: Iterable[bytes | str], name: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(f"{name}:{number}", line[err.start]) from None
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{name}:{number}", f"invalid JSON at column {err.colno}: {err.msg}. Each line of a "
                                                    ".jsonl file must be one complete JSON value") from None
        yield f"{name}:{number}", value


class _ArrayReader:
    """The elements of a JSON array read from text chunks, one at a time.

    The buffer holds the unread text: at most a chunk plus the element being parsed. json has no incremental
    parser, so each element is parsed with raw_decode, and an error that more text could fix (the buffer ends
    inside the element) reads more and retries, doubling the read so a big element costs linear time.
    """

    def __init__(self, chunks: Iterable[str], name: str, size: int = CHUNK):
        self.chunks, self.name, self.size = iter(chunks), name, size
        self.buf, self.pos, self.eof = "", 0, False
        self.base, self.line, self.last_newline = 0, 1, -1   # absolute offset of buf[0]; line and last "\n" at pos

    def _more(self, at_least: int) -> None:
        self.buf, self.base, self.pos = self.buf[self.pos:], self.base + self.pos, 0
        parts, added = [self.buf], 0
        while added < at_least:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.eof = True
                break
            parts.append(chunk)
            added += len(chunk)
        self.buf = "".join(parts)

    def _advance(self, end: int) -> None:
        newline = self.buf.rfind("\n", self.pos, end)
        if newline != -1:
            self.line += self.buf.count("\n", self.pos, end)
            self.last_newline = self.base + newline
        self.pos = end

    def _where(self, at: int) -> tuple[str, int]:
        newline = self.buf.rfind("\n", self.pos, at)
        line = self.line + self.buf.count("\n", self.pos, at)
        column = at - newline if newline != -1 else self.base + at - self.last_newline
        return f"{self.name}:{line}", column

    def _peek(self) -> str:
        while True:
            self._advance(_WHITESPACE.match(self.buf, self.pos).end())
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos:self.pos + 1]
            self._more(self.size)

    def _fail(self, at: int, message: str) -> DataFileError:
        where, column = self._where(at)
        return DataFileError(where, f"invalid JSON at column {column}: {message}")

    def values(self) -> Iterator[tuple[str, Any]]:
        decoder = json.JSONDecoder()
        if self._peek() != "[":
            raise self._fail(self.pos, "expected '[' to open a JSON array")
        self._advance(self.pos + 1)
        if self._peek() == "]":   # an empty array
            self._advance(self.pos + 1)
            return self._end()
        while True:
            if self._peek() == "]":
                raise self._fail(self.pos, "a ']' right after ',' (trailing comma); remove the last comma")
            where = f"{self.name}:{self.line}"
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                # JSON tokens hold no raw newline, so a newline after the error means the text itself is wrong.
                if not self.eof and "\n" not in self.buf[err.pos:]:
                    self._more(max(self.size, len(self.buf) - self.pos))
                    continue
                raise self._fail(err.pos, err.msg) from None
            if end == len(self.buf) and not self.eof:   # a number may go on in the next chunk
                self._more(self.size)
                continue
            self._advance(end)
            yield where, value
            after = self._peek()
            if after == "]":
                self._advance(self.pos + 1)
                return self._end()
            if not after:
                raise self._fail(self.pos, "the file ends before the array's closing ']' (cut off?)")
            if after != ",":
                raise self._fail(self.pos, "expected ',' or ']' after an array element (missing comma?)")
            self._advance(self.pos + 1)

    def _end(self) -> None:
        if self._peek():
            raise self._fail(self.pos, "extra text after the array's closing ']'")


def detect_layout(path: Path) -> str:
    """'array' (starts with '['), 'jsonl' (.jsonl, or a first line that is a whole object with more lines after)
    or 'object' (one JSON object)."""
    with open(path, "rb") as handle:
        first = ""
        while not first:
            data = handle.read(4096)
            if not data:
                raise DataFileError(str(path), "the file is empty; there is nothing to replace")
            first = data.decode("utf-8", errors="replace").lstrip(" \t\r\n\ufeff")[:1]
        if first == "[":
            return "array"
        if first != "{":
            raise DataFileError(str(path), f"starts with {first!r}; expected a JSON array [...], JSON Lines or "
                                           "one JSON object")
        if path.suffix == ".jsonl":
            return "jsonl"
        handle.seek(0)
        first_line = handle.readline().decode("utf-8-sig", errors="replace")
        more_lines = bool(handle.read(4096).strip())
    return "jsonl" if more_lines and _is_object(first_line) else "object"


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def read_values(source, layout: str, name: str, size: int = CHUNK) -> Iterator[tuple[str, Any]]:
    """(FILE:LINE, record) pairs from a binary file handle (input) or a text handle (our own output)."""
    binary = "b" in getattr(source, "mode", "b")
    if layout == "jsonl":
        yield from _jsonl_values(source, name)
    elif layout == "array":
        chunks = _decoded_chunks(source, name, size) if binary else iter(lambda: source.read(size), "")
        yield from _ArrayReader(chunks, name, size).values()
    else:
        text = "".join(_decoded_chunks(source, name, size)) if binary else source.read()
        try:
            yield f"{name}:1", json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{name}:{err.lineno}", f"invalid JSON at column {err.colno}: {err.msg}") from None


# ---------------------------------------------------------------- the whole file

def _write(handle, layout: str, index: int, value: Any) -> None:
    if layout == "jsonl":
        handle.write(json.dumps(value, ensure_ascii=False) + "\n")
    elif layout == "array":   # exactly what json.dump(list, indent=4) writes, one element at a time
        body = json.dumps(value, ensure_ascii=False, indent=4).replace("\n", "\n    ")
        handle.write(("[\n    " if index == 0 else ",\n    ") + body)
    else:
        handle.write(json.dumps(value, ensure_ascii=False, indent=4) + "\n")


def replace_file(src: str | Path, dst: str | Path, old: str, new: str, keys: bool = False,
                 chunk_size: int = CHUNK) -> ReplaceReport:
    """Stream `src` -> `dst` with `old` replaced; check the result; rename into place only if all is well."""
    src, dst = Path(src), Path(dst)
    if not old:
        raise TunebookError("--old is empty; give the text to replace")
    if old == new:
        raise TunebookError(f"--old and --new are both {old!r}; nothing would change")
    if not src.is_file():
        raise DataFileError(str(src), "no such file" if not src.exists() else "is not a file")
    report = ReplaceReport(layout=detect_layout(src))
    # A file replaced in place keeps the permissions it had (atomic_file gives new files the umask default).
    keep_mode = stat.S_IMODE(dst.stat().st_mode) if dst.is_file() else None
    with atomic_file(dst, mode="w+") as out:
        with open(src, "rb") as handle:
            for index, (_, value) in enumerate(read_values(handle, report.layout, str(src), chunk_size)):
                value, count, key_hits = replace_value(value, old, new, keys)
                _write(out, report.layout, index, value)
                report.records += 1
                report.changed_records += bool(count or (keys and key_hits))
                report.replacements += count
                report.key_hits += key_hits
        if report.layout == "array":
            out.write("\n]\n" if report.records else "[]\n")
        if not report.replacements and not (keys and report.key_hits):
            found = (f"occurs only in keys ({report.key_hits} times); pass --keys to replace it there"
                     if report.key_hits else
                     f"does not occur in any string of its {report.records} records; check the spelling")
            raise TunebookError(f"{src}: {old!r} {found}. Nothing was written")
        out.flush()
        out.seek(0)
        _check(src, out, report, old, new, keys, chunk_size)
    if keep_mode is not None:
        os.chmod(dst, keep_mode)
    return report


def _check(src: Path, out, report: ReplaceReport, old: str, new: str, keys: bool, chunk_size: int) -> None:
    """Read the written output back beside the input: same record count, same structure, record by record."""
    rename = (lambda k: k.replace(old, new)) if keys else None
    with open(src, "rb") as handle:
        pairs = zip_longest(read_values(handle, report.layout, str(src), chunk_size),
                            read_values(out, report.layout, "output", chunk_size))
        for index, (before, after) in enumerate(pairs):
            if before is None or after is None:
                raise TunebookError(f"output check failed: the output has a different number of records than {src} "
                                    f"(differs at record {index}). Nothing was written")
            if shape(before[1], rename) != shape(after[1]):
                hint = " (replacing inside keys made two keys equal?)" if keys else ""
                raise TunebookError(f"{before[0]}: output check failed: record {index} changed structure{hint}. "
                                    "Nothing was written")


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_gen.replace_name", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", metavar="IN", help="a .json (array or one object) or .jsonl dataset")
    parser.add_argument("output", metavar="OUT", help="where to write the result (may be IN itself)")
    parser.add_argument("--old", required=True, help="the text to replace, e.g. the template's author name")
    parser.add_argument("--new", required=True, help="what to put instead, e.g. your name")
    parser.add_argument("--keys", action="store_true", help="also replace inside dict keys (default: keys untouched)")
    args = parser.parse_args(argv)
    report = replace_file(args.input, args.output, args.old, args.new, keys=args.keys)
    keys_note = f", {report.key_hits} in keys" if args.keys and report.key_hits else ""
    print(f"replaced {report.replacements} occurrence(s) of {args.old!r} with {args.new!r}{keys_note} in "
          f"{report.changed_records} of {report.records} records ({report.layout}) -> {args.output}; "
          "re-read and checked: same record count and structure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
