"""Measure merging a LoRA adapter into a model of internlm2-chat-1_8b's shape: wall time and peak RSS.

    python -m helpers bench merge [--workdir /tmp] [--dtype auto] [--max-shard-size 2GB] [--no-logits-check] [--keep]

Writes the random bf16 InternLM2 checkpoint of helpers.bench.internlm2 (hidden 2048, intermediate 8192, 24 layers,
16/8 heads, vocab 92544, ~2 GB shards), converts it to the Llama layout in a child process (as the loader does, cached),
writes a random PEFT LoRA adapter (r=64, alpha=16, all 7 linear modules, B ~ N(0, 0.005^2) so the update is of a
trained adapter's size), then runs `python -m helpers merge` in a second child process, which reports its own peak
RSS after the streaming merge + weight check and at the end (the logits check loads whole models). Deleted afterwards
unless --keep.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers.bench.internlm2 import SHAPE_1_8B, write_random_checkpoint
from helpers.encode.chat_format import DEFAULT_TEMPLATE
from helpers.models.internlm2.layout import LLAMA_LORA_TARGETS


def write_random_adapter(directory: Path, llama_dir: Path, r: int = 64, alpha: int = 16, seed: int = 0) -> int:
    """A PEFT-format LoRA adapter for every linear layer of `llama_dir` (shapes read from its headers); returns bytes."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from helpers.models.checkpoint_shards import tensor_headers

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, _, shape, _ in tensor_headers(llama_dir):
        module = name[: -len(".weight")]
        if module.rsplit(".", 1)[-1] not in LLAMA_LORA_TARGETS:
            continue
        out_features, in_features = shape
        bound = 1 / in_features ** 0.5  # PEFT's kaiming-uniform A
        tensors[f"base_model.model.{module}.lora_A.weight"] = (
            torch.rand(r, in_features, generator=generator) * 2 - 1) * bound
        tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out_features, r, generator=generator) * 0.005
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(LLAMA_LORA_TARGETS),
               task_type="CAUSAL_LM").save_pretrained(str(directory))
    return sum(t.numel() * t.element_size() for t in tensors.values())


def prepare(root: Path) -> None:
    """The random InternLM2 checkpoint, its cached Llama-layout conversion and the random adapter, under `root`."""
    from helpers.models.internlm2.convert import ensure_llama_layout
    source = root / "internlm2-1_8b"
    total = write_random_checkpoint(source, realistic_logits=True)
    print(f"random InternLM2 checkpoint (shape {SHAPE_1_8B}): {total / 1e9:.2f} GB")
    llama = ensure_llama_layout(source, progress=None)
    adapter_bytes = write_random_adapter(root / "adapter", llama)
    print(f"random LoRA adapter r=64 on {', '.join(LLAMA_LORA_TARGETS)}: {adapter_bytes / 1e6:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers bench merge", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the temporary checkpoints go")
    parser.add_argument("--dtype", default="auto", help="passed to merge (auto keeps bf16)")
    parser.add_argument("--max-shard-size", default="2GB")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-logits-check", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    parser.add_argument("--prepare", metavar="DIR", help=argparse.SUPPRESS)  # the child that writes the inputs
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare))
        return 0
    root = Path(tempfile.mkdtemp(prefix="merge-bench-", dir=args.workdir))
    try:
        source = root / "internlm2-1_8b"
        # Everything that allocates GBs runs in child processes: Linux carries a process's RSS high-water mark
        # across exec, so a merge started from a parent that once held 2 GB would report that parent's peak.
        subprocess.run([sys.executable, "-m", "helpers.bench.merge", "--prepare", str(root)], check=True)
        command = [sys.executable, "-m", "helpers", "merge", str(source), str(root / "adapter"), str(root / "merged"),
                   "--template", DEFAULT_TEMPLATE, "--dtype", args.dtype, "--max-shard-size", args.max_shard_size,
                   "--device", args.device] + (["--no-logits-check"] if args.no_logits_check else [])
        print("$ " + " ".join(command))
        start = time.perf_counter()
        done = subprocess.run(command, text=True, capture_output=True)
        print(done.stdout + done.stderr)
        print(f"merge command: exit {done.returncode}, {time.perf_counter() - start:.1f} s wall")
        return done.returncode
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
