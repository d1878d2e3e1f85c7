"""InternLM2 <-> Llama: what maps to what (config fields and tensor names); helpers.models.internlm2.convert streams checkpoints.

Config fields (InternLM2Config defaults apply to missing ones, as in its remote code):
vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
hidden_act, max_position_embeddings, initializer_range, rms_norm_eps, use_cache, pad/bos/eos_token_id,
tie_word_embeddings: same name in Llama. rope_theta + rope_scaling {"type": "dynamic"|"linear", "factor"} ->
rope_parameters {"rope_type", "factor", "rope_theta"} (same formulas in transformers' Llama rope code).
bias -> attention_bias (q/k/v/o); InternLM2's MLP never has a bias, so mlp_bias is False. torch_dtype -> dtype.
head_dim = hidden_size // num_attention_heads as in InternLM2. attn_implementation and pretraining_tp are not model
properties (dropped). Anything else is refused with the field's name.

Rope: dynamic NTK computes the base from the current length in both implementations, so a single forward and a
generation (with or without KV cache) match InternLM2's remote code (tests check past max_position_embeddings).
One difference remains by design of transformers: after a call longer than max_position_embeddings, a later call
shorter than it goes back to the original base in transformers, while InternLM2's remote code keeps the grown one.

Tensors: model.tok_embeddings -> model.embed_tokens; layers.N.attention.wqkv -> self_attn.q/k/v_proj (split, see
split_wqkv); attention.wo -> self_attn.o_proj; feed_forward.w1/w3/w2 -> mlp.gate/up/down_proj; attention_norm ->
input_layernorm; ffn_norm -> post_attention_layernorm; model.norm -> model.norm; output -> lm_head.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from helpers.errors import TunebookError
from helpers.io import read_json

LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# InternLM2Config.__init__ defaults (configuration_internlm2.py), used for fields a config.json leaves out
INTERNLM2_DEFAULTS = dict(vocab_size=103168, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=None, hidden_act="silu",
                          max_position_embeddings=2048, initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, bias=True,
                          rope_theta=10000, rope_scaling=None)
_SAME_NAME = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
              "use_cache", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")
_IGNORED = {"architectures", "auto_map", "model_type", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
            "attn_implementation", "pretraining_tp", "output_attentions", "output_hidden_states", "return_dict",
            "id2label", "label2id", "problem_type", "chunk_size_feed_forward", "is_encoder_decoder"}
# InternLM2 module path -> Llama module path (inside model.layers.N. for the per-layer ones)
_TOP = {"model.tok_embeddings": "model.embed_tokens", "model.norm": "model.norm", "output": "lm_head"}
_LAYER = {"attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
          "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm",
          "ffn_norm": "post_attention_layernorm"}
_QKV = ("q_proj", "k_proj", "v_proj")
_LAYER_NAME = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


class NotInternLM2Error(TunebookError):
    pass


class UnsupportedCheckpointError(TunebookError):
    pass


def internlm2_lora_targets() -> list[str]:
    """LoRA target modules of a converted InternLM2 model (XTuner's wqkv/wo/w1/w2/w3 under their Llama names)."""
    return list(LLAMA_LORA_TARGETS)


def read_config(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise NotInternLM2Error(f"{model_dir}: no config.json here; point to the model folder (the one holding "
                                "config.json and the weights)")
    return read_json(path, "model config", "download the model again", UnsupportedCheckpointError)


def is_internlm2_checkpoint(model_dir: str | Path) -> bool:
    try:
        config = read_config(model_dir)
    except TunebookError:
        return False
    return "InternLM2ForCausalLM" in (config.get("architectures") or []) or config.get("model_type") == "internlm2"


# ---- config ---------------------------------------------------------------------------------------------------

def llama_config_from_internlm2(config: dict, source: str = "config.json"):
    """A transformers LlamaConfig equivalent to an InternLM2 config.json dict."""
    from transformers import LlamaConfig, PretrainedConfig

    unknown = sorted(set(config) - set(INTERNLM2_DEFAULTS) - _IGNORED - set(PretrainedConfig().to_dict()))
    if unknown:
        raise UnsupportedCheckpointError(f"{source}: unsupported InternLM2 config field(s) {', '.join(unknown)}; "
                                         "convert the original (unquantized) checkpoint, or load it with its own "
                                         "remote code on transformers 4.x")
    c = {**INTERNLM2_DEFAULTS, **{k: v for k, v in config.items() if k in INTERNLM2_DEFAULTS}}
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"] or c["num_attention_heads"]
    if c["hidden_size"] % heads or heads % kv:
        raise UnsupportedCheckpointError(f"{source}: hidden_size {c['hidden_size']}, num_attention_heads {heads} and "
                                         f"num_key_value_heads {kv} do not divide evenly")
    kwargs = {k: c[k] for k in _SAME_NAME}
    kwargs.update(num_key_value_heads=kv, head_dim=c["hidden_size"] // heads, attention_bias=bool(c["bias"]),
                  mlp_bias=False, attention_dropout=0.0, architectures=["LlamaForCausalLM"])
    rope = _rope_to_llama(c["rope_scaling"], c["rope_theta"], source)
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:  # transformers >= 5
        kwargs["rope_parameters"] = rope
    else:  # transformers 4.x spells it rope_theta + rope_scaling
        kwargs["rope_theta"] = rope.pop("rope_theta")
        kwargs["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    dtype = config.get("torch_dtype") or config.get("dtype")
    if dtype:
        kwargs["dtype"] = dtype
    return LlamaConfig(**kwargs)


def _rope_to_llama(scaling, theta, source: str) -> dict:
    if scaling is None:
        return {"rope_type": "default", "rope_theta": float(theta)}
    kind = scaling.get("type") or scaling.get("rope_type")
    factor = scaling.get("factor")
    extra = set(scaling) - {"type", "rope_type", "factor"}
    if kind not in ("dynamic", "linear") or not isinstance(factor, (int, float)) or factor < 1 or extra:
        raise UnsupportedCheckpointError(f"{source}: rope_scaling {scaling} is not supported (InternLM2 knows "
                                         '{"type": "dynamic" or "linear", "factor": >= 1})')
    return {"rope_type": kind, "factor": float(factor), "rope_theta": float(theta)}


def internlm2_config_from_llama(llama_config, original: dict | None = None) -> dict:
    """InternLM2 config.json dict for a LlamaConfig; fields of `original` (auto_map, ...) are kept."""
    c = llama_config.to_dict()
    heads = c["num_attention_heads"]
    problems = []
    if c.get("mlp_bias"):
        problems.append("mlp_bias=true (InternLM2's MLP has no bias)")
    if c.get("head_dim") not in (None, c["hidden_size"] // heads):
        problems.append(f"head_dim {c['head_dim']} != hidden_size/num_attention_heads")
    if c.get("attention_dropout"):
        problems.append("attention_dropout != 0")
    rope = c.get("rope_parameters") or {"rope_type": (c.get("rope_scaling") or {}).get("rope_type", "default"),
                                        "rope_theta": c.get("rope_theta", 10000.0),
                                        "factor": (c.get("rope_scaling") or {}).get("factor")}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind not in ("default", "dynamic", "linear"):
        problems.append(f"rope type {kind!r}")
    if problems:
        raise UnsupportedCheckpointError("cannot express this Llama config as InternLM2: " + "; ".join(problems))
    out = dict(original or {})
    out.update(architectures=["InternLM2ForCausalLM"], model_type="internlm2")
    out.update({k: c[k] for k in _SAME_NAME})
    out["num_key_value_heads"] = c["num_key_value_heads"] or heads
    out["bias"] = bool(c.get("attention_bias"))
    out["rope_theta"] = rope["rope_theta"]
    out["rope_scaling"] = None if kind == "default" else {"type": kind, "factor": rope["factor"]}
    dtype = c.get("dtype") or c.get("torch_dtype")
    if dtype:
        out["torch_dtype"] = str(dtype).replace("torch.", "")
    out.pop("dtype", None)
    return out


# ---- tensors --------------------------------------------------------------------------------------------------

def split_wqkv(fused, num_heads: int, num_kv_heads: int, head_dim: int):
    """q, k, v from InternLM2's fused wqkv (weight [(h + 2kv) * d, hidden] or bias): per key/value head it holds
    that group's query heads, then the key head, then the value head."""
    group = num_heads // num_kv_heads
    rest = fused.shape[1:]
    grouped = fused.reshape(num_kv_heads, group + 2, head_dim, *rest)
    return (grouped[:, :group].reshape(num_heads * head_dim, *rest).contiguous(),
            grouped[:, group].reshape(num_kv_heads * head_dim, *rest).contiguous(),
            grouped[:, group + 1].reshape(num_kv_heads * head_dim, *rest).contiguous())


def fuse_wqkv(q, k, v, num_heads: int, num_kv_heads: int, head_dim: int):
    import torch

    group = num_heads // num_kv_heads
    rest = q.shape[1:]
    return torch.cat([q.reshape(num_kv_heads, group, head_dim, *rest),
                      k.reshape(num_kv_heads, 1, head_dim, *rest),
                      v.reshape(num_kv_heads, 1, head_dim, *rest)], dim=1).reshape(-1, *rest).contiguous()


def _shape(llama_config) -> tuple[int, int, int]:
    heads = llama_config.num_attention_heads
    return heads, llama_config.num_key_value_heads or heads, llama_config.hidden_size // heads


def internlm2_tensors_to_llama(tensors: dict, llama_config) -> dict:
    """One shard's InternLM2 tensors under Llama names (wqkv split); unknown names are refused."""
    shape, out = _shape(llama_config), {}
    for name, tensor in tensors.items():
        module, _, param = name.rpartition(".")
        match = _LAYER_NAME.match(name)
        if module in _TOP:
            out[f"{_TOP[module]}.{param}"] = tensor
        elif match and match.group(2) == "attention.wqkv":
            prefix = f"model.layers.{match.group(1)}.self_attn"
            for proj, part in zip(_QKV, split_wqkv(tensor, *shape)):
                out[f"{prefix}.{proj}.{param}"] = part
        elif match and match.group(2) in _LAYER:
            out[f"model.layers.{match.group(1)}.{_LAYER[match.group(2)]}.{param}"] = tensor
        elif not name.endswith("rotary_emb.inv_freq"):  # old .bin files saved this derived buffer
            raise UnsupportedCheckpointError(f"unexpected tensor {name!r} in an InternLM2 checkpoint")
    return out


class LlamaToInternLM2:
    """Inverse mapping, streaming: q/k/v of one layer may sit in different shards, so they wait for each other."""

    def __init__(self, llama_config):
        self.shape, self.pending = _shape(llama_config), {}
        self.top = {v: k for k, v in _TOP.items()}
        self.layer = {v: k for k, v in _LAYER.items()}

    def __call__(self, tensors: dict) -> dict:
        out = {}
        for name, tensor in tensors.items():
            module, _, param = name.rpartition(".")
            match = _LAYER_NAME.match(name)
            sub = match.group(2) if match else None
            if module in self.top:
                out[f"{self.top[module]}.{param}"] = tensor
            elif sub in {f"self_attn.{p}" for p in _QKV}:
                key = (int(match.group(1)), param)
                parts = self.pending.setdefault(key, {})
                parts[sub.split(".")[1]] = tensor
                if len(parts) == 3:
                    del self.pending[key]
                    out[f"model.layers.{key[0]}.attention.wqkv.{param}"] = fuse_wqkv(
                        *(parts[p] for p in _QKV), *self.shape)
            elif sub in self.layer:
                out[f"model.layers.{match.group(1)}.{self.layer[sub]}.{param}"] = tensor
            elif not name.endswith("rotary_emb.inv_freq"):
                raise UnsupportedCheckpointError(f"unexpected tensor {name!r} in a Llama checkpoint (quantized? "
                                                 "export the merged full-precision model)")
        return out

    def finish(self) -> dict:
        if self.pending:
            (layer, param), parts = next(iter(self.pending.items()))
            missing = [p for p in _QKV if p not in parts]
            raise UnsupportedCheckpointError(f"layer {layer} has no {', '.join(missing)} {param}: the checkpoint "
                                             "is incomplete")
        return {}
