"""data_gen.replace_name: recursive replacement, counts, refusal, atomic in-place writes, streaming reads."""
import json
import os
import tracemalloc

import pytest

from data_gen.replace_name import _ArrayReader, main, replace_file, replace_value
from helpers.errors import TunebookError

OLD, NEW = "尖米", "伍鲜同志"
RECORD = {"conversation": [{"system": "Role: 尖米的智能助手", "input": {"nested": ["尖米尖米", 3, None, True]},
                            "output": "我是尖米的助手"}],
          "尖米": {"meta": "no match here", "n": 1.5}}


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _files(folder):
    return sorted(os.listdir(folder))


def test_replace_value_recurses_and_counts():
    value, count, in_keys = replace_value(RECORD, OLD, NEW)
    assert (count, in_keys) == (4, 1)
    assert value["conversation"][0] == {"system": "Role: 伍鲜同志的智能助手",
                                        "input": {"nested": ["伍鲜同志伍鲜同志", 3, None, True]},
                                        "output": "我是伍鲜同志的助手"}
    assert value["尖米"] == {"meta": "no match here", "n": 1.5}      # keys untouched by default
    assert "伍鲜同志" in replace_value(RECORD, OLD, NEW, keys=True)[0]


def test_jsonl_counts_and_message(tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(src, [RECORD, {"conversation": [{"input": "hi", "output": "no name"}]}, RECORD])
    assert main([str(src), str(dst), "--old", OLD, "--new", NEW]) == 0
    assert capsys.readouterr().out.startswith(f"replaced 8 occurrence(s) of '{OLD}' with '{NEW}' in 2 of 3 records "
                                              "(jsonl)")
    lines = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == lines[2] == replace_value(RECORD, OLD, NEW)[0] and lines[1]["conversation"][0]["input"] == "hi"


def test_keys_replaced_only_when_asked(tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(src, [{"尖米": "x"}])
    assert main([str(src), str(dst), "--old", OLD, "--new", NEW]) == 2
    assert "occurs only in keys (1 times); pass --keys" in capsys.readouterr().err and not dst.exists()
    assert main([str(src), str(dst), "--old", OLD, "--new", NEW, "--keys"]) == 0
    assert "replaced 0 occurrence(s) of '尖米' with '伍鲜同志', 1 in keys in 1 of 1 records" in capsys.readouterr().out
    assert json.loads(dst.read_text(encoding="utf-8")) == {"伍鲜同志": "x"}


def test_json_array_keeps_camp_layout(tmp_path):
    src, dst = tmp_path / "assistant.json", tmp_path / "mine.json"
    records = [RECORD, {"conversation": [{"input": "尖米?", "output": "42"}]}]
    src.write_text(json.dumps(records, ensure_ascii=False, indent=4), encoding="utf-8")
    report = replace_file(src, dst, OLD, NEW)
    assert (report.layout, report.records, report.changed_records, report.replacements) == ("array", 2, 2, 5)
    expected = [replace_value(r, OLD, NEW)[0] for r in records]
    assert dst.read_text(encoding="utf-8") == json.dumps(expected, ensure_ascii=False, indent=4) + "\n"


def test_in_place_keeps_the_file_permissions(tmp_path):
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [RECORD])
    src.chmod(0o644)
    replace_file(src, src, OLD, NEW)
    assert src.stat().st_mode & 0o777 == 0o644 and "伍鲜同志" in src.read_text(encoding="utf-8")


def test_single_object_and_empty_array(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(RECORD, ensure_ascii=False, indent=2), encoding="utf-8")
    assert replace_file(one, one, OLD, NEW).layout == "object"
    assert json.loads(one.read_text(encoding="utf-8")) == replace_value(RECORD, OLD, NEW)[0]
    empty = tmp_path / "empty.json"
    empty.write_text("[ ]", encoding="utf-8")
    with pytest.raises(TunebookError, match="does not occur in any string of its 0 records"):
        replace_file(empty, tmp_path / "x.json", OLD, NEW)


@pytest.mark.parametrize("content, message", [
    ('{"a": "尖米"}\n{"a": "尖米"}\n{"a": "尖米",}\n', "in.jsonl:3: invalid JSON at column 12: Expecting property name"),
    ('{"a": "尖米"}\n{"a": "\xff"}\n', "in.jsonl:2: not UTF-8 text (byte 0xff)"),
])
def test_bad_jsonl_in_place_leaves_the_original_untouched(tmp_path, capsys, content, message):
    src = tmp_path / "in.jsonl"
    src.write_bytes(content.encode("utf-8").replace("\xff".encode("utf-8"), b"\xff"))
    before = src.read_bytes()
    assert main([str(src), str(src), "--old", OLD, "--new", NEW]) == 2
    assert message in capsys.readouterr().err
    assert src.read_bytes() == before and _files(tmp_path) == ["in.jsonl"]   # no temp file left behind


@pytest.mark.parametrize("content, message", [
    ('[\n  {"a": "尖米"},\n  {"a": "尖米"}\n  {"a": 1}\n]',
     "in.json:4: invalid JSON at column 3: expected ',' or ']' after an array element"),
    ('[\n  {"a": "尖米"},\n]', "in.json:3: invalid JSON at column 1: a ']' right after ','"),
    ('[{"a": "尖米"}] tail', "in.json:1: invalid JSON at column 15: extra text after the array's closing ']'"),
    ('[{"a": "尖米"},\n {"a": "x\n"}]', "in.json:2: invalid JSON at column 10: Invalid control character"),
    ('[{"a": "尖米"}', "in.json:1: invalid JSON at column 13: the file ends before the array's closing ']'"),
])
def test_bad_json_array_in_place_leaves_the_original_untouched(tmp_path, capsys, content, message):
    src = tmp_path / "in.json"
    src.write_text(content, encoding="utf-8")
    assert main([str(src), str(src), "--old", OLD, "--new", NEW]) == 2
    assert message in capsys.readouterr().err
    assert src.read_text(encoding="utf-8") == content and _files(tmp_path) == ["in.json"]


def test_not_found_refuses_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "in.json"
    src.write_text(json.dumps([{"a": "机智流"}], ensure_ascii=False), encoding="utf-8")
    before = src.read_bytes()
    assert main([str(src), str(src), "--old", OLD, "--new", NEW]) == 2
    assert f"'{OLD}' does not occur in any string of its 1 records; check the spelling. Nothing was written" in \
        capsys.readouterr().err
    assert src.read_bytes() == before and _files(tmp_path) == ["in.json"]
    assert main([str(src), str(tmp_path / "o.json"), "--old", "x", "--new", "x"]) == 2
    assert main([str(tmp_path / "missing.json"), str(tmp_path / "o.json"), "--old", "x", "--new", "y"]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_structure_check_catches_keys_made_equal(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [{"尖米": 1, "伍鲜同志": 2}])
    before = src.read_bytes()
    assert main([str(src), str(src), "--old", OLD, "--new", NEW, "--keys"]) == 2
    assert "in.jsonl:1: output check failed: record 0 changed structure (replacing inside keys made two keys equal?)" \
        in capsys.readouterr().err
    assert src.read_bytes() == before and _files(tmp_path) == ["in.jsonl"]


def test_array_reader_across_tiny_chunks_matches_json_load():
    values = [{"s": "中文" * 5, "n": 12345678901234567890, "f": -1.5e-3, "l": [True, False, None, []]}, 1234567,
              "尖米 \\\" escaped", [], {}, 0.25]
    text = json.dumps(values, ensure_ascii=False, indent=2)
    for size in (1, 2, 3, 7, 64):
        chunks = (text[i:i + size] for i in range(0, len(text), size))
        assert [v for _, v in _ArrayReader(chunks, "t", size).values()] == values


def _peak(src, chunk_size):
    tracemalloc.start()
    try:
        report = replace_file(src, src, OLD, NEW, chunk_size=chunk_size)
        return report, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("layout", ["json", "jsonl"])
def test_streaming_memory_does_not_grow_with_the_file(tmp_path, layout):
    """Peak traced memory for a 4x larger file stays the same (one record + one read chunk), far below its size."""
    record = {"conversation": [{"system": "尖米的助手" * 20, "input": "问题" * 50, "output": "尖米说：" + "答案" * 150}]}

    def make(name, count):
        path = tmp_path / f"{name}.{layout}"
        if layout == "json":    # one long line, as json.dump without indent writes it
            path.write_text(json.dumps([record] * count, ensure_ascii=False), encoding="utf-8")
        else:
            _write_jsonl(path, [record] * count)
        return path

    _peak(make("warm", 5), 4096)   # first call pays one-off costs (regex/codec caches)
    small, big = make("small", 500), make("big", 2000)
    (_, small_peak), (report, big_peak) = _peak(small, 4096), _peak(big, 4096)
    assert (report.records, report.replacements) == (2000, 42_000)
    assert big.stat().st_size > 3_000_000
    assert big_peak < 1.2 * small_peak + 20_000 and big_peak < 400_000, (small_peak, big_peak)
    last = json.loads(big.read_text(encoding="utf-8").splitlines()[-1]) if layout == "jsonl" else \
        json.loads(big.read_text(encoding="utf-8"))[-1]
    assert last["conversation"][0]["output"].startswith("伍鲜同志说：")
