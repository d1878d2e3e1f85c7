"""Trainer callbacks (checkpoint marker, loss log, in-training chat samples) and the checkpoint folders they mark.

A checkpoint-<step>/ folder is complete only when it holds MARKER, written after everything else, so a run killed
while saving leaves a folder that resume ignores.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers import TrainerCallback

from helpers.io import append_jsonl, atomic_file, read_jsonl, write_json
from helpers.models.generation import Sampling, answer_batch, with_max_new_tokens
from helpers.train.live_view import TokenMeter

MARKER = "tunebook_checkpoint.json"


# ---------------------------------------------------------------- checkpoints

def complete_checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def discard_incomplete(output_dir: Path) -> list[str]:
    """Checkpoint folders without the completion marker were being written when a run died: remove them."""
    removed = []
    for path in output_dir.glob("checkpoint-*"):
        if path.is_dir() and not (path / MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


class LogMilestones(TrainerCallback):
    """Besides every logging_steps: the first step after warm-up and the last step are always logged, so a short run
    does not show only step 1 (whose lr is 0 during warm-up, which reads like a bug)."""

    def on_step_end(self, args, state, control, **kwargs):
        warmup = args.get_warmup_steps(state.max_steps) if state.max_steps else 0
        if state.global_step in (warmup + 1, state.max_steps):
            control.should_log = True
        return control


class CheckpointMarker(TrainerCallback):
    """Marks a checkpoint complete after the Trainer has written all of it (model, optimizer, RNG, state)."""

    def __init__(self, run_digest: str, meter: TokenMeter):
        self.run_digest, self.meter = run_digest, meter

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_json(folder / MARKER, {"step": state.global_step, "run": self.run_digest,
                                         "tokens_seen_this_process": self.meter.tokens})


class LossLog(TrainerCallback):
    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            append_jsonl(self.path, {"step": state.global_step, "loss": logs["loss"],
                                     "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")})


class ChatSamples(TrainerCallback):
    """XTuner EvaluateChatHook semantics, with the training template and system prompt (no drift)."""

    def __init__(self, tokenizer, template, system: str, inputs: list[str], every: int, max_new_tokens: int,
                 path: Path, store: list[dict], sampling: Sampling = Sampling()):
        self.tokenizer, self.template, self.system, self.inputs = tokenizer, template, system, inputs
        self.every, self.path, self.store = every, path, store
        self.sampling = with_max_new_tokens(sampling, max_new_tokens)
        self.last_step = None

    def _run(self, model, step: int, when: str, max_new_tokens: int | None = None):
        if not self.inputs or step == self.last_step:
            return
        self.last_step = step
        sampling = self.sampling if max_new_tokens is None else with_max_new_tokens(self.sampling, max_new_tokens)
        texts = answer_batch(model, self.tokenizer, self.template, self.inputs, self.system, sampling=sampling)
        for question, text in zip(self.inputs, texts):
            entry = {"step": step, "when": when, "input": question, "output": text}
            self.store.append(entry)
            append_jsonl(self.path, entry)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and state.global_step == 0:
            self._run(model, 0, "before training", max_new_tokens=min(50, self.sampling.max_new_tokens))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step >= state.max_steps:
            return  # the last step's samples are the "after training" ones
        if state.is_world_process_zero and (state.global_step % self.every == 0 or control.should_save):
            self._run(model, state.global_step, "checkpoint" if control.should_save else "every evaluation_freq")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self._run(model, state.global_step, "after training")


def trim_log(path: Path, step: int) -> None:
    """A resumed run repeats the steps after its checkpoint: drop their old log lines."""
    if not path.is_file():
        return
    keep = [entry for entry in read_jsonl(path) if entry.get("step", 0) <= step]
    with atomic_file(path) as handle:
        handle.write("".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in keep))


