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

from helpers.errors import TunebookError

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
def atomic_dir(path: str | os.PathLike, overwrite: bool = False, note=None) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it is renamed to `path` (replacing it if `overwrite`).

    The temp folder's name holds this process's PID; the ones a killed run left for the same `path` (their process
    is gone) are removed first, with a note, so an interrupted merge or conversion never keeps a model-sized copy."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; remove it or choose another output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path, note or _stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(path: Path, note) -> None:
    """Delete the temp folders of dead processes that were building `path` (see atomic_dir)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)) or not stale.is_dir():
            continue
        size = sum(f.stat().st_size for f in stale.rglob("*") if f.is_file())
        shutil.rmtree(stale, ignore_errors=True)
        note(f"note: removed {stale} ({size / 2**30:.2f} GB), left by an interrupted run (process {pid})")


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


def read_json(path: str | os.PathLike, what: str = "JSON file", fix: str = "fix or delete it", error=None,
              missing: str | None = None):
    """A JSON file's content. A damaged (or, with `missing`, absent) file raises `error` (TunebookError by default)
    naming the file, the line and the fix, never a bare JSONDecodeError / UnicodeDecodeError."""
    error = error or TunebookError
    path = Path(path)
    if missing is not None and not path.is_file():
        raise error(missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise error(f"{path}:{err.lineno}: damaged {what} ({err.msg}); {fix}") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: damaged {what} (not UTF-8 text: {err.reason}); {fix}") from None


def read_jsonl(path: str | os.PathLike, note=None) -> list[dict]:
    """Our own append-only logs (loss.jsonl, chat_samples.jsonl): [] when the file is missing; blank lines skipped.

    A torn line (a run killed mid-write; append_jsonl closes it, so it can sit before later lines) is dropped with a
    note to `note` (stderr by default) naming FILE:LINE, so a resume or a plot never stops on it."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            (note or _stderr)(f"note: {path}:{number}: dropped a torn log line (a killed run was writing it)")
    return records


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """One line onto an append-only log; a torn last line left by a killed run is closed first, so it stays the
    one damaged line read_jsonl drops instead of gluing itself to this record."""
    path = Path(path)
    with open(path, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        torn = False
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            torn = handle.read(1) != b"\n"
        handle.write((b"\n" if torn else b"") + (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def _stderr(message: str) -> None:
    import sys
    print(message, file=sys.stderr)


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


# ---- one run per output folder ----

LOCK_NAME = ".tunebook.lock"
_HELD: dict[str, int] = {}   # folders this process holds -> depth (a notebook calling train() inside train())


class FolderBusy(TunebookError):
    """Another live process writes into this folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _lock_holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _age(path: Path) -> float:
    import time
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str, note=print) -> Iterator[Path]:
    """An advisory lock file in `folder` (host, PID, what, since) for as long as the block runs.

    Re-entrant within one process; a lock left by a dead process on this host (a killed kernel) is taken over with a
    note; a live holder, or one on another host, refuses with FolderBusy naming it. Released in `finally`."""
    import socket
    import time
    folder = Path(folder).resolve()
    key = str(folder)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid(), "what": what, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is None and _age(path) < 5:
                time.sleep(0.2)  # another process has just created it and is writing its name into it
                continue
            if holder and (holder.get("host") != me["host"] or holder["pid"] != me["pid"] and _pid_alive(holder["pid"])):
                raise FolderBusy(f"{folder} is in use by {holder.get('what', 'another run')} (process {holder['pid']} "
                                 f"on {holder.get('host')}, since {holder.get('since')}); wait for it to finish or use "
                                 f"another output folder. If that process is gone, delete {path}") from None
            if holder and holder["pid"] != me["pid"]:
                note(f"note: {path} was left by process {holder['pid']} ({holder.get('what')}, since "
                     f"{holder.get('since')}), which is no longer running; taking it over")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(me, handle)
    _HELD[key] = 1
    try:
        yield folder
    finally:
        _HELD.pop(key, None)
        if (_lock_holder(path) or {}).get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


# ---- writable, with room ----

def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: str | os.PathLike, setting: str, needed_bytes: int = 0) -> None:
    """Refuse, before any heavy work, a folder that cannot be written (read-only, no permission, a file in the way)
    or whose disk has less than `needed_bytes` free; the message names the setting and the fix."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise TunebookError(f"{setting}: {folder} is a file, not a folder; choose a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".tunebook-write-test-", delete=True)
        probe.close()
    except OSError as err:
        raise TunebookError(f"{setting}: cannot write into {folder} ({err.strerror or err}); choose a folder you can "
                            f"write to (a read-only mount or another user's folder cannot hold the output)") from None
    check_room(folder, setting, needed_bytes)


def check_room(folder: str | os.PathLike, setting: str, needed_bytes: int) -> None:
    """Refuse an existing folder whose disk has less than `needed_bytes` free, naming the setting and the fix."""
    free = shutil.disk_usage(folder).free
    if needed_bytes and free < needed_bytes:
        raise TunebookError(f"{setting}: {folder} needs about {needed_bytes / 2**30:.1f} GB, and its disk has "
                            f"{free / 2**30:.1f} GB free; free some space (old runs, ~/.cache) or choose another "
                            f"disk")


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC, and torch's zip writer's way of saying the same ("unexpected pos" / "file write failed")."""
    import errno
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("unexpected pos" in text or "file write failed" in text
                                              or "No space left" in text)


@contextlib.contextmanager
def disk_full_explained(folder: str | os.PathLike, doing: str) -> Iterator[None]:
    """Turn a full disk in the block into one message with the free space and the fix."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if not is_disk_full(err):
            raise
        free = shutil.disk_usage(_existing_parent(Path(folder))).free
        raise TunebookError(f"the disk of {folder} is full ({free / 2**20:.0f} MB free) while {doing}; free some "
                            "space (old runs, ~/.cache) and run the same command again") from None
