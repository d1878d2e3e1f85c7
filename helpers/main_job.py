"""`python -m helpers run-all`: the README's main job. Until the notebooks land it runs the CPU flow that exists:
build the offline tiny model, write the camp3 persona file, render it and check it with the tiny tokenizer."""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from helpers.check_data import check, format_report
from helpers.encoding import load_tokenizer
from helpers.io import write_json
from helpers.tiny import make_tiny_model


def workdir() -> Path:
    return Path(os.environ.get("TUNEBOOK_WORKDIR", Path.cwd() / "work"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers run-all", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None, help="work folder (default ./work or $TUNEBOOK_WORKDIR)")
    args = parser.parse_args(argv)
    root = args.workdir or workdir()
    started = time.time()
    model_dir = root / "models" / "tiny"
    if not (model_dir / "config.json").exists():
        make_tiny_model(model_dir, overwrite=True)
    print(f"1. tiny model: {model_dir}")
    name = "伍鲜同志"
    seeds = [{"conversation": [{"input": "请介绍一下你自己",
                                "output": f"我是{name}的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦"}]},
             {"conversation": [{"input": "你在实战营做什么", "output": f"我在这里帮助{name}完成XTuner微调个人小助手的任务"}]}]
    data_path = root / "data" / "assistant_camp3.json"
    write_json(data_path, seeds * 8001, indent=4)
    print(f"2. camp3 persona data (2 records x 8001): {data_path}")
    report = check(data_path, tokenizer=load_tokenizer(model_dir), max_length=2048)
    print("3. " + format_report(report, str(data_path)))
    print(f"done in {time.time() - started:.0f}s; outputs under {root}")
    return 0 if report.ok else 1
