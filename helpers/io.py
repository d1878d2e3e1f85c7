"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything tunebook writes for a learner (datasets, checkpoints, adapters, merged models) goes through
here, so a kernel restart or Ctrl-C mid-write never leaves a half file that a later step picks up.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

ASSETS = Path(__file__).resolve().parent / "assets"   # files shipped inside the package (recipes, general set, ...)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Write to a temp file beside `path`, fsync, then rename over it; on error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it is renamed to `path` (replacing it if `overwrite`)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; remove it or choose another output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make a finished folder `tmp` appear as `path` (replacing an older one) in one rename."""
    tmp, path = Path(tmp), Path(path)
    _fsync_tree(tmp)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _fsync_tree(root: Path) -> None:
    for file in root.rglob("*"):
        if file.is_file():
            file.chmod(file.stat().st_mode | (0o644 & ~_umask()))
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Our own logs (loss.jsonl, chat_samples.jsonl): [] when the file is missing; blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    count = 0
    with atomic_file(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    with atomic_file(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=indent)
        handle.write("\n")


def write_records(path: str | os.PathLike, records: list[dict]) -> int:
    """Records as JSONL, or as a JSON array when the name ends in .json (what XTuner's loader reads)."""
    if str(path).endswith(".json"):
        write_json(path, records, indent=4)
        return len(records)
    return write_jsonl(path, records)
