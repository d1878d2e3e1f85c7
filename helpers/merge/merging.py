"""Merge a LoRA/QLoRA adapter into its base model: the successor of `xtuner convert merge LLM ADAPTER SAVE_DIR`.

    python -m helpers merge BASE ADAPTER OUT [--max-shard-size 2GB] [--device auto] [--dtype auto]

A QLoRA adapter is merged into the FULL-PRECISION base (its native dtype from config.json: bf16 stays bf16, on CPU
too; fp16/fp32 only when asked), never into a 4-bit one: the 4-bit weights only approximate the base, and a model
saved in NF4 would lose precision for every later use. LLaMA-Factory and XTuner merge the same way (XTuner always in
fp16, which rounds bf16 models such as InternLM2.5 down; here the base's own dtype is kept).

How (helpers.merge.lora has the arithmetic and why it is hand-written rather than peft's merge_and_unload): the
adapter is checked against the base's tensor names, shapes and recorded config hash before anything is written;
then the base is read shard by shard, tensor by tensor, W + scale * B @ A is computed in fp32 on `device` for the
LoRA targets, and each result is written straight into output shards of at most max_shard_size planned in advance
(helpers.models.checkpoint_shards.write_safetensors), so peak RAM stays near the adapter plus a few tensors, whatever the
shard size: 1.47 GiB measured for a model of internlm2-chat-1_8b's shape (python -m helpers bench merge); a 7B
merge fits Colab's 12.7 GB. The output also gets the tokenizer with the training template as chat_template,
a generation_config.json that stops at the template's stop tokens (e.g. <|im_end|>) in any tool, and tunebook.json
("merged_from": base, adapter, template, system prompt, dtype, check results). It is written into a temporary folder
renamed to OUT only after helpers.merge.verify's checks pass: an interrupted merge leaves no OUT.

InternLM2 bases are merged in the Llama layout they are trained in (helpers.models.internlm2.convert, cached conversion);
`internlm2_out` / --internlm2 DIR also writes the InternLM2 layout for LMDeploy or the course's streamlit demo.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.models.checkpoint_shards import SAFE_INDEX, SAFE_SINGLE
from helpers.errors import TunebookError
from helpers.train.memory_plan import peak_rss_gib

DEFAULT_PROBE = "请介绍一下你自己"
DTYPES = ("auto", "bf16", "fp16", "fp32")


@dataclass
class MergeResult:
    out_dir: Path
    dtype: str
    shards: int
    tensors: int
    lora_modules: int
    weight_check: dict = field(default_factory=dict)
    logits_check: dict = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_merge_gib: float = 0.0      # streaming merge + weight check (what the merge itself needs)
    peak_rss_gib: float = 0.0            # whole call, logits check included (it loads whole models)
    internlm2_dir: Path | None = None


def resolve_device(device: str) -> str:
    import torch
    if device not in ("auto", "cpu", "cuda"):
        raise TunebookError(f"--device {device!r}: use cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise TunebookError("--device cuda: no CUDA GPU is visible to torch; use --device cpu (slower, same result)")
    return "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)


def saved_dtype(config: dict, headers: list, requested: str = "auto"):
    """The dtype the merged model is saved in: the base's own (config.json, else its weights) unless asked."""
    import torch
    from helpers.models.loading import compute_dtype
    if requested != "auto":
        if requested not in DTYPES:
            raise TunebookError(f"--dtype {requested!r}: use one of {', '.join(DTYPES)}")
        return compute_dtype(requested)
    named = config.get("dtype") or config.get("torch_dtype")
    if isinstance(named, str) and named.replace("torch.", "") in ("float32", "bfloat16", "float16"):
        return getattr(torch, named.replace("torch.", ""))
    floats = [dtype for _, _, _, dtype in headers if dtype.is_floating_point]
    return floats[0] if floats and floats[0] in (torch.float32, torch.bfloat16, torch.float16) else torch.float32


def plan_shards(headers: list, dtype, max_bytes: int) -> list[list[str]]:
    """Tensor names per output shard, in checkpoint order; a shard is closed before it would exceed max_bytes
    (transformers' rule: one tensor bigger than the limit gets a shard of its own)."""
    shards, size = [[]], 0
    for name, _, shape, tensor_dtype in headers:
        itemsize = dtype.itemsize if tensor_dtype.is_floating_point else tensor_dtype.itemsize
        nbytes = itemsize * math.prod(shape)
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def shard_names(count: int) -> list[str]:
    """transformers' file names: model.safetensors, or model-00001-of-0000N.safetensors + an index."""
    return [SAFE_SINGLE] if count == 1 else [f"model-{n:05d}-of-{count:05d}.safetensors" for n in range(1, count + 1)]


def write_merged_shards(headers: list, plan: list[list[str]], adapter, dtype, device: str, out: Path,
                        progress) -> None:
    """Write the planned output shards tensor by tensor: read one base tensor, add its LoRA update, write it."""
    from helpers.models.checkpoint_shards import ShardReader, write_safetensors
    from helpers.merge.lora import merged_weight

    where = {name: (file, shape, tensor_dtype) for name, file, shape, tensor_dtype in headers}
    reader, weight_map, total = ShardReader(), {}, 0
    for names, file_name in zip(plan, shard_names(len(plan))):
        progress(f"writing {file_name} ({len(names)} tensors)")
        specs = [(n, where[n][1], dtype if where[n][2].is_floating_point else where[n][2]) for n in names]
        produced = ((n, merged_weight(reader.get(where[n][0], n), adapter.weights.get(n), dtype, device))
                    for n in names)
        total += write_safetensors(out / file_name, specs, produced, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file_name))
    if len(plan) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _template_and_system(adapter_dir: Path, record: dict, template: str | None, system: str | None, progress):
    """Training record first; XTuner's copied config (pth_to_hf writes xtuner_config.py) for its template; else ask.

    Returns (ChatFormat, system prompt, where the template came from)."""
    from helpers.encode.chat_format import chat_format
    from helpers.models.record import trained_format
    trained, trained_system = trained_format(record)
    source = "training record"
    if trained is None and (adapter_dir / "xtuner_config.py").is_file():
        from helpers.train.config import load_xtuner
        trained, source = chat_format(load_xtuner(adapter_dir / "xtuner_config.py").template), "xtuner_config.py"
    if template and trained and template != trained.name:
        progress(f"warning: --template {template} differs from the {trained} this adapter was trained with")
    if template is None and trained is None:
        raise TunebookError(f"{adapter_dir} has no training record (tunebook.json) naming its prompt template; pass "
                            "--template NAME (e.g. internlm2_chat) so the merged model formats chats as trained")
    chosen = chat_format(template) if template else trained
    return chosen, (trained_system if system is None else system), source if not template else "argument"


def _write_generation_config(base_dir: Path, out: Path, base_config: dict, stop_ids: list[int]) -> list[int]:
    path = base_dir / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {
        k: base_config[k] for k in ("bos_token_id", "pad_token_id") if base_config.get(k) is not None}
    eos = config.get("eos_token_id", base_config.get("eos_token_id"))
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    config["eos_token_id"] = [i for i in dict.fromkeys(eos + stop_ids) if i is not None]
    (out / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config["eos_token_id"]


def _merged_bytes(headers: list, dtype) -> int:
    """What the merged shards take on disk (every tensor in the merged dtype), plus 5% for the rest."""
    import math
    itemsize = dtype.itemsize if hasattr(dtype, "itemsize") else 4
    return int(sum(math.prod(shape) for _, _, shape, _ in headers) * itemsize * 1.05)


@dataclass
class _MergeInputs:
    """Everything merge() checked before any heavy work."""
    base_path: Path
    loaded: Path              # the folder training loaded (the cached Llama layout for InternLM2)
    base_config: dict
    headers: list
    lora: object              # helpers.merge.lora.Adapter
    record: dict
    template: object          # helpers.encode.chat_format.ChatFormat
    system: str
    template_source: str
    target_dtype: object
    tokenizer: object

    @property
    def trust_remote_code(self) -> bool:
        """Whether the adapter was trained on the base's own code (its training record says so)."""
        return bool((self.record.get("settings") or {}).get("trust_remote_code"))


def merge(base: str | Path, adapter: str | Path, out: str | Path, max_shard_size: str | int = "2GB",
          device: str = "auto", dtype: str = "auto", template: str | None = None, system: str | None = None,
          internlm2_out: str | Path | None = None, check_logits: bool | None = None, probe: str = DEFAULT_PROBE,
          overwrite: bool = False, progress=print) -> MergeResult:
    """Merge `adapter` into `base`, write OUT atomically, verify, return what was done.

    check_logits: None = when the model fits in memory (decided from its size and free RAM / GPU memory).
    progress: where the step messages go (None: nowhere)."""
    from transformers.utils.hub import convert_file_size_to_int

    from helpers.io import atomic_dir, check_writable
    from helpers.merge.verify import dtype_name, verify_weights
    from helpers.models.internlm2.convert import export_internlm2

    progress = progress or (lambda *_: None)
    started = time.time()
    adapter_dir, out = Path(adapter), Path(out)
    if out.exists() and not overwrite:
        raise TunebookError(f"{out} already exists; choose another output folder or pass --overwrite")
    device = resolve_device(device)
    max_bytes = convert_file_size_to_int(max_shard_size)
    inputs = _checked_inputs(base, adapter_dir, template, system, dtype, internlm2_out, progress)
    lora, target_dtype = inputs.lora, inputs.target_dtype
    plan = plan_shards(inputs.headers, target_dtype, max_bytes)
    progress(f"merging {len(lora.weights)} LoRA modules ({', '.join(lora.target_names)}) into {inputs.base_path} "
             f"({dtype_name(target_dtype)}, {len(plan)} shard(s) of <= {max_shard_size}, computing on {device}); "
             f"template {inputs.template} ({inputs.template_source}), system prompt {inputs.system!r}")

    check_writable(out.parent, "OUT", _merged_bytes(inputs.headers, target_dtype))
    with atomic_dir(out, overwrite=overwrite, note=progress) as tmp:
        write_merged_shards(inputs.headers, plan, lora, target_dtype, device, tmp, progress)
        eos = _write_config_and_tokenizer(inputs, tmp)
        progress("checking every written tensor against base + adapter ...")
        weight_check = verify_weights(tmp, inputs.headers, lora, target_dtype, device)
        merge_peak = peak_rss_gib()
        logits_check = _logits_check(inputs, tmp, adapter_dir, device, check_logits, probe, progress)
        _write_merge_record(inputs, tmp, base, adapter_dir, eos, weight_check, logits_check)   # written last
    internlm2_dir = None
    if internlm2_out is not None:
        internlm2_dir = export_internlm2(out, internlm2_out, original_dir=inputs.base_path, overwrite=overwrite,
                                         progress=progress)
    return MergeResult(out, dtype_name(target_dtype), len(plan), weight_check["tensors"], len(lora.weights),
                       weight_check, logits_check, round(time.time() - started, 2), round(merge_peak, 3),
                       round(peak_rss_gib(), 3), internlm2_dir)


def _checked_inputs(base, adapter_dir: Path, template, system, dtype: str, internlm2_out, progress) -> _MergeInputs:
    """Everything that can refuse, before any heavy work (an InternLM2 base is converted only after these)."""
    from helpers.encode.encoding import load_tokenizer
    from helpers.merge.lora import AdapterMismatch, check_fits, read_adapter
    from helpers.models.checkpoint_shards import tensor_headers
    from helpers.models.find import resolve_model
    from helpers.models.internlm2.convert import is_internlm2_checkpoint, llama_config_from_internlm2
    from helpers.models.loading import hash_config, prepare_checkpoint
    from helpers.models.record import read_record

    base_path = resolve_model(base)
    is_internlm2 = is_internlm2_checkpoint(base_path)
    if internlm2_out is not None and not is_internlm2:
        raise TunebookError(f"--internlm2 writes the InternLM2 layout, but {base_path} is not an InternLM2 checkpoint")
    base_config = json.loads((base_path / "config.json").read_text(encoding="utf-8"))
    if base_config.get("quantization_config"):
        raise TunebookError(f"{base_path} is a quantized checkpoint ({base_config['quantization_config'].get('quant_method')}); "
                            "merge into the full-precision base model (QLoRA adapters are merged that way too)")
    lora = read_adapter(adapter_dir)
    record = read_record(adapter_dir) or {}
    template, system, template_source = _template_and_system(adapter_dir, record, template, system, progress)
    layout_config = llama_config_from_internlm2(base_config, str(base_path)).to_dict() if is_internlm2 else base_config
    recorded_hash = record.get("base_model", {}).get("config_hash")
    if recorded_hash is not None and recorded_hash != hash_config(layout_config):
        raise AdapterMismatch(f"adapter {adapter_dir} was trained on {record['base_model'].get('name')} (config hash "
                              f"{recorded_hash}); {base_path} has another architecture (config hash "
                              f"{hash_config(layout_config)}). Pass the base model it was trained on")
    loaded = prepare_checkpoint(base_path)  # the cached Llama-layout conversion for InternLM2 (what training loads)
    base_config = json.loads((loaded / "config.json").read_text(encoding="utf-8"))
    headers = tensor_headers(loaded)
    check_fits(lora, {name: shape for name, _, shape, _ in headers}, base_path)
    tokenizer = load_tokenizer(adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else loaded)
    template.apply_to(tokenizer)
    return _MergeInputs(base_path, loaded, base_config, headers, lora, record, template, system, template_source,
                        saved_dtype(base_config, headers, dtype), tokenizer)


def _write_config_and_tokenizer(inputs: _MergeInputs, tmp: Path) -> list[int]:
    """config.json in the merged dtype, the base's code only if training ran it, the tokenizer, generation_config."""
    from helpers.merge.verify import dtype_name
    from helpers.models.generation import stop_token_ids
    config = dict(inputs.base_config)
    for key in ("dtype", "torch_dtype"):
        if key in config or key == "dtype":
            config[key] = dtype_name(inputs.target_dtype)
    if config.get("auto_map") and inputs.trust_remote_code:  # trained with the base's own code: keep it
        for code in inputs.loaded.glob("*.py"):
            shutil.copyfile(code, tmp / code.name)
    else:
        # trained with transformers' implementation: a later trust_remote_code=True load of the merged folder
        # must not run code nobody asked for
        config.pop("auto_map", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    inputs.tokenizer.save_pretrained(tmp)
    return _write_generation_config(inputs.loaded, tmp, inputs.base_config,
                                    stop_token_ids(inputs.template, inputs.tokenizer))


def _logits_check(inputs: _MergeInputs, tmp: Path, adapter_dir: Path, device: str, check_logits, probe: str,
                  progress) -> dict:
    from helpers.merge.verify import logits_check_fits, verify_logits
    from helpers.models.generation import prompt_ids
    fits, why = logits_check_fits(tmp, inputs.lora.nbytes, device)
    if check_logits is False or (check_logits is None and not fits):
        skipped = {"skipped": "not asked" if check_logits is False else f"model too large here: {why}"}
        progress(f"logits check skipped ({skipped['skipped']})")
        return skipped
    progress("comparing merged logits with base + adapter (PEFT) on the probe prompt ...")
    ids = prompt_ids(inputs.tokenizer, inputs.template, [], probe, inputs.system)
    return {**verify_logits(tmp, inputs.loaded, adapter_dir, ids, inputs.target_dtype, device), "probe": probe}


def _write_merge_record(inputs: _MergeInputs, tmp: Path, base, adapter_dir: Path, eos, weight_check: dict,
                        logits_check: dict) -> None:
    """tunebook.json of the merged folder: the adapter's record plus where the merge came from and its checks."""
    from helpers.merge.verify import dtype_name
    from helpers.models.loading import config_hash
    from helpers.models.record import write_record
    lora, template = inputs.lora, inputs.template.record()
    merged_from = {
        "base": {"name": str(base), "path": str(inputs.base_path), "loaded_path": str(inputs.loaded),
                 "config_hash": config_hash(inputs.loaded)},
        "adapter": {"path": str(adapter_dir.resolve()), "r": lora.config.get("r"),
                    "lora_alpha": lora.config.get("lora_alpha"), "use_rslora": bool(lora.config.get("use_rslora")),
                    "target_modules": lora.target_names, "modules": len(lora.weights)},
        "template": template, "system": inputs.system, "dtype": dtype_name(inputs.target_dtype),
        "eos_token_id": eos, "weight_check": weight_check, "logits_check": logits_check,
    }
    write_record(tmp, {**inputs.record, "template": template, "system": inputs.system, "merged_from": merged_from})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers merge",
                                     description="Merge a (Q)LoRA adapter into its full-precision base model.")
    parser.add_argument("base", help="base model folder or name (the one the adapter was trained on)")
    parser.add_argument("adapter", help="adapter folder (<output_dir>/adapter from training, or any PEFT LoRA)")
    parser.add_argument("out", help="output folder (written atomically; must not exist unless --overwrite)")
    parser.add_argument("--max-shard-size", default="2GB", help="largest output shard (default 2GB)")
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"],
                        help="where B @ A and the logits check run (cpu works where GPU memory is short)")
    parser.add_argument("--dtype", default="auto", choices=list(DTYPES),
                        help="saved dtype; auto = the base's own (bf16 stays bf16)")
    parser.add_argument("--template", help="prompt template (default: the one in the adapter's training record)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--system", help="system prompt (default: the training record's)")
    group.add_argument("--system-template", help="system prompt by SYSTEM_TEMPLATE name, e.g. colorist")
    parser.add_argument("--internlm2", metavar="DIR", help="also write an InternLM2-layout copy (LMDeploy, streamlit)")
    parser.add_argument("--no-logits-check", action="store_true", help="skip the merged-vs-adapter logits check")
    parser.add_argument("--probe", default=DEFAULT_PROBE, help="question for the logits check")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    from helpers.encode.templates import resolve_system
    system = resolve_system(args.system, args.system_template) if (args.system or args.system_template) else None
    result = merge(args.base, args.adapter, args.out, args.max_shard_size, args.device, args.dtype, args.template,
                   system, args.internlm2, False if args.no_logits_check else None, args.probe, args.overwrite)
    logits = result.logits_check
    print(f"merged model written to {result.out_dir} ({result.dtype}, {result.shards} shard(s), {result.tensors} "
          f"tensors, {result.lora_modules} LoRA modules) in {result.seconds:.1f}s; peak RSS "
          f"{result.peak_rss_merge_gib:.2f} GiB for merge + weight check, {result.peak_rss_gib:.2f} GiB in all")
    print("weights check: every tensor equals base + scale*B@A (max diff "
          f"{result.weight_check['max_abs_diff']:.3g}); logits check: " +
          (f"max |diff| {logits['max_abs_diff']:.3g} <= {logits['tolerance']:.3g} (logits up to "
           f"{logits['logit_scale']:.3g})" if "max_abs_diff" in logits
           else logits["skipped"]))
    if result.internlm2_dir:
        print(f"InternLM2-layout copy written to {result.internlm2_dir}")
    return 0
