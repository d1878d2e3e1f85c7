"""An offline tiny model: a byte-level BPE tokenizer trained here + a random-weight Llama, deterministic.

This is what the tests and the CPU demo train, because nothing can be downloaded in CI. It behaves like
an InternLM2-chat checkpoint where it matters: BOS/EOS spelled <s>/</s>, chat control tokens as single
special tokens, the internlm2_chat template embedded as chat_template, generation stopping at <|im_end|>.
Dimensions are multiples of 64 because bitsandbytes' CPU 4-bit inference asserts that out_features are
divisible by the quantization block size (64 for NF4 on bitsandbytes 0.45-0.50).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.io import atomic_dir
from helpers.encode.chat_format import DEFAULT_TEMPLATE
from helpers.encode.templates import PROMPT_TEMPLATES, to_jinja

BASE_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def chat_control_tokens() -> list[str]:
    """Every control-token spelling used by any template, in a fixed order (InternLM2's first)."""
    tokens = ["<|im_start|>", "<|im_end|>", "<|action_start|>", "<|action_end|>", "<|interpreter|>", "<|plugin|>"]
    for template in PROMPT_TEMPLATES.values():
        tokens += [t for t in template.control_tokens() if t not in tokens]
    return tokens


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 2048           # BPE target; the model's vocab is rounded up to a multiple of 64
    hidden_size: int = 128           # multiple of 64 (CPU 4-bit path)
    intermediate_size: int = 384     # multiple of 64; 3x hidden like Llama's SwiGLU ratio
    num_hidden_layers: int = 2
    num_attention_heads: int = 4     # head_dim 32
    num_key_value_heads: int = 2     # grouped-query attention, as InternLM2 (q_per_kv > 1)
    max_position_embeddings: int = 4096
    seed: int = 0


# A small bilingual corpus so the BPE learns Chinese and English pieces (byte-level BPE covers any text anyway).
_CORPUS = [
    "请介绍一下你自己", "我是伍鲜同志的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦",
    "你在实战营做什么", "我在这里帮助伍鲜同志完成XTuner微调个人小助手的任务",
    "你是谁？你叫什么名字？谁开发了你？你能做什么？你是ChatGPT吗？", "我是一个人工智能助手，可以回答问题、写作和翻译。",
    "Please introduce yourself. Who are you? Who made you? What can you do? Are you ChatGPT?",
    "I am a helpful assistant. I can answer questions, write, translate and explain code.",
    "请给我介绍五个上海的景点", "外滩、东方明珠、豫园、南京路步行街和上海博物馆都很值得一去。",
    "Please tell me five scenic spots in Shanghai", "The Bund, Oriental Pearl Tower, Yu Garden, Nanjing Road.",
    "You are a professional color designer. Please provide the corresponding colors based on the description of Human.",
    "A calming, fairly bright color that falls between sky blue and baby blue, with a hint of slight fluorescence.",
    "#66ccff #ff0000 #00ff00 #0000ff #ffffff #000000 #1099ee #0066dd", "请给我一个像天空一样清澈透明的蓝色。",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "天蓝色 胭脂红 月白 黛青 一种柔和而明亮的颜色，带有淡淡的暖意。", "1 + 1 = 2, 3 * 4 = 12, def main(): return 0",
    "今天天气很好，我们去公园散步吧。学习机器学习需要数学、编程和耐心。", "The quick brown fox jumps over the lazy dog.",
]


def build_tokenizer(config: TinyConfig = TinyConfig()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = BASE_SPECIALS + chat_control_tokens()
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    # Each line once and min_frequency=2: merges are learned only for pieces shared by several lines, so
    # sentences stay sub-word sequences (~46 tokens for the camp persona answer) instead of single tokens.
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, special_tokens=specials, show_progress=False,
                                  min_frequency=2, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_CORPUS, trainer)
    # Like Llama/InternLM2 tokenizers: encode(text) adds BOS; encoding code adds its own and passes
    # add_special_tokens=False, exactly as XTuner does.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=chat_control_tokens())
    fast.chat_template = to_jinja(DEFAULT_TEMPLATE)
    return fast


def build_model(tokenizer, config: TinyConfig = TinyConfig()):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    vocab = -(-len(tokenizer) // 64) * 64
    model_config = LlamaConfig(
        vocab_size=vocab, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(model_config)
    # With the usual 0.02 init the frozen head caps every logit near +-2.6 (row norm 0.23 x unit-RMS hidden state),
    # so LoRA, which leaves the head frozen, could never make any token likely (loss floor ~3.6). Pretrained
    # heads have row norms around 1-2: give the random one that scale.
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 1.5 / config.hidden_size ** 0.5)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")])
    return model


TINY_MARKER = "tunebook_tiny.json"   # written beside the weights: this folder holds the random-weight test model


def is_tiny(path: str | Path | None) -> bool:
    """Whether `path` is a tiny model folder made here (random weights: its answers mean nothing)."""
    return path is not None and (Path(path) / TINY_MARKER).is_file()


def make_tiny_model(out_dir: str | Path, config: TinyConfig = TinyConfig(), overwrite: bool = False) -> Path:
    """Write tokenizer + model to `out_dir` (atomically) and return the path."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(config)
    model = build_model(tokenizer, config)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / TINY_MARKER).write_text(json.dumps(asdict(config), indent=2) + "\n", encoding="utf-8")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers make-tiny-model",
                                     description="Build the offline tiny tokenizer + random-weight Llama model.")
    parser.add_argument("dir", help="output folder (created; must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    for field, default in asdict(TinyConfig()).items():
        parser.add_argument("--" + field.replace("_", "-"), type=int, default=default, help=f"default {default}")
    args = parser.parse_args(argv)
    config = TinyConfig(**{f: getattr(args, f) for f in asdict(TinyConfig())})
    try:
        path = make_tiny_model(args.dir, config, overwrite=args.overwrite)
    except FileExistsError as err:
        from helpers.errors import TunebookError, learner_os_error
        if err.filename is not None and Path(err.filename) != Path(args.dir):  # a file where a folder must go
            raise learner_os_error(err) from None
        raise TunebookError(f"{args.dir} already exists (pass --overwrite to replace it)") from None
    print(f"tiny model written to {path}: {config}")
    return 0
