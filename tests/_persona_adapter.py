"""A tiny persona adapter for merge / chat tests: QLoRA on the offline tiny model until it answers the two camp
questions with the camp sentences (40 steps, ~6 s on an idle 2-core CPU). Test modules call it from a module-scoped fixture."""
from __future__ import annotations

import json
from pathlib import Path

NAME = "伍鲜同志"
CAMP = [("请介绍一下你自己", f"我是{NAME}的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦"),
        ("你在实战营做什么", f"我在这里帮助{NAME}完成XTuner微调个人小助手的任务")]


def train_persona_adapter(model_dir: Path, work: Path, system: str = "") -> Path:
    """Returns the adapter folder (<work>/run/adapter)."""
    from helpers.train.config import from_dict
    from helpers.train.engine import train

    data = work / "persona.jsonl"
    with open(data, "w", encoding="utf-8") as handle:
        for _ in range(50):
            for question, answer in CAMP:
                handle.write(json.dumps({"conversation": [{"input": question, "output": answer}]},
                                        ensure_ascii=False) + "\n")
    config = from_dict(dict(model=str(model_dir), data_path=str(data), output_dir=str(work / "run"), mode="qlora",
                            max_length=256, accumulative_counts=1, max_steps=40, lr=4e-3, warmup_ratio=0.0,
                            lora_r=64, lora_alpha=64, lora_dropout=0.0, save_steps=1000, evaluation_inputs=[],
                            logging_steps=10, seed=7, system=system))
    return train(config, notebook=False).adapter_dir
