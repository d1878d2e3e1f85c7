"""Faithful stand-ins for released InternLM2 chat checkpoints (nothing can be downloaded here), built independently
of helpers/ so that a wrong assumption in the converter cannot cancel out in the tests.

Layout copied from internlm2-chat-1_8b / internlm2_5-7b-chat: config.json keys, tensor names with the fused wqkv
([kv_heads, q_per_kv + 2, head_dim, hidden]), a SentencePiece BPE tokenizer.model with byte fallback whose top ids are
the placeholder pieces [UNUSED_TOKEN_141..146] (user-defined, as InternLM2's are: its early prompts spelled them out),
and a tokenizer_config.json whose added_tokens_decoder renames them to the chat tokens.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch

CHAT_NAMES = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>", "<|im_start|>"]
PLACEHOLDERS = [f"[UNUSED_TOKEN_{n}]" for n in range(141, 147)]
SPARE = ["[UNUSED_TOKEN_139]", "[UNUSED_TOKEN_140]"]  # unrenamed spare pieces below them, as in the real vocab
CORPUS = [
    "我是伍鲜同志的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦",
    "请介绍一下你自己", "请给我介绍五个上海的景点", "Please tell me five scenic spots in Shanghai",
    "The quick brown fox jumps over the lazy dog.", "上海是一个美丽的城市，有很多景点。",
    "def add(a, b):\n    return a + b\n", "机器学习 and deep learning 很有趣", "A calming, muted green #66ccff",
    "You are a professional color designer. Please output the corresponding color code.",
]


def train_sp_model(path: Path, add_dummy_prefix: bool, normalization: str = "identity",
                   remove_extra_whitespaces: bool = False, vocab_size: int = 420) -> Path:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 30), model_writer=buffer, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=1.0, add_dummy_prefix=add_dummy_prefix,
        normalization_rule_name=normalization, remove_extra_whitespaces=remove_extra_whitespaces,
        split_digits=True, allow_whitespace_only_pieces=True, hard_vocab_limit=False, minloglevel=2)
    proto = pb.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    for name in SPARE + PLACEHOLDERS:
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = name, 0.0, pb.ModelProto.SentencePiece.USER_DEFINED
    path.write_bytes(proto.SerializeToString())
    return path


def tokenizer_config(vocab_size: int) -> dict:
    added = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])}
    for offset, name in enumerate(CHAT_NAMES):
        added[str(vocab_size - 6 + offset)] = {"content": name, "lstrip": False, "normalized": False,
                                               "rstrip": False, "single_word": False, "special": True}
    return {
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer",
                                       "tokenization_internlm2_fast.InternLM2TokenizerFast"]},
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656, "tokenizer_class": "InternLM2Tokenizer",
        "added_tokens_decoder": added,
        "chat_template": "{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                         "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                         "{{ '<|im_start|>assistant\\n' }}{% endif %}",
    }


def internlm2_config(vocab_size: int, **overrides) -> dict:
    """internlm2-chat-1_8b's config.json keys with a tiny shape (q_per_kv = 2) and a short context, so dynamic
    NTK rope scaling is exercised by short sequences."""
    config = {
        "architectures": ["InternLM2ForCausalLM"], "attn_implementation": "eager",
        "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                     "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
                     "AutoModel": "modeling_internlm2.InternLM2ForCausalLM"},
        "bias": False, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 128,
        "initializer_range": 0.02, "intermediate_size": 256, "max_position_embeddings": 16,
        "model_type": "internlm2", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "pad_token_id": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"type": "dynamic", "factor": 2.0}, "rope_theta": 1000000, "tie_word_embeddings": False,
        "torch_dtype": "float32", "transformers_version": "4.41.0", "use_cache": True, "vocab_size": vocab_size,
    }
    config.update(overrides)
    return config


def random_internlm2_weights(config: dict, seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads

    def rand(*shape, scale=0.08):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    def norm():
        return (1 + torch.randn(hidden, generator=g) * 0.2).to(dtype)

    weights = {"model.tok_embeddings.weight": rand(vocab, hidden, scale=1.0), "model.norm.weight": norm(),
               "output.weight": rand(vocab, hidden)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights.update({
            p + "attention.wqkv.weight": rand((heads + 2 * kv) * head_dim, hidden),
            p + "attention.wo.weight": rand(hidden, heads * head_dim),
            p + "feed_forward.w1.weight": rand(inter, hidden), p + "feed_forward.w3.weight": rand(inter, hidden),
            p + "feed_forward.w2.weight": rand(hidden, inter),
            p + "attention_norm.weight": norm(), p + "ffn_norm.weight": norm(),
        })
        if config["bias"]:
            weights[p + "attention.wqkv.bias"] = rand((heads + 2 * kv) * head_dim, scale=0.5)
            weights[p + "attention.wo.bias"] = rand(hidden, scale=0.5)
    return weights


def write_internlm2_checkpoint(directory: Path, sp_model: Path, seed: int = 0, fmt: str = "safetensors",
                               dtype=torch.float32, **config_overrides) -> dict[str, torch.Tensor]:
    """A checkpoint folder as downloaded (two weight shards + index), returning its tensors."""
    import sentencepiece as spm
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    vocab_size = spm.SentencePieceProcessor(model_file=str(sp_model)).get_piece_size()
    config = internlm2_config(vocab_size, **config_overrides)
    weights = random_internlm2_weights(config, seed, dtype)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(vocab_size), indent=2))
    (directory / "tokenizer.model").write_bytes(sp_model.read_bytes())
    (directory / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "transformers_version": "4.41.0"}))
    for name in ("modeling_internlm2.py", "configuration_internlm2.py", "tokenization_internlm2.py"):
        (directory / name).write_text(f"# stand-in for the remote-code file {name}\n")
    names = list(weights)
    shards = {"1": names[: len(names) // 2], "2": names[len(names) // 2:]}
    suffix = "safetensors" if fmt == "safetensors" else "bin"
    prefix = "model" if fmt == "safetensors" else "pytorch_model"
    weight_map = {}
    for number, keys in shards.items():
        file = f"{prefix}-0000{number}-of-00002.{suffix}"
        part = {k: weights[k].contiguous() for k in keys}
        if fmt == "safetensors":
            save_file(part, str(directory / file), metadata={"format": "pt"})
        else:
            torch.save(part, directory / file)
        weight_map.update({k: file for k in keys})
    (directory / f"{prefix}.{suffix}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weights
