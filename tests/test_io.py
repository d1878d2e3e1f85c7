"""Atomic writes: a file or folder appears complete under its final name, or not at all."""
import os
import stat

import pytest

from helpers.io import atomic_dir, atomic_file, publish_dir, write_jsonl


def test_failed_file_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_file(path) as handle:
            handle.write("half a line")
            raise RuntimeError("killed")
    assert path.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]


def test_files_get_normal_permissions(tmp_path):
    path = tmp_path / "x.txt"
    with atomic_file(path) as handle:
        handle.write("x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_folder_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "weights.safetensors").write_bytes(b"partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileExistsError):
        (tmp_path / "model").mkdir()
        with atomic_dir(tmp_path / "model"):
            pass


def test_publish_replaces_an_older_folder_in_one_step(tmp_path):
    final = tmp_path / "adapter"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging = tmp_path / ".adapter.staging"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    publish_dir(staging, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
