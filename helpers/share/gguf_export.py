"""A merged model folder as one GGUF file for llama.cpp / Ollama, stopping where tunebook's chat stops.

Written with the `gguf` package (llama.cpp's own Python writer): its tensor-name map, its quantizers, its
SpecialVocab for merges and special ids. What is done here and nowhere in a library one can call: choosing the
pieces for a Llama-layout Hugging Face folder (llama.cpp's converter is a script, not an API), the q/k row order
llama.cpp's rotary embedding expects, and the stop token of the *training* template as EOS (the base tokenizer's
EOS would let Ollama ramble on past `<|im_end|>`, Ollama #8363).

InternLM2 folders are exported through their Llama-layout conversion (helpers.models.internlm2.convert).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from helpers.errors import TunebookError

# What llama.cpp's converter writes too (f32: exact, twice f16's size); q4_k_m comes from llama-quantize (README)
TYPES = ("f16", "bf16", "q8_0", "f32")
ARCHITECTURES = {"llama": "LLAMA"}  # model_type -> gguf.MODEL_ARCH name (Mistral/Qwen need their own key sets)


@dataclass
class Exported:
    path: Path
    tensors: int
    type: str
    eos_token: str          # the token generation stops at (the template's stop word)
    chat_template: str
    format: object          # the ChatFormat and system prompt the model was trained with, and its tokenizer:
    system: str             # what the Ollama Modelfile is built from
    tokenizer: object


def _source_folder(model: Path) -> tuple[Path, dict]:
    """The Llama-layout folder to read and its config: refuse adapters and architectures the writer cannot map."""
    from helpers.io import read_json
    from helpers.models.loading import is_adapter_dir, prepare_checkpoint
    if not model.is_dir():
        raise TunebookError(f"{model} does not exist (give a merged model folder, e.g. work/merged-persona)")
    if is_adapter_dir(model):
        raise TunebookError(f"{model} is a LoRA adapter; GGUF holds whole models: merge it first "
                            f"(python -m helpers merge {model} OUT_DIR) and export OUT_DIR")
    folder = prepare_checkpoint(model)
    config = read_json(folder / "config.json", "model config", "export a merged tunebook folder")
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise TunebookError(f"{model}: model_type {model_type!r} cannot be exported here (supported: "
                            f"{', '.join(ARCHITECTURES)} and InternLM2); llama.cpp's convert_hf_to_gguf.py knows more")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    # Dynamic NTK (InternLM2) changes nothing up to max_position_embeddings, the context length written: exact there.
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", "dynamic", None):
        raise TunebookError(f"{model}: rope scaling {rope.get('rope_type') or rope.get('type')!r} is not exported "
                            "here; use llama.cpp's convert_hf_to_gguf.py")
    return folder, config


def _rotary_rows_interleaved(weight, heads: int):
    """q/k projection rows reordered from Hugging Face's rotate-half rotary layout to llama.cpp's interleaved one
    (pairs (i, i + d/2) of each head become neighbours); transformers' GGUF loader undoes exactly this."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tensors(folder: Path):
    """(name, float32 numpy array) for every tensor of the folder's safetensors files, in file order."""
    from safetensors import safe_open
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise TunebookError(f"{folder} has no *.safetensors weights (merge writes them; .bin folders: re-save them)")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name).float().numpy()


def _encoded(array, kind: str):
    """(data, raw_dtype) for one tensor: 1-D tensors (norms) stay float32 as llama.cpp keeps them."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants
    if array.ndim == 1 or kind == "f32":
        return array.astype(np.float32), None
    if kind == "f16":
        return array.astype(np.float16), None
    qtype = GGMLQuantizationType.BF16 if kind == "bf16" else GGMLQuantizationType.Q8_0
    if kind == "q8_0" and array.shape[-1] % 32:   # Q8_0 blocks are 32 values of a row
        return array.astype(np.float16), None
    return quants.quantize(array, qtype), qtype


def _file_type(kind: str):
    from gguf import LlamaFileType
    return {"f16": LlamaFileType.MOSTLY_F16, "bf16": LlamaFileType.MOSTLY_BF16,
            "q8_0": LlamaFileType.MOSTLY_Q8_0, "f32": LlamaFileType.ALL_F32}[kind]


def _pre_tokenizer(tokenizer_json: dict, folder: Path) -> str:
    """llama.cpp's name for the split before BPE, read from the tokenizer's own pre_tokenizer."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [(p.get("type"), p.get("individual_digits"), p.get("use_regex", True)) for p in parts]
    if kinds == [("ByteLevel", None, True)]:
        return "gpt2"
    if kinds == [("Digits", True, True), ("ByteLevel", None, False)] or \
            kinds == [("Digits", True, True), ("ByteLevel", None, True)]:
        return "smollm"
    raise TunebookError(f"{folder}/tokenizer.json: pre-tokenizer {json.dumps(pre)[:120]} has no llama.cpp name "
                        "known here; use llama.cpp's convert_hf_to_gguf.py")


def _token_types(tokenizer, vocab_size: int, tokens: dict[int, str], base_types: dict[int, int] | None = None):
    """(token strings, llama.cpp token types) for every embedding row: special added tokens are CONTROL (parsed as
    one token in templates), other added ones USER_DEFINED, rows past the tokenizer padding (as llama.cpp writes)."""
    import gguf
    special = {i for i, added in tokenizer.added_tokens_decoder.items() if added.special}
    added = set(tokenizer.added_tokens_decoder)
    names, types = [], []
    for i in range(vocab_size):
        if i not in tokens:
            names.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            names.append(tokens[i])
            types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if i in added
                         else (base_types or {}).get(i, gguf.TokenType.NORMAL))
    return names, types


def _add_vocab(writer, folder: Path, tokenizer, vocab_size: int, eos_token: str) -> None:
    """Tokens, their types, merges or scores and special ids; EOS/EOT = the template's stop token.

    Byte-level BPE (SmolLM2, GPT-2 style) is llama.cpp's "gpt2" model with merges; BPE with byte fallback (Llama /
    InternLM2 SentencePiece converted to a fast tokenizer) is its "llama" model with scores, read by gguf.LlamaHfVocab."""
    import gguf
    tokenizer_json = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE":
        raise TunebookError(f"{folder}/tokenizer.json: a {model.get('type')} tokenizer is not exported here (BPE "
                            "only); use llama.cpp's convert_hf_to_gguf.py")
    if model.get("byte_fallback"):
        vocab = list(gguf.LlamaHfVocab(folder).all_tokens())
        tokens = {i: text.decode("utf-8") for i, (text, _, _) in enumerate(vocab)}
        names, types = _token_types(tokenizer, vocab_size, tokens, {i: t for i, (_, _, t) in enumerate(vocab)})
        scores = [vocab[i][1] if i < len(vocab) else -1000.0 for i in range(vocab_size)]
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(scores)
    else:
        names, types = _token_types(tokenizer, vocab_size, {i: t for t, i in tokenizer.get_vocab().items()})
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer(tokenizer_json, folder))
    writer.add_token_list(names)
    writer.add_token_types(types)
    quiet = logging.getLogger("gguf.vocab")
    level = quiet.level
    quiet.setLevel(logging.ERROR)   # its notes on the post-processor's BOS: BOS is decided below, not there
    try:
        specials = gguf.SpecialVocab(folder, load_merges=not model.get("byte_fallback"), n_vocab=vocab_size)
    finally:
        quiet.setLevel(level)
    specials.chat_template = None            # the trained template is added by the caller
    specials.special_token_ids.pop("eos", None)
    specials.add_special_token = {}          # BOS is spelled by the chat template where training put one
    specials.add_to_gguf(writer, quiet=True)
    eos = tokenizer.convert_tokens_to_ids(eos_token)
    writer.add_eos_token_id(eos)
    writer.add_eot_token_id(eos)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def stop_token(fmt, tokenizer) -> str:
    """The one token generation must stop at: the template's stop word when it is a single token, else EOS."""
    for word in fmt.stop_words:
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) == 1:
            return word
    return tokenizer.eos_token


def export_gguf(model: str | os.PathLike, out: str | os.PathLike, kind: str = "f16") -> Exported:
    """Write `model` (a merged or plain Llama-layout folder) to `out` atomically; returns what was written."""
    import gguf
    from transformers import AutoTokenizer
    from helpers.io import check_writable
    from helpers.models.find import resolve_template
    from helpers.models.record import read_record, trained_format

    if kind not in TYPES:
        raise TunebookError(f"--type {kind!r}: choose one of {', '.join(TYPES)}")
    model, out = Path(model), Path(out)
    if out.suffix != ".gguf":
        raise TunebookError(f"{out}: the output is one file ending in .gguf (e.g. {out.name or 'model'}.gguf)")
    folder, config = _source_folder(model)
    record = read_record(model) or {}
    fmt, system = trained_format(record)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    fmt = fmt or resolve_template("auto", folder)
    chat_template = fmt.jinja(tokenizer)
    eos_token = stop_token(fmt, tokenizer)
    check_writable(out.parent, "the output file", _size(folder, config, kind))

    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[config["model_type"]])
    layers = config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    names = gguf.get_tensor_name_map(arch, layers)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    try:
        _add_model_keys(writer, config, record, model, kind)
        _add_vocab(writer, folder, tokenizer, config["vocab_size"], eos_token)
        writer.add_chat_template(chat_template)
        count = 0
        for name, array in _tensors(folder):
            if name.endswith("rotary_emb.inv_freq"):
                continue
            if config.get("tie_word_embeddings") and name == "lm_head.weight":
                continue   # llama.cpp reuses token_embd for a tied head
            mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if mapped is None:
                raise TunebookError(f"{folder}: tensor {name} has no GGUF name for {config['model_type']}")
            if name.endswith("q_proj.weight"):
                array = _rotary_rows_interleaved(array, heads)
            elif name.endswith("k_proj.weight"):
                array = _rotary_rows_interleaved(array, kv_heads)
            data, raw = _encoded(array, kind)
            writer.add_tensor(mapped, data, raw_dtype=raw)
            count += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return Exported(out, count, kind, eos_token, chat_template, fmt, system, tokenizer)


def _size(folder: Path, config: dict, kind: str) -> int:
    """Bytes the file will need, roughly: per weight 4 (f32), 2 (f16/bf16) or ~1.07 (q8_0) bytes."""
    total = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    dtype = config.get("dtype") or "float32"
    per_value = 4 if "32" in str(dtype) else 2
    return int(total / per_value * {"f32": 4, "q8_0": 1.07}.get(kind, 2))


def _add_model_keys(writer, config: dict, record: dict, model: Path, kind: str) -> None:
    import gguf
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_name(model.resolve().name)
    base = (record.get("base_model") or {}).get("name")
    if base:
        writer.add_description(f"fine-tuned from {base} with tunebook")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(_file_type(kind))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
