"""The bench command in a smoke setting: it runs both paths and prints every column (speed is never asserted)."""
import re

import pytest

from helpers.bench.train import bench_records


def test_bench_data_mixes_persona_and_colorist_rows():
    records = bench_records(40)
    persona = [r for r in records if r["conversation"][0]["input"] in ("请介绍一下你自己", "你在实战营做什么")]
    assert len(records) == 40 and len(persona) == 20
    assert bench_records(40) == records  # deterministic


@pytest.mark.slow
def test_bench_smoke_prints_every_column(run_cli, tmp_path):
    code, out, _ = run_cli("bench", "train", "--steps", 1, "--warmup", 1, "--accumulation", 2, "--rows", 160, "--no-bs16",
                           "--work", tmp_path)
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("path"))
    for column in ("trained tok/s", "non-pad tok/s", "padding", "peak RSS", "step s", "tok/step", "MFU", "x base"):
        assert column in header
    rows = [line for line in out.splitlines() if line.startswith(("tunebook (", "baseline recipe"))]
    assert [r.split("  ")[0] for r in rows] == ["tunebook (grouped)", "baseline recipe (bs4)"]
    for row in rows:
        assert re.search(r"\d+\.\d% +\d+\.\d\d GB +\d+\.\d\d +[\d,]+ +- +\d+\.\d\d$", row), row
    assert re.fullmatch(r"ratio tunebook/baseline trained-tokens/s: \d+\.\d\d", out.strip().splitlines()[-1])


def test_big_shapes_refuse_without_a_gpu(run_cli):
    code, _, err = run_cli("bench", "train", "--model-shape", "7b")
    assert code == 2 and "need a CUDA GPU" in err
