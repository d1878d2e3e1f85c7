"""InternLM2 -> Llama conversion: logits and greedy generation of the converted model (plain transformers Llama, no
remote code) against an independent InternLM2 forward written here from the published modeling_internlm2.py;
bit-exact round trips; the cached ensure_llama_layout; the CLI."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from _internlm2_fakes import train_sp_model, write_internlm2_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---- independent InternLM2 reference (modeling_internlm2.py semantics, incl. its stateful dynamic-NTK cache) ---

class RefRotary:
    """InternLM2RotaryEmbedding / Linear / DynamicNTK: cos/sin cached up to the longest length seen; dynamic NTK
    recomputes the base from that length once it exceeds max_position_embeddings."""

    def __init__(self, dim, max_pos, base, scaling):
        self.dim, self.max_pos, self.base = dim, max_pos, base
        self.kind = scaling["type"] if scaling else None
        self.factor = scaling["factor"] if scaling else 1.0
        self.inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self._build(max_pos)

    def _build(self, seq_len):
        self.cached = seq_len
        if self.kind == "dynamic" and seq_len > self.max_pos:
            base = self.base * ((self.factor * seq_len / self.max_pos) - (self.factor - 1)) ** (self.dim / (self.dim - 2))
            self.inv_freq = 1.0 / (base ** (torch.arange(0, self.dim, 2).float() / self.dim))
        t = torch.arange(seq_len, dtype=torch.float32)
        if self.kind == "linear":
            t = t / self.factor
        emb = torch.cat([torch.outer(t, self.inv_freq)] * 2, dim=-1)
        self.cos, self.sin = emb.cos(), emb.sin()

    def __call__(self, kv_seq_len):
        if kv_seq_len > self.cached:
            self._build(kv_seq_len)
        return self.cos, self.sin


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rms(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


class RefInternLM2:
    def __init__(self, weights, config):
        self.w, self.c = weights, config
        self.heads, self.kv = config["num_attention_heads"], config["num_key_value_heads"]
        self.head_dim = config["hidden_size"] // self.heads
        self.rope = RefRotary(self.head_dim, config["max_position_embeddings"], config["rope_theta"],
                              config["rope_scaling"])

    def forward(self, ids, cache=None):
        """ids [1, T]; cache: list of (k, v) per layer or None. Returns logits [1, T, V] and the new cache."""
        w, c, eps = self.w, self.c, self.c["rms_norm_eps"]
        past = cache[0][0].shape[2] if cache else 0
        t = ids.shape[1]
        cos, sin = self.rope(past + t)
        pos = torch.arange(past, past + t)
        cos, sin = cos[pos][None, None], sin[pos][None, None]
        x = w["model.tok_embeddings.weight"][ids]
        new_cache = []
        groups = self.heads // self.kv
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = _rms(x, w[p + "attention_norm.weight"], eps)
            qkv = h @ w[p + "attention.wqkv.weight"].T
            if p + "attention.wqkv.bias" in w:
                qkv = qkv + w[p + "attention.wqkv.bias"]
            qkv = qkv.view(1, t, self.kv, groups + 2, self.head_dim)     # "b q (h gs d) -> b q h gs d"
            q = qkv[..., :groups, :].reshape(1, t, self.heads, self.head_dim).transpose(1, 2)
            k = qkv[..., -2, :].transpose(1, 2)
            v = qkv[..., -1, :].transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            if cache:
                k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
            new_cache.append((k, v))
            k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
            scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)
            mask = torch.full((t, past + t), float("-inf")).triu(past + 1)
            attn = torch.softmax(scores + mask, dim=-1) @ v
            out = attn.transpose(1, 2).reshape(1, t, -1) @ w[p + "attention.wo.weight"].T
            if p + "attention.wo.bias" in w:
                out = out + w[p + "attention.wo.bias"]
            x = x + out
            h = _rms(x, w[p + "ffn_norm.weight"], eps)
            ff = torch.nn.functional.silu(h @ w[p + "feed_forward.w1.weight"].T) * (h @ w[p + "feed_forward.w3.weight"].T)
            x = x + ff @ w[p + "feed_forward.w2.weight"].T
        x = _rms(x, w["model.norm.weight"], eps)
        return x @ w["output.weight"].T, new_cache

    def greedy(self, ids, new_tokens, use_cache):
        ids = ids.clone()
        logits, cache = self.forward(ids)
        for _ in range(new_tokens):
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
            logits, cache = self.forward(ids[:, -1:], cache) if use_cache else self.forward(ids)
        return ids


# ---- fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return train_sp_model(tmp_path_factory.mktemp("sp") / "tokenizer.model", add_dummy_prefix=True)


@pytest.fixture(scope="module")
def internlm2_dir(tmp_path_factory, sp_model):
    directory = tmp_path_factory.mktemp("ckpt") / "internlm2-chat-tiny"
    weights = write_internlm2_checkpoint(directory, sp_model)
    return directory, weights


@pytest.fixture(scope="module")
def converted(internlm2_dir, tmp_path_factory):
    from helpers.models.internlm2.convert import convert_internlm2_to_llama
    return convert_internlm2_to_llama(internlm2_dir[0], tmp_path_factory.mktemp("out") / "llama", progress=None)


def _load(directory):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    return model.eval()


def _prompt(vocab, length, seed=1):
    return torch.randint(3, vocab - 8, (1, length), generator=torch.Generator().manual_seed(seed))


# ---- tests ----------------------------------------------------------------------------------------------------

def test_detects_internlm2_by_config(internlm2_dir, converted, tmp_path):
    from helpers.models.internlm2.convert import is_internlm2_checkpoint
    assert is_internlm2_checkpoint(internlm2_dir[0])
    assert not is_internlm2_checkpoint(converted)
    assert not is_internlm2_checkpoint(tmp_path)  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "internlm2"}))
    assert is_internlm2_checkpoint(tmp_path)


def test_config_mapping(converted):
    config = json.loads((converted / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["rope_parameters"] == {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000000.0}
    expected = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 16, "rms_norm_eps": 1e-05,
                "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False, "bos_token_id": 1,
                "eos_token_id": 2, "pad_token_id": 2, "hidden_act": "silu", "dtype": "float32"}
    assert {k: config[k] for k in expected} == expected
    assert (converted / "model-00001-of-00002.safetensors").is_file()


def test_published_configs_map(tmp_path):
    """1.8B / 7B / 2.5-7B / 20B config.json values as published (shapes and rope only; weights not needed)."""
    from helpers.models.internlm2.convert import llama_config_from_internlm2
    from _internlm2_fakes import internlm2_config
    published = {
        "internlm2-chat-1_8b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                                    num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=32768),
        "internlm2-chat-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768),
        "internlm2_5-7b-chat": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768),
        "internlm2-chat-20b": dict(hidden_size=6144, intermediate_size=16384, num_hidden_layers=48,
                                   num_attention_heads=48, num_key_value_heads=8, max_position_embeddings=32768),
    }
    for name, shape in published.items():
        llama = llama_config_from_internlm2(internlm2_config(92544, torch_dtype="bfloat16", **shape), name)
        assert llama.head_dim == 128 and llama.num_key_value_heads == 8, name
        assert llama.rope_parameters == {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000000.0}, name


@pytest.mark.parametrize("bad, field", [({"rope_scaling": {"type": "yarn", "factor": 2.0}}, "rope_scaling"),
                                        ({"quantization_config": {"quant_method": "awq"}}, "quantization_config"),
                                        ({"num_key_value_heads": 3}, "num_key_value_heads")])
def test_unsupported_config_names_the_field(bad, field):
    from helpers.models.internlm2.convert import UnsupportedCheckpointError, llama_config_from_internlm2
    from _internlm2_fakes import internlm2_config
    with pytest.raises(UnsupportedCheckpointError, match=field):
        llama_config_from_internlm2(internlm2_config(100, **bad), "config.json")


def test_logits_match_reference_incl_dynamic_ntk(internlm2_dir, converted):
    directory, weights = internlm2_dir
    config = json.loads((directory / "config.json").read_text())
    model = _load(converted)
    for length in (11, 24):  # below and above max_position_embeddings (16): dynamic NTK rescales the base
        ids = _prompt(config["vocab_size"], length)
        expected, _ = RefInternLM2(weights, config).forward(ids)
        with torch.no_grad():
            got = model(ids).logits
        assert torch.allclose(got, expected, atol=1e-4, rtol=0), (length, (got - expected).abs().max())
    unscaled, _ = RefInternLM2(weights, {**config, "rope_scaling": None}).forward(ids)
    assert (unscaled - expected).abs().max() > 1e-2  # so the check above did exercise the scaling


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generation_matches_reference(internlm2_dir, converted, use_cache):
    directory, weights = internlm2_dir
    config = json.loads((directory / "config.json").read_text())
    model = _load(converted)
    model.generation_config.eos_token_id = None  # compare all 20 tokens, whatever they are
    ids = _prompt(config["vocab_size"], 8, seed=3)  # 8 + 20 > 16: the last steps run with a rescaled base
    expected = RefInternLM2(weights, config).greedy(ids, 20, use_cache)
    with torch.no_grad():
        got = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False,
                             use_cache=use_cache, pad_token_id=2)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("overrides", [{"bias": True, "rope_scaling": {"type": "linear", "factor": 2.0}},
                                       {"rope_scaling": None, "rope_theta": 10000}])
def test_bias_and_rope_variants(sp_model, tmp_path, overrides):
    from helpers.models.internlm2.convert import convert_internlm2_to_llama
    weights = write_internlm2_checkpoint(tmp_path / "src", sp_model, seed=5, **overrides)
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    model = _load(convert_internlm2_to_llama(tmp_path / "src", tmp_path / "dst", progress=None))
    ids = _prompt(config["vocab_size"], 20)
    expected, _ = RefInternLM2(weights, config).forward(ids)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, expected, atol=1e-4, rtol=0)


def test_bin_checkpoint_converts_like_safetensors(sp_model, tmp_path, converted):
    from safetensors.torch import load_file
    from helpers.models.internlm2.convert import convert_internlm2_to_llama
    write_internlm2_checkpoint(tmp_path / "bin", sp_model, fmt="bin")  # same seed -> same weights
    out = convert_internlm2_to_llama(tmp_path / "bin", tmp_path / "out", progress=None)
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        a, b = load_file(out / name), load_file(converted / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tensors(directory: Path) -> dict:
    from safetensors.torch import load_file
    out = {}
    for file in sorted(directory.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def _llama_config(directory):
    from transformers import LlamaConfig
    config = LlamaConfig.from_pretrained(directory).to_dict()
    return {k: v for k, v in config.items() if k not in ("_name_or_path", "transformers_version")}


def test_round_trip_is_bit_exact_bf16(sp_model, tmp_path):
    from helpers.models.internlm2.convert import convert_internlm2_to_llama, export_internlm2
    src = tmp_path / "internlm2"
    weights = write_internlm2_checkpoint(src, sp_model, dtype=torch.bfloat16, torch_dtype="bfloat16", bias=True)
    llama_a = convert_internlm2_to_llama(src, tmp_path / "a", progress=None)
    exported = export_internlm2(llama_a, tmp_path / "b", original_dir=src, progress=None)
    llama_c = convert_internlm2_to_llama(exported, tmp_path / "c", progress=None)
    # InternLM2 -> Llama -> InternLM2: the original tensors, config and tokenizer/remote-code files come back
    back = _tensors(exported)
    assert back.keys() == weights.keys()
    assert all(back[k].dtype == torch.bfloat16 and torch.equal(back[k], weights[k]) for k in weights)
    assert json.loads((exported / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    for name in ("tokenizer.model", "tokenizer_config.json", "modeling_internlm2.py", "tokenization_internlm2.py"):
        assert (exported / name).read_bytes() == (src / name).read_bytes()
    # Llama -> InternLM2 -> Llama: every tensor and the config equal
    a, c = _tensors(llama_a), _tensors(llama_c)
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) and a[k].dtype == c[k].dtype for k in a)
    assert _llama_config(llama_a) == _llama_config(llama_c)
    assert (llama_a / "tokenizer.json").read_bytes() == (llama_c / "tokenizer.json").read_bytes()


def test_export_finds_the_recorded_original(internlm2_dir, converted, tmp_path):
    from helpers.models.internlm2.convert import export_internlm2
    out = export_internlm2(converted, tmp_path / "back", progress=None)  # no original given: the marker's source
    src = internlm2_dir[0]
    assert json.loads((out / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    assert (out / "tokenizer.model").read_bytes() == (src / "tokenizer.model").read_bytes()
    assert not (out / "tokenizer.json").exists()


def test_plain_llama_round_trip_with_split_shards(tmp_path):
    """A Llama saved by transformers in many small shards (q/k/v of a layer land in different files)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from helpers.models.internlm2.convert import export_internlm2, internlm2_tensors_to_llama, llama_config_from_internlm2
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                         rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 5e5})
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama", max_shard_size="20KB")
    assert len(list((tmp_path / "llama").glob("*.safetensors"))) > 5
    out = export_internlm2(tmp_path / "llama", tmp_path / "internlm2", progress=None)
    internlm2_config = json.loads((out / "config.json").read_text())
    assert internlm2_config["rope_scaling"] == {"type": "linear", "factor": 4.0}
    assert internlm2_config["bias"] is True and "auto_map" not in internlm2_config
    back_config = llama_config_from_internlm2(internlm2_config)
    assert _llama_config(tmp_path / "llama") == {k: v for k, v in back_config.to_dict().items()
                                                 if k not in ("_name_or_path", "transformers_version")}
    original, back = _tensors(tmp_path / "llama"), internlm2_tensors_to_llama(_tensors(out), back_config)
    assert original.keys() == back.keys() and all(torch.equal(original[k], back[k]) for k in original)


def test_ensure_llama_layout_converts_once_and_loads_without_remote_code(internlm2_dir, tmp_path, monkeypatch):
    import shutil
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    import helpers.models.internlm2.convert as internlm2
    src = tmp_path / "models" / "internlm2-chat-tiny"
    shutil.copytree(internlm2_dir[0], src)
    assert internlm2.ensure_llama_layout(tmp_path) == tmp_path  # not InternLM2: unchanged
    out = internlm2.ensure_llama_layout(src, progress=None)
    assert out.parent == src.parent and out.name.startswith("internlm2-chat-tiny-llama-")  # beside the original
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    module_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(internlm2.internlm2_lora_targets()) <= module_names
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end == json.loads((src / "config.json").read_text())["vocab_size"] - 2
    assert GenerationConfig.from_pretrained(out).eos_token_id == [2, im_end]
    mtimes = {f: f.stat().st_mtime_ns for f in out.iterdir()}

    def must_not_run(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(internlm2, "convert_internlm2_to_llama", must_not_run)
    assert internlm2.ensure_llama_layout(src, progress=None) == out
    assert {f: f.stat().st_mtime_ns for f in out.iterdir()} == mtimes
    # a changed weight file is a different checkpoint: converted again (here: refused by the stub)
    shard = src / "model-00002-of-00002.safetensors"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="converted again"):
        internlm2.ensure_llama_layout(src, progress=None)


def test_ensure_llama_layout_uses_cache_dir_for_hub_snapshots(internlm2_dir, tmp_path, monkeypatch):
    import shutil
    from helpers.models.internlm2.convert import ensure_llama_layout
    snapshot = tmp_path / "hub" / "models--internlm--internlm2-chat-tiny" / "snapshots" / "abc123"
    shutil.copytree(internlm2_dir[0], snapshot)
    monkeypatch.setenv("TUNEBOOK_CACHE", str(tmp_path / "cache"))
    out = ensure_llama_layout(snapshot, progress=None)
    assert out.parent == tmp_path / "cache" / "converted" and (out / "config.json").is_file()
    assert list(snapshot.parent.iterdir()) == [snapshot]


def test_ensure_llama_layout_falls_back_to_the_cache_and_names_missing_space(internlm2_dir, tmp_path,
                                                                           monkeypatch):
    import shutil
    from collections import namedtuple
    import helpers.models.internlm2.convert as internlm2
    from helpers.errors import TunebookError
    src = tmp_path / "share" / "internlm2-chat-tiny"
    shutil.copytree(internlm2_dir[0], src)
    monkeypatch.setenv("TUNEBOOK_CACHE", str(tmp_path / "cache"))
    usage = namedtuple("usage", "total used free")
    full = {src.parent}
    monkeypatch.setattr(internlm2.shutil, "disk_usage",
                        lambda path: usage(10**12, 10**12, 0 if Path(path) in full else 10**12))
    out = internlm2.ensure_llama_layout(src, progress=None)  # the share is full: the cache gets it
    assert out.parent == tmp_path / "cache" / "converted"
    shutil.rmtree(out)
    full.add(out.parent)
    with pytest.raises(TunebookError, match="free space.*TUNEBOOK_CACHE"):
        internlm2.ensure_llama_layout(src, progress=None)
    with pytest.raises(TunebookError, match="needs about .* GB, and its disk has 0.0 GB free"):
        internlm2.convert_internlm2_to_llama(src, src.parent / "out", progress=None)
    assert sorted(p.name for p in src.parent.iterdir()) == ["internlm2-chat-tiny"]


def test_cli_both_directions(internlm2_dir, tmp_path, capsys):
    from helpers.cli import main
    src = internlm2_dir[0]
    assert main(["convert", "internlm2-to-llama", str(src), str(tmp_path / "llama")]) == 0
    assert main(["convert", "llama-to-internlm2", str(tmp_path / "llama"), str(tmp_path / "back"),
                 "--original", str(src)]) == 0
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    assert "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj" in capsys.readouterr().out
    assert main(["convert", "internlm2-to-llama", str(src), str(tmp_path / "llama")]) == 2  # exists
    assert "already exists" in capsys.readouterr().err


def test_cli_refuses_unrecognised_checkpoints(converted, tmp_path, capsys):
    from helpers.cli import main
    assert main(["convert", "internlm2-to-llama", str(converted), str(tmp_path / "x")]) == 2
    assert "not an InternLM2 checkpoint" in capsys.readouterr().err
    assert main(["convert", "internlm2-to-llama", str(tmp_path), str(tmp_path / "y")]) == 2
    assert "no config.json" in capsys.readouterr().err
    (tmp_path / "internlm2").mkdir()
    (tmp_path / "internlm2" / "config.json").write_text(json.dumps({"model_type": "internlm2"}))
    assert main(["convert", "internlm2-to-llama", str(tmp_path / "internlm2"), str(tmp_path / "z")]) == 2
    assert "no weights found" in capsys.readouterr().err
    assert main(["convert", "llama-to-internlm2", str(tmp_path / "internlm2"), str(tmp_path / "w")]) == 2
    assert "not a Llama checkpoint" in capsys.readouterr().err
    assert not any(p.name in {"x", "y", "z", "w"} for p in tmp_path.iterdir())
