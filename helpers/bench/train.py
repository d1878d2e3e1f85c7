"""`python -m helpers bench train`: tunebook's training path vs the recipe people copy from tutorials, in one process.

Same model, same data (camp persona rows mixed with Colorist rows), same LoRA settings and learning rate; each path
runs `--warmup` optimizer steps, then `--steps` timed ones. The baseline is the PEFT QLoRA recipe of the tutorials
(as in datawhalechina/self-llm and most QLoRA blog posts): transformers.Trainer + DataCollatorForSeq2Seq(padding=True), no packing,
per-device batch 4, gradient accumulation 16, gradient checkpointing, paged_adamw_32bit, MAX_LENGTH 512, with PEFT's
prepare_model_for_kbit_training. Shapes 1_8b / 7b are random-weight models with internlm2-chat dimensions (no
download) and need a GPU. Timings are comparable only within one run (ratios); absolute numbers depend on the
machine and on whatever else it runs.
"""
from __future__ import annotations

import argparse
import gc
import json
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from helpers.encode.chat_format import DEFAULT_TEMPLATE
from helpers.errors import TunebookError
from helpers.models.shapes import INTERNLM2_SHAPES
from helpers.train.live_view import TokenMeter

SHAPES = {"1_8b": INTERNLM2_SHAPES["internlm2-chat-1_8b"], "7b": INTERNLM2_SHAPES["internlm2-chat-7b"]}


@dataclass
class Row:
    name: str
    trained_tps: float       # trained-on (labelled) tokens per second
    tokens_tps: float        # all non-pad tokens per second
    padding: float           # share of computed positions that are padding
    peak_gb: float           # peak memory during the timed steps (GPU allocator, or process RSS on CPU)
    step_s: float            # seconds per optimizer step
    tokens_per_step: float
    mfu: float | None = None


# ---------------------------------------------------------------- data and models

def bench_records(rows: int, seed: int = 0) -> list[dict]:
    """Camp3 persona rows and synthetic Colorist rows, half each, interleaved deterministically."""
    import random

    from helpers.data.colorist_synth import synthetic_records
    from helpers.data.formats import normalise
    name = "伍鲜同志"
    persona = [{"conversation": [{"input": "请介绍一下你自己",
                                  "output": f"我是{name}的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦"}]},
               {"conversation": [{"input": "你在实战营做什么",
                                  "output": f"我在这里帮助{name}完成XTuner微调个人小助手的任务"}]}]
    colours = [normalise(r, "colorist").to_record() for r in synthetic_records(rows // 2, seed)]
    records = [persona[i % 2] for i in range(rows - len(colours))] + colours
    random.Random(seed).shuffle(records)
    return records


def make_shape_model(shape: str, out: Path, tokenizer_dir: Path) -> Path:
    """A random-weight Llama with internlm2-chat dimensions, saved in bf16, using the tiny tokenizer's ids."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=32768, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         dtype="bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------- measuring

class PeakMemory:
    """Peak GPU allocator bytes, or peak process RSS sampled every 5 ms on CPU, between start() and stop()."""

    def __init__(self):
        import torch
        self.cuda = torch.cuda.is_available()
        self.peak = 0
        self._running = False

    def start(self):
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            from helpers.train.memory_plan import rss_bytes
            self._running = True
            self.peak = rss_bytes()

            def sample():
                while self._running:
                    self.peak = max(self.peak, rss_bytes())
                    time.sleep(0.005)
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()

    def stop(self) -> float:
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._running = False
            self._thread.join()
        return self.peak / 2**30


class StepTimer(TrainerCallback):
    """Times optimizer steps after `warmup` and counts the tokens the collator produced meanwhile."""

    def __init__(self, warmup: int, meter):
        self.warmup, self.meter = warmup, meter
        self.memory = PeakMemory()
        self.breakdown: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        import torch
        if torch.cuda.is_available():  # weights + LoRA, before any activation or optimizer state exists
            self.breakdown["weights + LoRA"] = torch.cuda.memory_allocated() / 2**30
        self.start = self.tokens0 = self.trained0 = self.computed0 = None

    def on_step_end(self, args, state, control, **kwargs):
        import torch
        if state.global_step == 1 and torch.cuda.is_available():
            self.breakdown["+ grads + optimizer"] = torch.cuda.memory_allocated() / 2**30
        if state.global_step == self.warmup:
            self.memory.start()
            self._sync()
            self.start = time.perf_counter()
            self.tokens0, self.trained0, self.computed0 = self.meter.tokens, self.meter.trained, self.meter.computed
        if state.global_step == state.max_steps:
            self._sync()
            self.elapsed = time.perf_counter() - self.start
            self.peak_gb = self.memory.stop()
            self.steps = state.max_steps - self.warmup

    @staticmethod
    def _sync():
        import torch
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def row(self, name: str, flops_per_token: float | None, peak_flops: float | None) -> Row:
        tokens = self.meter.tokens - self.tokens0
        trained = self.meter.trained - self.trained0
        computed = self.meter.computed - self.computed0
        mfu = None
        if flops_per_token and peak_flops:
            mfu = tokens * flops_per_token / self.elapsed / peak_flops
        row = Row(name, trained / self.elapsed, tokens / self.elapsed, 1 - tokens / max(1, computed),
                  self.peak_gb, self.elapsed / self.steps, tokens / self.steps, mfu)
        row.breakdown = dict(self.breakdown, peak=self.peak_gb)
        return row


def _counting(collate, meter):
    def wrapped(items):
        batch = collate(items)
        meter.observe_batch(batch)
        return batch
    return wrapped


def _free():
    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- the two paths

def run_tunebook(model_dir: Path, data: Path, work: Path, steps: int, warmup: int, batching: str, lr: float,
                 max_length: int, accumulation: int, name: str, flops=None, peak=None, **settings) -> Row:
    from helpers.train import engine as training
    from helpers.train.config import from_dict
    import shutil
    shutil.rmtree(work / name, ignore_errors=True)  # every timing starts from scratch, never a resumed run
    meter = TokenMeter()
    timer = StepTimer(warmup, meter)
    config = from_dict(dict(model=str(model_dir), data_path=str(data), output_dir=str(work / name), batching=batching,
                            max_length=max_length, batch_size=1, accumulative_counts=accumulation,
                            max_steps=warmup + steps, lr=lr, warmup_ratio=0.0, save_steps=10**9, logging_steps=10**9,
                            evaluation_inputs=[], seed=0, **settings))
    training.train(config, notebook=False, callbacks=[timer], meter=meter)
    _free()
    return timer.row(name, flops, peak)


def run_baseline(model_dir: Path, records: list[dict], work: Path, steps: int, warmup: int, lr: float,
                 batch: int = 4, accumulation: int = 16, name: str = "baseline", flops=None, peak=None) -> Row:
    """The tutorials' recipe: padded batches in random order, HF loss, PEFT's k-bit preparation."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from helpers.encode.encoding import Encoder, load_tokenizer
    from helpers.data.formats import conversations_from_records
    from helpers.models.loading import compute_dtype, from_pretrained, keep_4bit_trainable
    tokenizer = load_tokenizer(model_dir)
    samples = Encoder(tokenizer, DEFAULT_TEMPLATE, 512).encode_all(conversations_from_records(records))  # MAX_LENGTH 512
    dataset = [{"input_ids": s.input_ids, "labels": s.labels, "attention_mask": [1] * len(s)} for s in samples]
    dtype = compute_dtype("auto")
    cuda = torch.cuda.is_available()
    model = from_pretrained(model_dir, dtype=dtype, bits=4)  # the same NF4 recipe; the rest is XTuner-style
    keep_4bit_trainable(model)  # the CPU repacking bug would make the baseline's gradients wrong, not just slow
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    meter = TokenMeter()
    timer = StepTimer(warmup, meter)
    args = TrainingArguments(output_dir=str(work / name), per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, max_steps=warmup + steps, learning_rate=lr,
                             optim="paged_adamw_32bit" if cuda else "adamw_torch", gradient_checkpointing=True,
                             bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16,
                             use_cpu=not cuda, logging_steps=10**9, save_strategy="no", report_to="none",
                             disable_tqdm=True, remove_unused_columns=False, seed=0)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=_counting(collator, meter),
                      callbacks=[timer])
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    del trainer, model
    _free()
    return timer.row(name, flops, peak)


# ---------------------------------------------------------------- report

def matmul_peak_flops() -> float | None:
    """Measured bf16 matmul rate of this GPU (the MFU denominator)."""
    import torch
    if not torch.cuda.is_available():
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 20
    for _ in range(n):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192 ** 3 * n / (time.perf_counter() - start)


def model_flops_per_token(model_dir: Path, seq_len: float) -> float:
    """LoRA training FLOPs per token, without recomputation: forward 2N + input-gradient backward 2N over the frozen
    linears, attention 4 x layers x hidden x seq (forward + backward) and the LoRA matrices (6 x their size)."""
    from helpers.train.memory_plan import load_shape
    shape = load_shape(model_dir)
    n = shape.linear_params + shape.vocab * shape.hidden
    return 4 * n + 6 * shape.lora_params(64) + 4 * shape.layers * shape.hidden * seq_len


def format_table(rows: list[Row], baseline: Row, memory_kind: str) -> str:
    head = (f"{'path':<28}{'trained tok/s':>14}{'non-pad tok/s':>15}{'padding':>9}{memory_kind:>16}"
            f"{'step s':>9}{'tok/step':>10}{'MFU':>7}{'x base':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        mfu = f"{r.mfu:6.1%}" if r.mfu is not None else "     -"
        lines.append(f"{r.name:<28}{r.trained_tps:>14,.0f}{r.tokens_tps:>15,.0f}{r.padding:>8.1%}"
                     f"{r.peak_gb:>13.2f} GB{r.step_s:>9.2f}{r.tokens_per_step:>10,.0f}{mfu:>7}"
                     f"{r.trained_tps / baseline.trained_tps:>8.2f}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers bench train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="require a GPU (fail instead of running on CPU)")
    parser.add_argument("--model-shape", choices=("tiny", "1_8b", "7b"), default="tiny")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--rows", type=int, default=0, help="dataset rows (default: enough for the steps)")
    parser.add_argument("--accumulation", type=int, default=16, help="accumulation of both paths (recipe: 16)")
    parser.add_argument("--strategies", default="", help="also time these tunebook batchings, e.g. packed,padded")
    parser.add_argument("--no-bs16", action="store_true", help="skip the recipe with batch 16")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--loss-chunk", default="", help="tunebook loss chunk sizes to time, e.g. 1024,256,0")
    parser.add_argument("--no-baseline", action="store_true", help="time only tunebook paths")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import torch
    args = _parser().parse_args(argv)
    cuda = torch.cuda.is_available()
    if (args.gpu or args.model_shape != "tiny") and not cuda:
        raise TunebookError(f"--model-shape {args.model_shape} / --gpu need a CUDA GPU; this machine has none "
                            "(the tiny shape runs on CPU)")
    work = Path(args.work or tempfile.mkdtemp(prefix="tunebook-bench-"))
    from helpers.encode.packing import default_strategy
    from helpers.models.tiny import make_tiny_model
    tiny = work / "tiny"
    if not (tiny / "config.json").exists():
        make_tiny_model(tiny, overwrite=True)
    model_dir = tiny if args.model_shape == "tiny" else make_shape_model(args.model_shape, work / args.model_shape, tiny)
    steps_total = args.warmup + args.steps
    rows = args.rows or max(2000, 64 * args.accumulation * steps_total)
    records = bench_records(rows)
    data = work / "bench.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    peak = matmul_peak_flops()
    flops = model_flops_per_token(model_dir, seq_len=70) if cuda else None
    device = "cuda" if cuda else "cpu"
    default = default_strategy(device)
    print(f"bench: {args.model_shape} shape on {torch.cuda.get_device_name() if cuda else 'CPU'}, {rows} rows "
          f"(camp persona + Colorist), LoRA r64 all linear, lr {args.lr}, {args.warmup} warm-up + {args.steps} timed "
          f"optimizer steps per path" + (f", bf16 matmul peak {peak / 1e12:.0f} TFLOP/s" if peak else ""), flush=True)
    results = [run_tunebook(model_dir, data, work, args.steps, args.warmup, default, args.lr, 2048, args.accumulation,
                            f"tunebook ({default})", flops, peak)]
    for chunk in [int(c) for c in args.loss_chunk.split(",") if c]:
        results.append(run_tunebook(model_dir, data, work, args.steps, args.warmup, default, args.lr, 2048,
                                    args.accumulation, f"tunebook ({default}, chunk {chunk})", flops, peak,
                                    loss_chunk=chunk))
    for strategy in [s for s in args.strategies.split(",") if s and s != default]:
        results.append(run_tunebook(model_dir, data, work, args.steps, args.warmup, strategy, args.lr, 2048,
                                    args.accumulation, f"tunebook ({strategy})", flops, peak))
    if args.no_baseline:
        print(format_table(results, results[0], "peak GPU" if cuda else "peak RSS"))
        for row in results:
            print(f"memory {row.name}: " + ", ".join(f"{k} {v:.2f} GiB" for k, v in row.breakdown.items()))
        return 0
    baseline = run_baseline(model_dir, records, work, args.steps, args.warmup, args.lr, 4, args.accumulation,
                            "baseline recipe (bs4)", flops, peak)
    results.append(baseline)
    if not args.no_bs16:
        results.append(run_baseline(model_dir, records, work, args.steps, args.warmup, args.lr, 16,
                                    max(1, args.accumulation // 4), "baseline recipe (bs16)", flops, peak))
    print(format_table(results, baseline, "peak GPU" if cuda else "peak RSS"))
    if cuda:
        from helpers.train.memory_plan import Plan, estimate, load_shape
        for row in results:
            print(f"memory {row.name}: " + ", ".join(f"{k} {v:.2f} GiB" for k, v in row.breakdown.items()))
        predicted = estimate(load_shape(model_dir), Plan(max_length=2048, batch_size=1))
        print(f"memory plan for the tunebook path (2048 tokens per micro-batch):\n{predicted.table()}")
    print(f"ratio tunebook/baseline trained-tokens/s: {results[0].trained_tps / baseline.trained_tps:.2f}")
    return 0
