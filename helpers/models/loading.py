"""Load a model for qlora / lora / full training or for inference, and attach LoRA (finding it: helpers.models.find).
"""
from __future__ import annotations

import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from helpers.errors import TunebookError
from helpers.encode.chat_format import ChatFormat
from helpers.models.find import resolve_model, resolve_template

MODES = ("qlora", "lora", "full")

# transformers 5 deprecates `is_gradient_checkpointing` and warns each time its own Trainer and PEFT ask it (training,
# and PeftModel.from_pretrained in chat / demo / evaluate): a pink box in every notebook and a line in every chat that
# nobody but those libraries can act on. Every path that builds a model imports this module.
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)

# ---------------------------------------------------------------- dtypes and devices

def device_kind() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_dtype(dtype: str = "auto"):
    """bf16 where the GPU supports it, fp16 on older GPUs (T4, V100), fp32 on CPU."""
    import torch
    named = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype != "auto":
        if dtype not in named:
            raise TunebookError(f"unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32")
        return named[dtype]
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def require_bitsandbytes() -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TunebookError("mode 'qlora' needs bitsandbytes: pip install bitsandbytes "
                            "(or choose mode 'lora' to train a 16/32-bit base)")


def remote_code_files(path: Path) -> list[str]:
    return sorted(p.name for p in Path(path).glob("*.py"))


def warn_remote_code(path: Path) -> None:
    files = remote_code_files(path)
    print(f"WARNING: trust_remote_code=True runs Python code shipped with the model in {path}: "
          f"{', '.join(files) or '(no .py files found)'}. Only do this for checkpoints you trust.")


_NOTED_CODE: set[str] = set()   # folders whose ignored code was mentioned (once per process)


def prepare_checkpoint(path: Path, trust_remote_code: bool = False) -> Path:
    """InternLM2 checkpoints become native Llama ones (converted once, cached) unless remote code is asked for.

    Without trust_remote_code, Python files shipped in the folder are never run: that is said once, and a model
    type transformers does not know is refused by name (it would need exactly that code)."""
    from helpers.io import read_json
    config = read_json(path / "config.json", "model config", "download the model again")
    is_internlm2 = config.get("model_type") == "internlm2" or "InternLM2ForCausalLM" in config.get("architectures", [])
    if trust_remote_code:
        warn_remote_code(path)
        return path
    if is_internlm2:
        from helpers.models.internlm2.convert import ensure_llama_layout
        return Path(ensure_llama_layout(path))
    _check_known_model_type(path, config)
    code = remote_code_files(path)
    if code and str(path) not in _NOTED_CODE:
        _NOTED_CODE.add(str(path))
        print(f"note: {path} ships Python code ({', '.join(code)}); it is not run (trust_remote_code is off): "
              "transformers' own implementation of this architecture loads the weights")
    return path


def _check_known_model_type(path: Path, config: dict) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        code = ", ".join(remote_code_files(path)) or "no .py files"
        raise TunebookError(f"{path}/config.json: model_type {model_type!r} is not an architecture transformers knows"
                            f"{' (its auto_map points at code shipped with it: ' + code + ')' if config.get('auto_map') else ''}"
                            "; upgrade transformers, or set trust_remote_code: true only if you trust that code")


# ---------------------------------------------------------------- loading

def quantization_config(bits: int | None, compute):
    """The one quantised-loading recipe: 4 = QLoRA's NF4 with double quantisation computing in `compute`,
    8 = LLM.int8, None = not quantised."""
    if bits is None:
        return None
    if bits not in (4, 8):
        raise TunebookError(f"bits must be 4, 8 or unset, got {bits}")
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def from_pretrained(path: Path, *, dtype, bits: int | None = None, device_map=None, trust_remote_code: bool = False,
                    **kwargs):
    """AutoModelForCausalLM for an already prepared folder (prepare_checkpoint) and a torch dtype: the one place
    that picks the device map (GPU 0, else CPU), the quantisation and keeps bitsandbytes' offline warning quiet."""
    import torch
    from transformers import AutoModelForCausalLM
    quiet_bitsandbytes_kernel_warning()
    config = quantization_config(bits, dtype)
    if config is not None:
        kwargs["quantization_config"] = config
    if device_map is None:
        device_map = {"": 0} if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, device_map=device_map,
                                                trust_remote_code=trust_remote_code, **kwargs)


def load_model(path: str | os.PathLike, mode: str = "qlora", dtype: str = "auto", device_map=None,
               trust_remote_code: bool = False, attn_implementation: str | None = "sdpa",
               gradient_checkpointing: bool | None = None):
    """Load a model folder for training in one of MODES (InternLM2 converted, dtype resolved here)."""
    return load_prepared_model(prepare_checkpoint(Path(path), trust_remote_code), mode, compute_dtype(dtype),
                               device_map, trust_remote_code, attn_implementation, gradient_checkpointing)


def load_prepared_model(path: Path, mode: str, compute, device_map=None, trust_remote_code: bool = False,
                        attn_implementation: str | None = "sdpa", gradient_checkpointing: bool | None = None):
    """load_model for a folder prepare_checkpoint returned and a resolved compute dtype (the engine did both)."""
    import torch
    if mode not in MODES:
        raise TunebookError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    # qlora: NF4 base computing in `compute`; lora: frozen base in the compute dtype; full: fp32 master weights
    # (mixed precision via the Trainer)
    model = from_pretrained(path, dtype=torch.float32 if mode == "full" else compute, bits=4 if mode == "qlora" else None,
                            device_map=device_map, trust_remote_code=trust_remote_code,
                            attn_implementation=attn_implementation)
    if gradient_checkpointing is None:
        gradient_checkpointing = mode == "qlora"
    model.config.use_cache = False  # training: no KV cache (it would also break packed-sample isolation)
    if mode == "qlora":
        keep_4bit_trainable(model)
    # Not peft.prepare_model_for_kbit_training: it casts every non-quantized weight to fp32, the 92k-vocabulary
    # embedding and head included (+1.5 GB on a 7B model), for no benefit to LoRA on a frozen base (autocast
    # computes in the compute dtype; LoRA weights are created in fp32 by peft anyway).
    for param in model.parameters():
        param.requires_grad = mode == "full"
    if gradient_checkpointing:
        # Non-reentrant (the reentrant variant raises "Expected to mark a variable ready only once" under DDP
        # with LoRA); inputs need grads so that
        # checkpointed segments behind the frozen embedding still backpropagate into the LoRA weights.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name; the old one warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.enable_input_require_grads()
    return model


def keep_4bit_trainable(model) -> int:
    """Keep bitsandbytes' trainable NF4 layout on CPU; returns how many layers were switched back.

    bitsandbytes 0.50 on CPUs with AVX512-BF16 repacks NF4 weights into an inference-only layout on the first
    eval-mode forward (e.g. a chat sample before training). Afterwards every forward takes gemv_4bit, which
    has no autograd kernel, so gradients through the frozen layers are silently dropped (PyTorch only warns).
    Models we train must never take that path: switch the repacking off and undo it where it happened.
    """
    try:
        from bitsandbytes.nn import Linear4bit
        from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse
    except ImportError:
        return 0
    restored = 0
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
            state = getattr(module.weight, "quant_state", None)
            if state is not None and getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, state)
                restored += 1
    return restored


def quiet_bitsandbytes_kernel_warning() -> None:
    """bitsandbytes tries to fetch an optional CPU kernel from the hub at import and logs a scary warning when
    it cannot (always, offline); the fallback it uses is correct, so keep that line out of learners' output."""
    import logging
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


@dataclass(frozen=True)
class LoraSettings:
    r: int = 64                          # camp configs; higher rank = more capacity, more memory
    alpha: int = 16                      # camp configs; the update is scaled by alpha / r
    dropout: float = 0.1                 # camp configs
    target_modules: tuple[str, ...] | str = "all-linear"  # every linear layer except the output head (XTuner)
    bias: str = "none"
    top_layers: int = 0                  # 0 = every decoder layer; N = only the N nearest the output


def decoder_layer_count(model) -> int:
    return int(model.config.num_hidden_layers)


def apply_lora(model, settings: LoraSettings = LoraSettings()):
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules
    layers = None
    if settings.top_layers:
        total = decoder_layer_count(model)
        if settings.top_layers > total:
            raise TunebookError(f"lora_top_layers: {settings.top_layers} is more than the model's {total} layers; "
                                f"use at most {total} (or 0 for every layer)")
        layers = list(range(total - settings.top_layers, total))
        if targets == "all-linear":  # peft applies layers_to_transform only to named targets
            targets = tuple(linear_module_names(model))
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias=settings.bias,
                        task_type="CAUSAL_LM", target_modules=targets if isinstance(targets, str) else list(targets),
                        layers_to_transform=layers)
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # e.g. target modules not found (an InternLM1 config on InternLM2, xtuner#518)
        raise TunebookError(f"LoRA target modules {targets} do not fit this model: {err}") from None


def linear_module_names(model) -> list[str]:
    """Short names of the linear layers inside the decoder layers (what "all-linear" means: never the head)."""
    import torch
    names = {name.split(".")[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")}
    head = {name.split(".")[-1] for name, module in model.named_modules() if module is model.get_output_embeddings()}
    return sorted(names - head)


def lora_targets(peft_model) -> list[str]:
    """The module names LoRA was attached to (after 'all-linear' expansion)."""
    config = peft_model.peft_config["default"]
    if isinstance(config.target_modules, str):
        return [config.target_modules]
    return sorted({name.split(".")[-1] for name in config.target_modules})  # peft may expand to full paths


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def config_hash(model_dir: str | os.PathLike) -> str:
    """Hash of the architecture-defining config (what an adapter must match), independent of the path."""
    return hash_config(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")))


def hash_config(config: dict) -> str:
    """config_hash of a config.json's contents."""
    import hashlib
    keys = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "vocab_size", "head_dim", "tie_word_embeddings")
    canonical = json.dumps({k: config.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    path: Path                     # where it was found
    loaded_path: Path              # what was loaded (the converted copy for InternLM2)
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- inference

@dataclass
class InferenceModel:
    model: object
    tokenizer: object
    template: ChatFormat          # what the model was trained with (tunebook.json), else the caller's choice
    system: str
    base_path: Path
    adapter_path: Path | None = None
    record: dict = field(default_factory=dict)


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_for_inference(model: str | os.PathLike, adapter: str | os.PathLike | None = None, bits: int | None = None,
                       dtype: str = "auto", template: str | None = None, system: str | None = None,
                       trust_remote_code: bool = False, device_map=None) -> InferenceModel:
    """A merged/base model folder, or base + adapter (or an adapter folder alone: its base comes from tunebook.json).

    Template and system prompt default to the training record, so chat and evaluation format prompts exactly as
    training did. bits=4 loads the base in NF4, bits=8 in LLM.int8, None in `dtype`.
    """
    from helpers.encode.encoding import load_tokenizer
    from helpers.models.record import read_record, trained_format

    if adapter is None and is_adapter_dir(model):
        model, adapter = None, model
    record = read_record(adapter) if adapter is not None else read_record(model) if model is not None else None
    record = record or {}
    if model is None:
        if not record.get("base_model"):
            raise TunebookError(f"{adapter} has no tunebook.json naming its base model: pass the base model too")
        model = record["base_model"]["path"]
    base_path = resolve_model(model)
    loaded = prepare_checkpoint(base_path, trust_remote_code)
    if adapter is not None and record.get("base_model", {}).get("config_hash") not in (None, config_hash(loaded)):
        raise TunebookError(f"adapter {adapter} was trained on a different base model ({record['base_model']['name']}, "
                            f"config hash {record['base_model']['config_hash']}) than {base_path} "
                            f"(config hash {config_hash(loaded)}); pass the base it was trained on")
    net = from_pretrained(loaded, dtype=compute_dtype(dtype), bits=bits, device_map=device_map,
                          trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(adapter if adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file()
                               else loaded, trust_remote_code=trust_remote_code)
    if adapter is not None:
        from peft import PeftModel
        net = PeftModel.from_pretrained(net, str(adapter))
    net.eval()
    trained, trained_system = trained_format(record)
    chosen = resolve_template(template, loaded) if template or trained is None else trained
    return InferenceModel(net, tokenizer, chosen, trained_system if system is None else system, base_path,
                          Path(adapter) if adapter is not None else None, record)
