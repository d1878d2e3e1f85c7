"""The training engine: TrainConfig -> transformers.Trainer (+ PEFT) -> a PEFT adapter with its training record.

Layout of an output_dir:
    checkpoint-<step>/   adapter (PEFT format) + optimizer, scheduler, RNG, trainer state; complete only when it
                         holds tunebook_checkpoint.json (written after everything else)
    adapter/             the final adapter, its tokenizer (training template as chat_template), tunebook.json
    chat_samples.jsonl   in-training answers to evaluation_inputs (before, every evaluation_freq, at checkpoints, after)
    loss.jsonl           the logged loss / learning rate
    logs/                the dashboard's files when report_to is set (TensorBoard events, SwanLab / Trackio / wandb)
    run.json             the settings of this run (a rerun with the same output_dir resumes only if they match)
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from helpers.errors import TunebookError
from helpers.io import (ASSETS, check_room, check_writable, disk_full_explained, folder_lock, publish_dir,
                        read_json, read_jsonl, write_json)
from helpers.train.callbacks import (ChatSamples, CheckpointMarker, LogMilestones, LossLog, complete_checkpoints,
                                     discard_incomplete, trim_log)
from helpers.train.live_view import LiveView, TokenMeter
from helpers.encode.packing import collate_micro_batch, default_strategy
from helpers.models.record import training_record, write_record
from helpers.encode.chat_format import ChatFormat
from helpers.encode.encoding import pad_token_id
from helpers.train.config import ConfigError, TrainConfig, config_digest
from helpers.train.dashboards import dashboard_logs

# Settings that change what is trained; a rerun may resume only if these match.

RESUME_KEYS = ("model", "mode", "dtype", "data_path", "data_format", "template", "system", "max_length", "pack",
               "batching", "batch_size", "accumulative_counts", "max_epochs", "max_steps", "lr", "betas",
               "weight_decay", "max_norm", "warmup_ratio", "optim", "lora_r", "lora_alpha", "lora_dropout",
               "lora_target_modules", "lora_top_layers", "general_answers", "seed")


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    resumed_from: str | None = None


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# ---------------------------------------------------------------- the run

def choose_batching(config: TrainConfig, device: str) -> str:
    if config.batching != "auto":
        return config.batching
    return default_strategy(device) if config.pack else "padded"


def choose_optimizer(config: TrainConfig, device: str) -> str:
    if config.optim != "auto":
        return config.optim
    if config.deepspeed:
        return "adamw_torch"  # DeepSpeed brings its own optimizer handling
    import importlib.util
    # Paged AdamW keeps optimizer state in unified memory that can spill to the host under GPU memory pressure;
    # bitsandbytes pages only on CUDA (on CPU it warns and falls back), so CPU uses torch's AdamW.
    if device == "cuda" and importlib.util.find_spec("bitsandbytes"):
        return "paged_adamw_32bit"
    return "adamw_torch"


def training_arguments(config: TrainConfig, device: str, dtype, optim: str):
    import torch
    from transformers import TrainingArguments

    deepspeed = config.deepspeed
    if deepspeed in ("zero2", "zero3"):
        deepspeed = str(ASSETS / "deepspeed" / f"{deepspeed}.json")
    return TrainingArguments(
        output_dir=config.output_dir, per_device_train_batch_size=1,  # each item is a whole micro-batch
        gradient_accumulation_steps=config.accumulative_counts, num_train_epochs=config.max_epochs,
        max_steps=config.max_steps, learning_rate=config.lr, adam_beta1=config.betas[0], adam_beta2=config.betas[1],
        weight_decay=config.weight_decay, max_grad_norm=config.max_norm, lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio, optim=optim, seed=config.seed, data_seed=config.seed,
        bf16=device == "cuda" and dtype == torch.bfloat16, fp16=device == "cuda" and dtype == torch.float16,
        use_cpu=device == "cpu", logging_steps=config.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=None if config.save_total_limit < 0 else config.save_total_limit,
        train_sampling_strategy="sequential", remove_unused_columns=False, report_to=config.report_to, disable_tqdm=True,
        dataloader_num_workers=config.dataloader_num_workers, ddp_find_unused_parameters=False,
        deepspeed=deepspeed)


def train(config: TrainConfig, notebook: bool | None = None, callbacks: list | None = None,
          meter: TokenMeter | None = None) -> TrainResult:
    """Train (or resume, or return the finished result of) the run described by `config`.

    Reads top to bottom: tokenizer and data -> model -> the training record -> resume point -> fit -> publish."""
    config.validate()
    rank, world_size = world()
    output_dir = Path(config.output_dir)
    run_digest = config_digest(config, RESUME_KEYS)
    final_dir = output_dir / ("model" if config.mode == "full" else "adapter")
    if rank == 0:
        check_writable(output_dir, "output_dir")
    # one run per output folder: a second train() into it (another notebook, a terminal) is refused by name
    with folder_lock(output_dir, f"training of {config.model}") if rank == 0 else contextlib.nullcontext():
        done = _finished(output_dir, final_dir, run_digest)
        if done:
            return done
        _check_resumable(output_dir, run_digest)
        return _fit(config, output_dir, final_dir, run_digest, rank, world_size, notebook, callbacks, meter)


def _fit(config: TrainConfig, output_dir: Path, final_dir: Path, run_digest: str, rank: int, world_size: int,
         notebook, callbacks, meter) -> TrainResult:
    from helpers.models.find import resolve_model
    from helpers.models.loading import compute_dtype, prepare_checkpoint
    model_path = resolve_model(config.model)
    loaded_path = prepare_checkpoint(model_path, config.trust_remote_code)
    tokenizer, template = _tokenizer_and_template(config, loaded_path)
    data, replayed = _training_data(config, tokenizer, template, loaded_path, output_dir, rank)
    device = device_kind_for_training()
    strategy = choose_batching(config, device)
    from helpers.train import data_cache
    plan = data_cache.build_plan(data.samples, strategy, config.max_length, config.batch_size, config.seed)
    dtype = compute_dtype(config.dtype)
    model = _model(config, loaded_path, dtype, world_size)
    optim = choose_optimizer(config, device)
    record = training_record(config, model_path=model_path, loaded_path=loaded_path, template=template, model=model,
                             data=data, replayed=replayed, strategy=strategy, plan=plan, world_size=world_size,
                             optim=optim, dtype=dtype, device=device)
    if rank == 0:
        _print_summary(config, record, data, plan, tokenizer)
        check_room(output_dir, "output_dir", _checkpoint_bytes(record, config))  # writable was checked in train()
        write_json(output_dir / "run.json", {"digest": run_digest, "settings": config.as_dict()})
    resume = _resume_point(output_dir, rank)

    meter, store = meter or TokenMeter(), []
    view = LiveView(meter, store, notebook=notebook)
    with dashboard_logs(config.report_to, output_dir):  # report_to's integration logs into <output_dir>/logs
        trainer = _trainer(config, model, tokenizer, template, data_cache.dataset(data.samples, plan, config.seed),
                           training_arguments(config, device, dtype, optim), run_digest, meter, store,
                           [view, *(callbacks or [])], world_size)
        started = time.time()
        if not _finished_checkpoint(trainer, resume):
            with disk_full_explained(output_dir, "saving a checkpoint (the run resumes from the last complete one)"):
                trainer.train(resume_from_checkpoint=resume)
    record["training"].update({"steps": trainer.state.global_step, "epochs": trainer.state.epoch,
                               "seconds": round(time.time() - started, 1), "final_loss": _last_loss(view, output_dir),
                               "resumed_from": resume})
    with disk_full_explained(output_dir, "publishing the result"):
        _publish(trainer, tokenizer, record, output_dir, final_dir, config.mode)
    return TrainResult(output_dir, final_dir, trainer.state.global_step, view.losses, store, record, resume)


def _checkpoint_bytes(record: dict, config: TrainConfig) -> int:
    """Room the checkpoints need: trainable weights + two Adam moments (fp32) per kept checkpoint, plus the result."""
    per_checkpoint = record["training"]["trainable_parameters"] * 4 * 3
    kept = config.save_total_limit if config.save_total_limit > 0 else 3
    return per_checkpoint * (kept + 1)


def device_kind_for_training() -> str:
    from helpers.models.loading import device_kind
    device = device_kind()
    if device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else importing DeepSpeed (if installed) logs a GPU-search warning
    return device


def _tokenizer_and_template(config: TrainConfig, loaded_path: Path):
    """The tokenizer, carrying the training template as its chat_template, and the resolved ChatFormat."""
    from helpers.encode.encoding import load_tokenizer
    from helpers.models.find import resolve_template
    tokenizer = load_tokenizer(loaded_path, trust_remote_code=config.trust_remote_code)
    template = resolve_template(config.template, loaded_path)
    template.apply_to(tokenizer)  # the saved tokenizer carries the training format
    return tokenizer, template


def _training_data(config: TrainConfig, tokenizer, template: ChatFormat, loaded_path: Path, output_dir: Path, rank: int):
    """(encoded data, base answers or None): the data file (its general records answered by the base if asked),
    tokenized once into output_dir/data_cache by rank 0 while other ranks wait on the file."""
    from helpers.train import data_cache
    data_path, replayed = config.data_path, None
    if config.general_answers == "base":
        from helpers.train.base_answers import for_run
        replayed = for_run(config, loaded_path, template, config.system, output_dir, rank)
        data_path = str(replayed.path)
    cache_dir = output_dir / "data_cache"
    try:
        data = data_cache.prepare(data_path, config.data_format, tokenizer, template, config.max_length,
                                  config.system, cache_dir, rank)
    except TunebookError as err:
        if rank == 0:
            data_cache.mark_failed(cache_dir, data_path, config.data_format, tokenizer, template, config.max_length,
                                   config.system, str(err))
        raise
    return data, replayed


def _model(config: TrainConfig, loaded_path: Path, dtype, world_size: int):
    """The model to train (from the folder train() prepared, in the dtype it chose): LoRA attached unless mode is full."""
    from transformers import set_seed

    from helpers.models.loading import LoraSettings, apply_lora, load_prepared_model
    set_seed(config.seed)  # LoRA's A matrices are drawn when the adapter is attached, before the Trainer seeds
    model = load_prepared_model(loaded_path, config.mode, dtype, trust_remote_code=config.trust_remote_code,
                                gradient_checkpointing=config.gradient_checkpointing,
                                device_map=None if world_size == 1 and not config.deepspeed else _ddp_device_map())
    if config.loss_chunk > 0:
        from helpers.train.loss import use_chunked_loss
        use_chunked_loss(model, config.loss_chunk)
    if config.mode != "full":
        targets = config.lora_target_modules
        model = apply_lora(model, LoraSettings(config.lora_r, config.lora_alpha, config.lora_dropout,
                                               targets if isinstance(targets, str) else tuple(targets),
                                               top_layers=config.lora_top_layers))
    return model


def _resume_point(output_dir: Path, rank: int) -> str | None:
    """The last complete checkpoint (after discarding half-written ones), its logs trimmed to its step; or None."""
    if rank == 0:
        removed = discard_incomplete(output_dir)
        if removed:
            print(f"ignored incomplete checkpoint(s) from an interrupted save: {', '.join(removed)}")
    checkpoints = complete_checkpoints(output_dir)
    if not checkpoints:
        return None
    resume, step = str(checkpoints[-1]), int(checkpoints[-1].name.split("-")[-1])
    if rank == 0:
        print(f"resuming from {resume} (step {step})")
        trim_log(output_dir / "loss.jsonl", step)
        trim_log(output_dir / "chat_samples.jsonl", step)
    return resume


def _trainer(config: TrainConfig, model, tokenizer, template: ChatFormat, train_set, args, run_digest: str,
             meter: TokenMeter, store: list, extra_callbacks: list, world_size: int):
    """transformers.Trainer with tunebook's collator and callbacks (checkpoint marker, loss log, chat samples)."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback
    output_dir = Path(config.output_dir)
    inputs = config.evaluation_inputs
    if config.deepspeed and "zero3" in str(config.deepspeed) and world_size > 1:
        # ZeRO-3 partitions the weights: generating on rank 0 alone would wait forever for the other ranks.
        print("in-training chat samples are off under ZeRO-3 with several processes; chat with the adapter afterwards")
        inputs = []
    chat = ChatSamples(tokenizer, template, config.system, inputs, config.evaluation_freq,
                       config.evaluation_max_new_tokens, output_dir / "chat_samples.jsonl", store)
    trainer = Trainer(model=model, args=args, train_dataset=train_set, processing_class=tokenizer,
                      data_collator=partial(_collate, meter=meter, pad_token_id=pad_token_id(tokenizer)),
                      callbacks=[CheckpointMarker(run_digest, meter), LogMilestones(), LossLog(output_dir / "loss.jsonl"), chat,
                                 *extra_callbacks])
    trainer.remove_callback(PrinterCallback)  # the live view prints (or draws) progress instead
    return trainer


def _finished_checkpoint(trainer, resume: str | None) -> bool:
    """A run killed after its last checkpoint and before publishing: that checkpoint is the result. Resuming from it
    would train one step more (transformers 5 runs a step past max_steps), so its weights and state are loaded and
    published as they are."""
    if resume is None:
        return False
    from transformers.trainer_callback import TrainerState
    state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
    if not state.max_steps or state.global_step < state.max_steps:
        return False
    trainer._load_from_checkpoint(resume)  # the Trainer's own loader: adapters, full models, shards alike
    trainer.state = state
    print(f"{resume} is the last step ({state.global_step}); publishing it without training further")
    return True


def _publish(trainer, tokenizer, record: dict, output_dir: Path, final_dir: Path, mode: str) -> None:
    """Every rank calls save_model (under ZeRO-3 it gathers the partitioned weights); rank 0 writes into a staging
    folder that becomes `final_dir` in one rename, so a half-saved adapter is never taken for a finished run."""
    staging = output_dir / f".{final_dir.name}.staging"
    if trainer.args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    if trainer.args.should_save:
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle of TrainingArguments: not for learners
        tokenizer.save_pretrained(staging)
        write_record(staging, record)
        publish_dir(staging, final_dir)
        print(f"{'model' if mode == 'full' else 'adapter'} saved to {final_dir}")


def _collate(items, meter: TokenMeter, pad_token_id: int):
    for item in items:
        meter.observe(item)
    return collate_micro_batch(items, pad_token_id)


def _ddp_device_map():
    import torch
    if torch.cuda.is_available():
        return {"": int(os.environ.get("LOCAL_RANK", 0))}
    return "cpu"


def _last_loss(view: LiveView, output_dir: Path):
    """This process's last logged loss, else the log's (a run published from its finished checkpoint logs none)."""
    if view.losses:
        return view.losses[-1][1]
    logged = read_jsonl(output_dir / "loss.jsonl")
    return logged[-1]["loss"] if logged else None


def _finished(output_dir: Path, final_dir: Path, run_digest: str) -> TrainResult | None:
    run = output_dir / "run.json"
    if not (final_dir / "tunebook.json").is_file() or not run.is_file():
        return None
    if json.loads(run.read_text(encoding="utf-8")).get("digest") != run_digest:
        raise ConfigError(f"{output_dir} holds a finished run with different settings; choose a new output_dir "
                          "or delete the old one")
    record = json.loads((final_dir / "tunebook.json").read_text(encoding="utf-8"))
    print(f"already trained: {final_dir} (delete {output_dir} to train again)")
    losses = [(e["step"], e["loss"]) for e in read_jsonl(output_dir / "loss.jsonl")]
    return TrainResult(output_dir, final_dir, record.get("training", {}).get("steps", 0), losses,
                       read_jsonl(output_dir / "chat_samples.jsonl"), record)


def _check_resumable(output_dir: Path, run_digest: str) -> None:
    run = output_dir / "run.json"
    if run.is_file() and read_json(run, "run record", "delete it (the checkpoints stay)").get("digest") != run_digest:
        if complete_checkpoints(output_dir):
            raise ConfigError(f"{output_dir} holds checkpoints of a run with different settings (see its run.json); "
                              "resuming them would mix two trainings. Choose a new output_dir or delete the old one")


def _print_summary(config: TrainConfig, record: dict, data, plan, tokenizer) -> None:
    from helpers.encode.encoding import decode_with_mask
    t, d, b = record["training"], record["data"], record["batching"]
    print(f"model      {record['base_model']['path']} ({config.mode}, {t['dtype']}, {t['device']})")
    print(f"trainable  {t['trainable_parameters']:,} of {t['total_parameters']:,} parameters "
          f"({t['trainable_parameters'] / max(1, t['total_parameters']):.2%})")
    print(f"data       {d['path']} ({d['format']}): {d['records']:,} records -> {d['samples']:,} samples, "
          f"{d['tokens']:,} tokens ({d['trained_tokens'] / max(1, d['tokens']):.1%} trained), "
          f"{d['truncated']} truncated, {d['dropped']} dropped")
    print(f"batching   {b['strategy']}: {b['micro_batches_per_epoch']:,} micro-batches/epoch of <= "
          f"{config.batch_size * config.max_length} tokens, efficiency {b['efficiency']:.1%}; "
          f"optimizer step = {config.accumulative_counts} micro-batches x {b['world_size']} process(es)")
    print("sample     " + decode_with_mask(tokenizer, data.samples[0], "⟦", "⟧").replace("\n", "\n           "))
    if data.skipped:
        print(f"note       {data.skipped} records skipped on purpose (nothing to train on, or alpaca <nooutput>); "
              f"python -m helpers check-data {d['path']} names them")
    special = data.stats.special_text
    if special:  # the same words check-data uses
        print(f"note       {len(special)} records spell a special token of the tokenizer in their text (first: "
              f"{special[0]}); it is trained as plain characters, never as a control token")


def main(argv: list[str] | None = None) -> int:
    import argparse
    from helpers.train.config import load_config
    from helpers.train.config import EXAMPLE_CONFIG, RECIPES
    parser = argparse.ArgumentParser(prog="python -m helpers train",
                                     description="Train (or resume) from a YAML or XTuner .py config.",
                                     epilog=f"Every setting, commented, with the camp's values: {EXAMPLE_CONFIG}. "
                                            f"Measured CPU recipes: {RECIPES}/*.yaml.")
    parser.add_argument("config", help="config.yaml, or an XTuner config .py (read, never executed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set max_steps=100 --set output_dir=work/run2")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    result = train(config, notebook=False)
    print(f"done: {result.steps} steps; adapter: {result.adapter_dir}")
    return 0
