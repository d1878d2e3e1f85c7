"""LoRA adapters as tensors: read a PEFT adapter folder, check it fits a base checkpoint, compute W + scale * B @ A.

Hand-written on purpose: peft's `merge_and_unload` needs the whole base model in memory (15 GB for a 7B in fp16, more
than Colab's 12.7 GB of RAM; xtuner#400/#715), while the update of one weight needs only that weight and its two
LoRA factors. helpers.merge.merging streams the base checkpoint shard by shard through `merged_weight`. The arithmetic is
PEFT's (`peft.tuners.lora.layer.Linear.get_delta_weight` + `merge`): delta = (B @ A) * scale (transposed when
fan_in_fan_out), computed in fp32, added to the fp32 base weight, then cast to the saved dtype.

PEFT's file layout: adapter_config.json + adapter_model.safetensors (or .bin), keys
`base_model.model.<module path>.lora_A.weight` / `.lora_B.weight`, A: [r, in_features], B: [out_features, r]; the
base weight `<module path>.weight` is [out, in] ([in, out] with fan_in_fan_out, GPT-2's Conv1D).
Features that change more than W by a low-rank product are refused with their name (DoRA, modules_to_save,
trained biases, embedding / conv LoRA, ...): merging them as plain LoRA would silently give another model.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from helpers.errors import TunebookError
from helpers.io import read_json

ADAPTER_CONFIG = "adapter_config.json"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>A|B)(?:\.[^.]+)?\.weight$")
# LoraConfig fields that, when set, mean the adapter is more than W + scale * B @ A on linear layers.
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora) rescales each weight column by a trained magnitude",
    "modules_to_save": "modules_to_save trains full copies of whole modules",
    "trainable_token_indices": "trainable_token_indices trains embedding rows",
    "target_parameters": "target_parameters applies LoRA to raw parameters (MoE experts)",
    "layer_replication": "layer_replication duplicates layers",
    "use_qalora": "QA-LoRA pools the input before A",
    "lora_bias": "lora_bias trains a bias on B",
}
# Shortened names XTuner/LLaMA-Factory users see for InternLM2's own modules (xtuner#518 is the reverse case).
INTERNLM2_MODULES = ("wqkv", "wo", "w1", "w2", "w3")


class AdapterMismatch(TunebookError):
    """The adapter does not fit this base model (names, shapes, recorded config hash)."""


class UnsupportedAdapter(TunebookError):
    """The adapter uses a PEFT feature that a LoRA merge would silently drop."""


@dataclass
class LoraWeight:
    module: str              # module path, e.g. model.layers.0.self_attn.q_proj
    A: object                # [r, in]
    B: object                # [out, r]
    scale: float             # lora_alpha / r (or / sqrt(r) with rsLoRA)
    fan_in_fan_out: bool = False

    @property
    def weight_key(self) -> str:
        return f"{self.module}.weight"

    @property
    def weight_shape(self) -> tuple[int, int]:
        shape = (self.B.shape[0], self.A.shape[1])
        return shape[::-1] if self.fan_in_fan_out else shape


@dataclass
class Adapter:
    path: Path
    config: dict
    weights: dict[str, LoraWeight] = field(default_factory=dict)   # base weight key -> LoRA factors

    @property
    def target_names(self) -> list[str]:
        return sorted({w.module.split(".")[-1] for w in self.weights.values()})

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for w in self.weights.values() for t in (w.A, w.B))


def read_adapter_config(path: str | Path) -> dict:
    return read_json(Path(path) / ADAPTER_CONFIG, "adapter config", "train again or copy the adapter folder again",
                     AdapterMismatch, missing=f"{path}: no {ADAPTER_CONFIG}; ADAPTER must be the PEFT adapter folder "
                     "(e.g. <output_dir>/adapter written by training)")


def check_supported(config: dict, path: str | Path) -> None:
    """Refuse adapter types and LoRA variants that are not a plain low-rank update of linear weights."""
    where = Path(path) / ADAPTER_CONFIG
    if config.get("peft_type", "LORA") != "LORA":
        raise UnsupportedAdapter(f"{where}: peft_type {config.get('peft_type')!r}; only LoRA adapters can be merged")
    problems = [why for key, why in _UNSUPPORTED.items() if config.get(key)]
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config['bias']!r} trains the base model's biases")
    if problems:
        raise UnsupportedAdapter(f"{where}: cannot merge this adapter as plain LoRA: " + "; ".join(problems) +
                                 ". Load it with PEFT instead (chat --adapter ADAPTER), or retrain without it")


def _load_adapter_tensors(path: Path) -> dict:
    safe, pickled = path / "adapter_model.safetensors", path / "adapter_model.bin"
    if safe.is_file():
        from safetensors.torch import load_file
        return load_file(str(safe), device="cpu")
    if pickled.is_file():
        import torch
        return torch.load(pickled, map_location="cpu", weights_only=True)
    raise AdapterMismatch(f"{path}: no adapter_model.safetensors or adapter_model.bin next to {ADAPTER_CONFIG}")


def _pattern_value(patterns: dict, module: str, default):
    from peft.utils.other import get_pattern_key  # PEFT's own matching of rank_pattern / alpha_pattern keys
    if not patterns:
        return default
    key = get_pattern_key(list(patterns), module)
    return patterns.get(key, default)


def read_adapter(path: str | Path) -> Adapter:
    """The adapter's LoRA factors keyed by the base weight they update, with PEFT's scale for each module."""
    path = Path(path)
    config = read_adapter_config(path)
    check_supported(config, path)
    tensors = _load_adapter_tensors(path)
    factors: dict[str, dict] = {}
    other = []
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            other.append(key)
            continue
        factors.setdefault(match["module"], {})[match["which"]] = tensor
    if other:
        raise UnsupportedAdapter(f"{path}: adapter holds tensors that are not LoRA A/B factors of linear layers "
                                 f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}): embedding/conv "
                                 "LoRA, DoRA magnitudes or trained biases cannot be merged as plain LoRA")
    adapter = Adapter(path, config)
    for module, pair in sorted(factors.items()):
        if set(pair) != {"A", "B"}:
            raise AdapterMismatch(f"{path}: module {module} has lora_{''.join(pair)} but not both factors "
                                  "(damaged adapter file?)")
        A, B = pair["A"], pair["B"]
        if A.dim() != 2 or B.dim() != 2:
            raise UnsupportedAdapter(f"{path}: {module}: LoRA factors of shape {tuple(A.shape)} / {tuple(B.shape)} "
                                     "are not those of a linear layer (conv LoRA is not supported)")
        r = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r"))
        alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha"))
        if r is None or alpha is None or A.shape[0] != r or B.shape[1] != r:
            raise AdapterMismatch(f"{path}: {module}: lora_A {tuple(A.shape)} / lora_B {tuple(B.shape)} do not have "
                                  f"rank r={r} from {ADAPTER_CONFIG} (config and weights do not belong together)")
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        weight = LoraWeight(module, A, B, scale, bool(config.get("fan_in_fan_out")))
        adapter.weights[weight.weight_key] = weight
    if not adapter.weights:
        raise AdapterMismatch(f"{path}: the adapter file holds no LoRA weights")
    return adapter


# ---- fitting the adapter to a base checkpoint ------------------------------------------------------------------

def check_fits(adapter: Adapter, shapes: dict[str, tuple], base: str | Path) -> None:
    """Names and shapes: every LoRA module must update a base weight whose [out, in] equals B's out and A's in."""
    missing = [key for key in adapter.weights if key not in shapes]
    if missing:
        wanted = sorted({key.rsplit(".", 2)[-2] for key in missing})
        present = sorted({k.rsplit(".", 2)[-2] for k in shapes if k.endswith(".weight") and ".layers." in k})
        hint = ""
        if set(wanted) & set(INTERNLM2_MODULES) and not set(present) & set(INTERNLM2_MODULES):
            hint = (" The adapter targets InternLM2's own module names (wqkv/wo/w1/w2/w3, e.g. trained by XTuner "
                    "with remote code) while this base is in the Llama layout (q_proj, k_proj, ...; tunebook loads "
                    "InternLM2 checkpoints converted to it). Module names must match (cf. xtuner#518); tunebook "
                    "merges adapters trained on the Llama layout only: retrain with tunebook, or merge with the "
                    "tool that trained it.")
        elif set(wanted) <= set(present) or not present:
            hint = " The adapter was trained on a model with other layer paths (a different architecture)."
        raise AdapterMismatch(f"adapter {adapter.path} does not fit base {base}: {len(missing)} of "
                              f"{len(adapter.weights)} LoRA modules have no weight in the base (e.g. {missing[0]}). "
                              f"Adapter targets: {', '.join(wanted)}; base linear layers: "
                              f"{', '.join(present) or '(none found)'}.{hint}")
    for key, weight in adapter.weights.items():
        base_shape = tuple(shapes[key])
        if base_shape != weight.weight_shape:
            raise AdapterMismatch(
                f"adapter {adapter.path} does not fit base {base}: {key} is {list(base_shape)} in the base, but "
                f"lora_B x lora_A of {weight.module} is {list(weight.weight_shape)} (B {list(weight.B.shape)}, "
                f"A {list(weight.A.shape)}). The adapter was trained on a model of another size; pass the base "
                "model it was trained on")


# ---- the arithmetic -------------------------------------------------------------------------------------------

def lora_delta(weight: LoraWeight, device="cpu"):
    """scale * B @ A in fp32 (transposed for fan_in_fan_out), in PEFT's order of operations."""
    import torch
    delta = weight.B.to(device, torch.float32) @ weight.A.to(device, torch.float32)
    if weight.fan_in_fan_out:
        delta = delta.T
    return delta * weight.scale


def merged_weight(base, weight: LoraWeight | None, dtype, device="cpu"):
    """(W + scale * B @ A) computed in fp32 on `device`, returned on CPU in `dtype`; W cast to `dtype` if no LoRA."""
    import torch
    if weight is None:
        return base.to(dtype) if base.is_floating_point() else base
    merged = (base.to(device, torch.float32) + lora_delta(weight, device)).to(dtype)
    if not torch.isfinite(merged).all():  # what PEFT's safe_merge checks; NaN adapters come from fp16 overflow
        raise UnsupportedAdapter(f"merging {weight.module} gives NaN/inf values in {str(dtype).replace('torch.', '')}: "
                                 "the adapter is broken (training diverged?) or too large for this dtype (try "
                                 "--dtype bf16 or fp32)")
    return merged.cpu()
