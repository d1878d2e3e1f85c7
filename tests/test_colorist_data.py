import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from data_gen import colorist as cli
from helpers.data import colorist as colorist_data
from helpers.data.colorist import (ColoristDataError, SourceUnavailable, heldout_count, heldout_path, load_colorist,
                                   read_heldout, split_heldout, to_conversations, write_colorist)
from helpers.data.formats import load_conversations, normalise

ROOT = Path(__file__).resolve().parents[1]
COLORIST_SYSTEM = ("You are a professional color designer. Please provide the corresponding colors based on the "
                   "description of Human.\n")
CAMP = {"description": "Light Sky Blue: A calming, fairly bright color that falls between sky blue and baby blue, "
                       "with a hint of slight fluorescence due to its brightness.",
        "color": "#66ccff"}
ROWS = [CAMP,
        {"description": "Bright red: This is a very vibrant, saturated and vivid shade of red.", "color": "#ee0000"},
        {"description": "Bright Turquoise: Fresh green meets light blue: a tropical turquoise.", "color": "#00ffcc"},
        {"description": "浅天蓝色: 一种介于天蓝和婴儿蓝之间的平和、相当明亮的颜色。", "color": "#66ccff"}]


def _records(n):
    return [{"description": f"Colour {i}: description number {i}", "color": f"#{i:06x}"} for i in range(n)]


# --------------------------------------------------------------------------- colors_map_fn rule

def test_camp_example_follows_colors_map_fn():
    assert to_conversations([CAMP]) == [{"conversation": [{
        "system": COLORIST_SYSTEM,
        "input": "A calming, fairly bright color that falls between sky blue and baby blue, with a hint of slight "
                 "fluorescence due to its brightness.",
        "output": "#66ccff"}]}]


def test_only_the_first_colon_is_dropped_and_extra_keys_are_ignored():
    record = {"description": "Name: a: b", "color": "#000000", "synthetic": True}
    turn = normalise(record, "colorist").turns[0]
    assert (turn.input, turn.output, turn.system) == ("a: b", "#000000", COLORIST_SYSTEM)


# --------------------------------------------------------------------------- local files

def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.parametrize("layout", ["array", "jsonl"])
def test_local_json_array_and_jsonl(tmp_path, layout):
    path = tmp_path / ("colors.json" if layout == "array" else "train.jsonl")
    if layout == "array":
        path.write_text(json.dumps(ROWS, ensure_ascii=False, indent=2), encoding="utf-8")
    else:
        _write_jsonl(path, ROWS)
    records, source, notes = load_colorist("local", path=path)
    assert (records, source) == (ROWS, "local")
    assert notes == [f"local: read 4 records from {path}"]
    assert load_colorist("local", path=path, limit=2)[0] == ROWS[:2]
    # A folder (a cloned dataset) works too.
    assert load_colorist("local", path=tmp_path)[0] == ROWS


def test_auto_uses_the_quickstart_clone_layout(tmp_path, monkeypatch):
    (tmp_path / "colors").mkdir()
    _write_jsonl(tmp_path / "colors" / "train.jsonl", ROWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(colorist_data, "_unreachable", lambda *a: pytest.fail("auto must not go online"))
    records, source, notes = load_colorist()
    assert (len(records), source) == (4, "local")
    assert notes[0] == "auto: using the local file (no download tried)"


def test_bad_local_file_names_file_and_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(CAMP) + "\n"
                    + '{"description": "No colon here", "color": "#66ccff"}\n'
                    + '{"description": "X: y", "color": "#66ccf"}\n'
                    + '{"description": "X: y", "color": "#66ccff",}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert cli.main(["--source", "local", "--path", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: 3 bad record(s) in {path}")
    assert f"{path}:2: description has no text after a \"Name:\" prefix" in err
    assert f"{path}:3: color '#66ccf' is not a hex colour" in err
    assert f"{path}:4: invalid JSON at column" in err
    assert not out.exists() and not heldout_path(out).exists()


def test_missing_local_file_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--source", "local", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no local Colorist file: none of colors/train.jsonl, colors/colors.json exists" in capsys.readouterr().err
    assert cli.main(["--source", "local", "--path", "nope.jsonl", "--out", "o.jsonl"]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------- CLI end to end

@pytest.mark.parametrize("name", ["colorist.jsonl", "colorist.json"])
def test_cli_synthetic_writes_loadable_conversations(tmp_path, capsys, name):
    out = tmp_path / name
    assert cli.main(["--source", "synthetic", "--n", "300", "--heldout", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "source: synthetic (SYNTHETIC stand-in, not the real Colorist data)" in printed
    assert f"records: 300  train: 270 -> {out}  held-out: 30 -> {tmp_path / 'colorist.heldout.jsonl'}" in printed
    if name.endswith(".json"):
        assert out.read_text(encoding="utf-8").startswith("[")
    train, held = load_conversations(out), load_conversations(tmp_path / "colorist.heldout.jsonl")
    assert (train.issues, held.issues, train.format, held.format) == ([], [], "conversation", "conversation")
    assert (len(train.conversations), len(held.conversations)) == (270, 30)
    assert all(c.turns[0].system == COLORIST_SYSTEM for c in train.conversations + held.conversations)
    descriptions, references = read_heldout(tmp_path / "colorist.heldout.jsonl")
    assert len(descriptions) == 30 and descriptions[0] == held.conversations[0].turns[0].input
    assert references == [c.turns[0].output for c in held.conversations]


def test_cli_heldout_zero_removes_a_stale_heldout_file(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert cli.main(["--source", "synthetic", "--n", "50", "--out", str(out)]) == 0
    assert heldout_path(out).exists()
    assert cli.main(["--source", "synthetic", "--n", "50", "--heldout", "0", "--out", str(out)]) == 0
    assert not heldout_path(out).exists()
    assert f"removed the old held-out file {heldout_path(out)}" in capsys.readouterr().out


def test_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--source", "synthetic", "--heldout", "many", "--out", "x.jsonl"])
    assert exit_info.value.code == 2
    assert "'many' is neither a count (100) nor a fraction (0.05)" in capsys.readouterr().err
    assert cli.main(["--source", "synthetic", "--n", "20", "--heldout", "20", "--out", "unused.jsonl"]) == 2
    assert "held-out size 20 leaves nothing to train on (20 records)" in capsys.readouterr().err


def test_module_help_runs():
    result = subprocess.run([sys.executable, "-m", "data_gen.colorist", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "--source {auto,hf,modelscope,local,synthetic}" in result.stdout


# --------------------------------------------------------------------------- held-out split

def test_split_sizes_disjoint_deterministic_and_ordered():
    records = _records(200)
    train, held = split_heldout(records, 30, seed=1)
    assert (len(train), len(held)) == (170, 30)
    keys = lambda rs: {r["description"] for r in rs}  # noqa: E731
    assert keys(train).isdisjoint(keys(held)) and keys(train) | keys(held) == keys(records)
    assert train == [r for r in records if r in train] and held == [r for r in records if r in held]
    assert split_heldout(records, 30, seed=1) == (train, held)
    assert split_heldout(records, 30, seed=2)[1] != held
    assert len(split_heldout(records, 0.05)[1]) == 10
    assert len(split_heldout(records, None)[1]) == 20      # default: min(100, 10 %)
    assert split_heldout(records, 0)[1] == []


def test_identical_prompts_stay_on_one_side():
    records = [{"description": f"A{i % 5}: same text {i % 5}", "color": f"#0000{i:02x}"} for i in range(50)]
    train, held = split_heldout(records, 10, seed=3)
    prompts = lambda rs: {normalise(r, "colorist").turns[0].input for r in rs}  # noqa: E731
    assert len(held) == 10 and len(train) == 40
    assert prompts(train).isdisjoint(prompts(held))


def test_heldout_count_rules():
    assert heldout_count(2000, None) == 100 and heldout_count(50, None) == 5
    assert heldout_count(200, 0.1) == 20 and heldout_count(200, 7) == 7 and heldout_count(200, 0.0) == 0
    with pytest.raises(ColoristDataError, match="fraction must be at least 0 and below 1, not 1.5"):
        heldout_count(200, 1.5)
    with pytest.raises(ColoristDataError, match="must be 0 or more"):
        heldout_count(200, -1)


def test_write_colorist_paths(tmp_path):
    written = write_colorist(tmp_path / "sets" / "colors.json", ROWS[:3], ROWS[3:])
    assert written == {"train": tmp_path / "sets" / "colors.json",
                       "heldout": tmp_path / "sets" / "colors.heldout.jsonl", "removed": None}
    assert load_conversations(written["train"]).format == "conversation"
    assert read_heldout(written["heldout"]) == (["一种介于天蓝和婴儿蓝之间的平和、相当明亮的颜色。"], ["#66ccff"])


# --------------------------------------------------------------------------- hub sources (no network here)

def test_unreachable_probe_fails_fast():
    started = time.monotonic()
    reason = colorist_data._unreachable("http://127.0.0.1:9", 2.0)  # discard port: connection refused
    assert reason and time.monotonic() - started < 2.5


def test_hf_offline_fails_fast_and_clearly(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "data_gen.colorist", "--source", "hf", "--out",
                             str(tmp_path / "c.jsonl")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert "error: could not load burkelibbey/colors from the Hugging Face hub (offline mode is on" in result.stderr
    assert not (tmp_path / "c.jsonl").exists()


def test_hf_unreachable_hub_is_reported_without_waiting(monkeypatch):
    import datasets
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # online mode, whatever this shell has set
    monkeypatch.setattr(colorist_data, "_unreachable", lambda url, timeout: "Name or service not known")
    with pytest.raises(SourceUnavailable, match=r"hub https://\S+ is not reachable \(Name or service not known\)"):
        load_colorist("hf")


def test_hf_rows_are_checked_and_limited(monkeypatch):
    import datasets
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(ROWS + [{"description": "no colon", "color": "#123456"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(colorist_data, "_unreachable", lambda url, timeout: None)
    records, source, notes = load_colorist("hf")
    assert (records, source, calls) == (ROWS, "hf", [("burkelibbey/colors", "train")])
    assert notes[0] == "burkelibbey/colors: 4 records"
    assert notes[1].startswith("burkelibbey/colors: dropped 1 unusable row(s), e.g. burkelibbey/colors[4]: ")
    load_colorist("hf", limit=2)
    assert calls[-1] == ("burkelibbey/colors", "train[:2]")


def test_modelscope_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)
    with pytest.raises(SourceUnavailable, match="needs the modelscope package .*pip install modelscope"):
        load_colorist("modelscope")


def test_modelscope_rows_with_a_stand_in_package(monkeypatch):
    class MsDataset:
        @staticmethod
        def load(name, split):
            assert (name, split) == ("fanqiNO1/colors", "train")
            return iter(ROWS)

    package = types.ModuleType("modelscope")
    module = types.ModuleType("modelscope.msdatasets")
    module.MsDataset = MsDataset
    monkeypatch.setitem(sys.modules, "modelscope", package)
    monkeypatch.setitem(sys.modules, "modelscope.msdatasets", module)
    monkeypatch.setattr(colorist_data, "_unreachable", lambda url, timeout: None)
    assert load_colorist("modelscope", limit=3)[:2] == (ROWS[:3], "modelscope")


def test_auto_falls_back_to_synthetic_and_says_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(colorist_data, "_unreachable", lambda url, timeout: "Name or service not known")
    monkeypatch.setitem(sys.modules, "modelscope", None)
    import datasets
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    records, source, notes = load_colorist("auto", n_synthetic=40, seed=5)
    assert source == "synthetic" and len(records) == 40
    assert notes[0].startswith("auto: hf unavailable: Hugging Face hub ")
    assert notes[1].startswith("auto: modelscope unavailable: the ModelScope source needs the modelscope package")
    assert notes[2] == "auto: no real Colorist data reachable, using the synthetic set"
    assert "SYNTHETIC" in notes[3]


def test_limit_applies_to_synthetic_too():
    records, _, notes = load_colorist("synthetic", limit=30, n_synthetic=100)
    assert records == load_colorist("synthetic", n_synthetic=100)[0][:30]
    assert notes[0].startswith("synthetic: 30 SYNTHETIC records")


def test_broken_json_array_names_the_line(tmp_path, capsys):
    path = tmp_path / "colors.json"
    path.write_text('[\n  {"description": "A: b", "color": "#000000"}\n  {"description": "C: d"}\n]\n')
    assert cli.main(["--source", "local", "--path", str(path), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert f"error: {path}:3: expected ',' or ']' after a record (missing comma?)" in capsys.readouterr().err


def test_unknown_source_and_bad_limit():
    with pytest.raises(ColoristDataError, match="unknown source 'web'"):
        load_colorist("web")
    with pytest.raises(ColoristDataError, match="limit must be at least 1"):
        load_colorist("synthetic", limit=0)
