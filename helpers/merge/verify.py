"""Checks a merge must pass before its output is called complete (helpers.merge.merging runs them inside the temp folder).

1. Weights: every tensor of the written shards is re-read and compared with the base tensor (+ scale * B @ A for the
   LoRA targets) recomputed from the base checkpoint and the adapter file. Tolerance (WEIGHT_ULPS): bit-exact when
   the merge computed on the CPU (the same fp32 operations in the same order give the same bits, whatever the saved
   dtype); at most 1 ulp of the saved dtype when it computed on a GPU, whose GEMM kernels may accumulate in another
   order from call to call and so flip the last rounding step.
2. Logits: where both fit in memory, the merged folder loaded by transformers and the base + adapter loaded by PEFT
   (the model the adapter was trained to be, full precision, no quantization), both computing in the saved dtype,
   score a probe prompt rendered with the training template; the largest absolute logit difference must stay under
   LOGIT_RELATIVE_TOLERANCE[dtype] x max(1, largest |logit|). This check catches a merged folder that loads as
   another model (layout, config, names); the exactness of the merge itself is what check 1 proves: in bf16 the
   unmerged model's own rounding noise is larger than a small adapter's effect.
"""
from __future__ import annotations

import gc
from pathlib import Path

from helpers.errors import TunebookError

# Max |merged - base+adapter| logit difference as a share of the largest |logit|, by saved dtype, chosen from
# measurements (max diff / max |logit|): tiny persona model (2 layers, trained QLoRA adapter): fp32 5e-7, bf16 4.9e-3,
# fp16 6e-4; random model of internlm2-chat-1_8b's shape (24 layers, logits up to ~20, random r=64 adapter): fp32
# 4.7e-6, bf16 3.9e-2, fp16 5.4e-3. Each limit is 2-4x the worst measurement. In fp32 only summation order differs;
# in bf16/fp16 the unmerged model adds B@A in fp32 to a rounded W while the merged one rounds W + B@A, and 24
# layers of 8-bit (bf16) / 11-bit (fp16) arithmetic amplify that (on the 1.8B shape, PEFT in bf16 itself is 0.68
# away from the fp32 result at logits of ~20).
LOGIT_RELATIVE_TOLERANCE = {"float32": 2e-5, "bfloat16": 0.1, "float16": 0.02}
WEIGHT_ULPS = {"cpu": 0, "cuda": 1}


class MergeCheckFailed(TunebookError):
    """The merged weights or logits are not what base + adapter define: nothing is written."""
    exit_code = 1


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def ulp(values, dtype):
    """The spacing of `dtype` numbers just above |values| (as float32)."""
    import torch
    magnitude = values.abs().to(dtype)
    return (torch.nextafter(magnitude, torch.full_like(magnitude, float("inf"))) - magnitude).float()


def verify_weights(out_dir: Path, base_headers: list, adapter, dtype, device: str = "cpu") -> dict:
    """Re-read every written tensor and compare it with base (+ LoRA) recomputed; raises MergeCheckFailed."""
    import torch

    from helpers.models.checkpoint_shards import ShardReader, tensor_headers
    from helpers.merge.lora import merged_weight

    written = {name: file for name, file, _, _ in tensor_headers(out_dir)}  # found through the written index
    allowed_ulps = WEIGHT_ULPS["cpu" if device == "cpu" else "cuda"]
    reader, seen, merged, worst = ShardReader(), set(), 0, 0.0
    for name, base_file, _, _ in base_headers:
        if name not in written:
            raise MergeCheckFailed(f"merge check: {name} of the base is missing from the merged shards")
        got, base_tensor = reader.get(written[name], name), reader.get(base_file, name)
        lora = adapter.weights.get(name)
        expected = merged_weight(base_tensor, lora, dtype if base_tensor.is_floating_point() else base_tensor.dtype,
                                 device)
        if got.shape != expected.shape or got.dtype != expected.dtype:
            raise MergeCheckFailed(f"merge check: {name} was written as {got.dtype}{list(got.shape)}, expected "
                                   f"{expected.dtype}{list(expected.shape)}")
        if not torch.equal(got, expected):
            diff = (got.float() - expected.float()).abs()
            if allowed_ulps == 0 or not expected.is_floating_point() or \
                    bool((diff > allowed_ulps * ulp(expected.float(), dtype)).any()):
                raise MergeCheckFailed(f"merge check: {name} differs from base{' + LoRA' if lora else ''} by up "
                                       f"to {diff.max().item():.3g} (allowed: {allowed_ulps} ulp of "
                                       f"{dtype_name(dtype)}); the written shard is wrong")
            worst = max(worst, diff.max().item())
        seen.add(name)
        merged += lora is not None
    extra = sorted(set(written) - seen)
    if extra:
        raise MergeCheckFailed(f"merge check: the merged shards hold tensors the base does not: {extra[:3]}")
    missing = sorted(set(adapter.weights) - seen)
    if missing:
        raise MergeCheckFailed(f"merge check: LoRA modules not merged: {missing[:3]}")
    return {"tensors": len(seen), "lora_merged": merged, "max_abs_diff": worst, "allowed_ulps": allowed_ulps}


# ---- logits -----------------------------------------------------------------------------------------------------

def available_memory(device: str) -> int:
    """Free bytes where the check would load its models: free GPU memory, or the OS's MemAvailable."""
    if device != "cpu":
        import torch
        return torch.cuda.mem_get_info()[0]
    try:
        import psutil
        return psutil.virtual_memory().available
    except ImportError:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return 0


def model_bytes(model_dir: Path) -> int:
    from helpers.models.checkpoint_shards import weight_files
    return sum(f.stat().st_size for f in weight_files(model_dir))


def logits_check_fits(out_dir: Path, adapter_bytes: int, device: str) -> tuple[bool, str]:
    """The two models are loaded one after the other; measured peak RSS on the 1.8B shape, as a multiple of the merged
    weights' size: 1.1x (bf16 base saved in bf16), 1.5x (in fp32), 2.1x (in fp16: the base is converted while it
    loads), so 2.2x + the adapter + 512 MB."""
    need = int(model_bytes(out_dir) * 2.2) + adapter_bytes + 512 * 2**20
    free = available_memory(device)
    where = "GPU memory" if device != "cpu" else "RAM"
    return need <= free, f"needs ~{need / 2**30:.1f} GiB of {where}, {free / 2**30:.1f} GiB available"


def _probe_logits(model, ids, device):
    import torch
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu()


def verify_logits(out_dir: Path, base_dir: Path, adapter_dir: Path, prompt_ids: list[int], dtype,
                  device: str = "cpu") -> dict:
    """Max |logits(merged) - logits(base + adapter via PEFT)| on the probe prompt; raises over the tolerance."""
    import warnings

    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    device_map = {"": device if device == "cpu" else 0}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers property
            reference = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype, device_map=device_map)
            reference = PeftModel.from_pretrained(reference, str(adapter_dir)).eval()
        expected = _probe_logits(reference, prompt_ids, device)
        del reference
        gc.collect()
        merged = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=dtype, device_map=device_map).eval()
        got = _probe_logits(merged, prompt_ids, device)
        del merged
        gc.collect()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    difference = (got - expected).abs().max().item()
    scale = expected.abs().max().item()
    tolerance = LOGIT_RELATIVE_TOLERANCE[dtype_name(dtype)] * max(1.0, scale)
    report = {"max_abs_diff": difference, "tolerance": tolerance, "probe_tokens": len(prompt_ids),
              "logit_scale": scale, "relative_tolerance": LOGIT_RELATIVE_TOLERANCE[dtype_name(dtype)],
              "device": device}
    if not difference <= tolerance:  # also catches NaN
        raise MergeCheckFailed(f"merge check: logits of the merged model differ from base + adapter by {difference:.3g} "
                               f"on the probe prompt (tolerance for {dtype_name(dtype)}: {tolerance:.3g}); the merge is "
                               "wrong, nothing was written")
    return report
