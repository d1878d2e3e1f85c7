"""Predict peak GPU memory of a training run from config.json alone, and say what fits.

The estimate is what `torch.cuda.max_memory_allocated()` reports (tensors allocated by PyTorch); the CUDA context
(~0.3-0.6 GB) and the allocator's cached-but-free blocks come on top in nvidia-smi. Components, in bytes:

  base weights   qlora: quantized linears at 4 bits + double-quantized absmax (8-bit per 64 weights + fp32 per
                 256 blocks) = 0.5 + 1/64 + 1/4096 bytes/param; embedding, head and norms in the compute dtype
                 lora:  every weight in the compute dtype;   full: fp32 weights + grads + Adam (16 bytes/param)
  LoRA           r x (in + out) per adapted linear; fp32 weight + fp32 grad + optimizer state
                 (8 bytes/param for 32-bit Adam, 2 for 8-bit)
  activations    gradient checkpointing keeps each layer's input (2 bytes x hidden per token per layer) and
                 recomputes one layer at a time: LAYER_PEAK bytes per token for that layer; without
                 checkpointing every layer keeps its activations (ACT_PER_LAYER per token)
  logits         tokens x vocab: bf16 logits + fp32 copy + fp32 grad (10 bytes), or one chunk of them when
                 the loss is computed in chunks (helpers.train.loss)
The per-token activation constants were fitted on an H100 to measured peaks of internlm2-chat-1_8b and -7b shaped
models (README "Memory planner"); tests check every exact component against real models on CPU.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

GIB = 1024 ** 3
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)   # 4-bit values + 8-bit absmax per 64 + fp32 absmax-of-absmax per 256 blocks
# Activation bytes per token, as multiples of (hidden, intermediate), fitted on GPU (see module docstring).
CHECKPOINTED_LAYER_PEAK = (24.0, 10.0)      # one layer recomputed during backward, LoRA inputs included
ACT_PER_LAYER = (34.0, 10.0)                # every layer kept when gradient checkpointing is off


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int
    tied: bool = False

    @classmethod
    def from_config(cls, config: dict) -> "Shape":
        """Llama- or InternLM2-style config.json (InternLM2 uses the same field names)."""
        heads = config["num_attention_heads"]
        return cls(config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"], heads,
                   config.get("num_key_value_heads", heads), config["vocab_size"],
                   config.get("head_dim") or config["hidden_size"] // heads, bool(config.get("tie_word_embeddings")))

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear in one decoder layer, Llama names."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    @property
    def linear_params(self) -> int:
        return self.layers * sum(i * o for i, o in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def norm_params(self) -> int:
        return (2 * self.layers + 1) * self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + self.norm_params

    def lora_params(self, r: int, targets=None) -> int:
        shapes = self.linear_shapes()
        names = shapes if targets in (None, "all-linear") else targets
        return self.layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)


@dataclass(frozen=True)
class Plan:
    mode: str = "qlora"
    max_length: int = 2048
    batch_size: int = 1
    gradient_checkpointing: bool = True
    lora_r: int = 64
    lora_targets: tuple | str = "all-linear"
    dtype_bytes: int = 2                 # bf16/fp16 compute on GPU
    optimizer_state_bytes: int = 8       # 32-bit AdamW; 2 for 8-bit AdamW
    paged_optimizer: bool = True         # bitsandbytes paged AdamW: states in CUDA unified memory, outside the allocator
    loss_chunk: int | None = 256         # tokens per chunk of the chunked loss; None = full logits


@dataclass
class Estimate:
    weights: float
    lora: float              # LoRA weights + grads (+ optimizer states unless paged)
    activations: float
    logits: float
    paged: float = 0.0       # paged optimizer states: GPU-resident while there is room, not in the allocator peak

    @property
    def total(self) -> float:
        return self.weights + self.lora + self.activations + self.logits

    def table(self) -> str:
        rows = [("base weights", self.weights), ("LoRA weights + grads", self.lora),
                ("activations", self.activations), ("logits / loss", self.logits), ("total (allocator peak)", self.total)]
        lines = [f"  {name:<26}{value / GIB:7.2f} GiB" for name, value in rows]
        if self.paged:
            lines.append(f"  {'+ paged optimizer states':<26}{self.paged / GIB:7.2f} GiB (unified memory, pages to "
                         "host RAM under pressure)")
        return "\n".join(lines)


def estimate(shape: Shape, plan: Plan = Plan()) -> Estimate:
    tokens = plan.max_length * plan.batch_size
    other = shape.embedding_params + shape.norm_params
    if plan.mode == "qlora":
        weights = shape.linear_params * NF4_BYTES + other * plan.dtype_bytes
    elif plan.mode == "lora":
        weights = (shape.linear_params + other) * plan.dtype_bytes
    else:
        weights = shape.params * (4 + 4 + plan.optimizer_state_bytes)
    lora_params = 0 if plan.mode == "full" else shape.lora_params(plan.lora_r, plan.lora_targets)
    paged = lora_params * plan.optimizer_state_bytes if plan.paged_optimizer else 0
    lora = lora_params * (4 + 4) + (0 if plan.paged_optimizer else lora_params * plan.optimizer_state_bytes)
    if plan.gradient_checkpointing:
        kept = shape.layers * tokens * shape.hidden * plan.dtype_bytes
        a, b = CHECKPOINTED_LAYER_PEAK
        activations = kept + tokens * (a * shape.hidden + b * shape.intermediate)
    else:
        a, b = ACT_PER_LAYER
        activations = shape.layers * tokens * (a * shape.hidden + b * shape.intermediate)
    logit_tokens = tokens if plan.loss_chunk is None else min(tokens, plan.loss_chunk)
    logits = logit_tokens * shape.vocab * (plan.dtype_bytes + 4 + 4)
    return Estimate(weights, lora, activations, logits, paged)


def rss_bytes() -> int:
    """Current resident memory of this process (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    import resource
    import sys
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024) / GIB


def load_shape(model_dir: str | os.PathLike) -> Shape:
    return Shape.from_config(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")))


def visible_gpu_bytes() -> int | None:
    import torch
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return total


CHANGES = [  # settings to try, cheapest in quality first
    ("mode: qlora", {"mode": "qlora"}),
    ("gradient_checkpointing: true", {"gradient_checkpointing": True}),
    ("batch_size: 1", {"batch_size": 1}),
    ("optim: paged_adamw_8bit", {"optimizer_state_bytes": 2}),
    ("max_length: 1024", {"max_length": 1024}),
    ("max_length: 512", {"max_length": 512}),
    ("lora_r: 16", {"lora_r": 16}),
]


def advise(shape: Shape, plan: Plan, budget: float | None, margin: float = 0.9) -> list[str]:
    """Lines saying whether `plan` fits `budget` bytes and, if not, which settings would."""
    need = estimate(shape, plan).total
    if budget is None:
        return [f"needs about {need / GIB:.1f} GiB of GPU memory (no GPU visible to check against)"]
    usable = budget * margin  # room for the CUDA context and allocator fragmentation
    if need <= usable:
        return [f"fits: about {need / GIB:.1f} GiB of {budget / GIB:.1f} GiB"]
    lines = [f"does NOT fit: about {need / GIB:.1f} GiB needed, {budget / GIB:.1f} GiB on this GPU"]
    useful = [(label, change) for label, change in CHANGES
              if any(getattr(plan, k) != v for k, v in change.items())]
    for label, change in useful:
        single = estimate(shape, replace(plan, **change)).total
        if single <= usable:
            lines.append(f"  would fit with {label} ({single / GIB:.1f} GiB)")
    if len(lines) == 1:  # no single change is enough: accumulate them in order
        combined, applied = plan, []
        for label, change in useful:
            combined, applied = replace(combined, **change), applied + [label]
            total = estimate(shape, combined).total
            if total <= usable:
                lines.append(f"  would fit with all of: {', '.join(applied)} ({total / GIB:.1f} GiB)")
                break
        else:
            lines.append("  no setting here makes it fit: use a smaller model or a larger GPU")
    return lines


def report(model_dir: str | os.PathLike, plan: Plan = Plan(), budget: float | None = None) -> str:
    shape = load_shape(model_dir)
    budget = visible_gpu_bytes() if budget is None else budget
    est = estimate(shape, plan)
    head = (f"memory plan for {Path(model_dir).name}: {shape.params / 1e9:.2f}B parameters, {plan.mode}, "
            f"max_length {plan.max_length} x batch {plan.batch_size}, gradient checkpointing "
            f"{'on' if plan.gradient_checkpointing else 'off'}, LoRA r{plan.lora_r}")
    return "\n".join([head, est.table(), *advise(shape, plan, budget)])


# GPUs learners meet: Colab's T4 and InternStudio's A100 slices (GiB a notebook can use).
COMMON_GPUS = (("T4 16GB", 15), ("A100 10% slice 8GB", 8), ("A100 30% slice 24GB", 24))


def advice_table(plan: Plan = Plan(), gpus=COMMON_GPUS) -> str:
    """One line per camp model (helpers.models.shapes) and common GPU: whether `plan` fits, and if not what would."""
    from helpers.models.shapes import INTERNLM2_SHAPES
    lines = []
    for name, config in INTERNLM2_SHAPES.items():
        for gpu, gib in gpus:
            lines.append(f"{name:<20} {gpu:<20} {advise(Shape.from_config(config), plan, gib * GIB)[0]}")
    return "\n".join(lines)
