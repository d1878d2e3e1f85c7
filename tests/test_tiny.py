"""The offline tiny model: deterministic, Llama-shaped, chat-ready, 4-bit-able on CPU."""
import hashlib
import json

import torch

from helpers.encode.templates import to_jinja
from helpers.models.tiny import chat_control_tokens, make_tiny_model


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_build_is_deterministic(tmp_path, tiny_model_dir):
    again = make_tiny_model(tmp_path / "again")
    assert _digest(again) == _digest(tiny_model_dir)


def test_tokenizer_speaks_like_an_internlm2_chat_checkpoint(tiny_tokenizer):
    tok = tiny_tokenizer
    assert (tok.bos_token, tok.eos_token) == ("<s>", "</s>")
    for token in chat_control_tokens():
        assert len(tok.encode(token, add_special_tokens=False)) == 1, token
    assert tok.encode("hi")[0] == tok.bos_token_id  # like InternLM2's tokenizer, encode() adds BOS
    text = "你好，世界 hello 🙂  tabs\tand\nnewlines"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.chat_template == to_jinja("internlm2_chat")


def test_model_dims_suit_the_cpu_4bit_path(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    for key in ("hidden_size", "intermediate_size", "vocab_size"):
        assert config[key] % 64 == 0, key
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert (config["num_key_value_heads"] * head_dim) % 64 == 0  # k/v projections are quantized too
    assert config["num_attention_heads"] > config["num_key_value_heads"]  # grouped-query, like InternLM2
    generation = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert len(generation["eos_token_id"]) == 2  # </s> and <|im_end|>


def test_loads_in_4bit_on_cpu_and_generates(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quant, device_map="cpu")
    ids = torch.tensor([tiny_tokenizer.encode("你好")])
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] >= ids.shape[1] + 1
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"


def test_every_linear_layer_fits_bitsandbytes_cpu_4bit_blocks(tiny_model_dir):
    """bitsandbytes' CPU 4-bit inference asserts out_features % 64 == 0: every layer QLoRA quantizes must fit."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    linear = {name: m.out_features for name, m in model.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linear and {name: n for name, n in linear.items() if n % 64} == {}
