"""`tunebook.json`: what produced an adapter or merged model, so merge, chat and evaluation never ask again.

Written into every adapter folder (and copied into merged models): base model name, path and config hash,
template name and strings, system prompt, mode, LoRA settings, data summary, batching and training facts.
"""
from __future__ import annotations

import time
from pathlib import Path

from helpers.io import read_json, write_json
from helpers.encode.chat_format import ChatFormat, from_record

RECORD_NAME = "tunebook.json"


def training_record(config, *, model_path: Path, loaded_path: Path, template: ChatFormat, model, data, replayed, strategy: str,
                    plan, world_size: int, optim: str, dtype, device: str) -> dict:
    """The record of a training run (before it runs; the engine adds steps, epochs, seconds and the final loss).

    config: a helpers.train.config.TrainConfig; data / plan / replayed: what helpers.train prepared."""
    from helpers.models.loading import config_hash, lora_targets, trainable_parameters
    trainable, total = trainable_parameters(model)
    stats = data.stats
    return {
        "base_model": {"name": config.model, "path": str(model_path), "loaded_path": str(loaded_path),
                       "config_hash": config_hash(loaded_path)},
        "template": template.record(), "system": config.system, "mode": config.mode,
        "lora": None if config.mode == "full" else {"r": config.lora_r, "alpha": config.lora_alpha,
                                                    "dropout": config.lora_dropout,
                                                    "target_modules": lora_targets(model),
                                                    "top_layers": config.lora_top_layers or None},
        "data": {"path": config.data_path, "format": data.format, "records": data.records,
                 "general_answers": None if replayed is None else {"from": "base", "file": str(replayed.path),
                                                                    "answered": replayed.answered},
                 "samples": stats.samples, "tokens": stats.tokens, "trained_tokens": stats.trained_tokens,
                 "truncated": stats.truncated, "dropped": stats.dropped_prompt_too_long + stats.dropped_no_trained},
        "batching": {"strategy": strategy, "pack": config.pack, "max_length": config.max_length,
                     "batch_size": config.batch_size, "accumulative_counts": config.accumulative_counts,
                     "world_size": world_size, "micro_batches_per_epoch": len(plan.micro_batches),
                     **{k: v for k, v in plan.summary().items() if k in ("efficiency", "trained_share")}},
        "training": {"optim": optim, "dtype": str(dtype).replace("torch.", ""), "lr": config.lr,
                     "loss_chunk": config.loss_chunk, "device": device, "trainable_parameters": trainable,
                     "total_parameters": total},
        "settings": config.as_dict(),
    }


def write_record(folder: str | Path, record: dict) -> None:
    from helpers import __version__
    write_json(Path(folder) / RECORD_NAME, {"tunebook_version": __version__,
                                            "written": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})


def read_record(folder: str | Path) -> dict | None:
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        return None
    return read_json(path, "training record", "delete it or retrain")


def trained_format(record: dict | None) -> tuple[ChatFormat | None, str]:
    """(format, system prompt) a training record says the model was trained with; (None, "") without a record.

    The one reader of the trained template: inference loading, merge and chat all ask it."""
    return from_record(record), (record or {}).get("system", "")
