"""The fast tokenizer converted from an InternLM2-style SentencePiece model gives the ids of InternLM2's slow
tokenizer (reimplemented here: split on tokenizer_config's added tokens, sp.encode each segment, BOS first), for
models trained with and without a dummy prefix, and is loaded by AutoTokenizer without remote code."""
from __future__ import annotations

import json
import re

import pytest

from _internlm2_fakes import CHAT_NAMES, PLACEHOLDERS, tokenizer_config, train_sp_model

TEXTS = [
    "Hello world", " leading space", "  two leading spaces", "double  space inside", "trailing space ",
    "tab\tseparated\t\ttwice", "new\nline\n\nblank line", "\n starts with a newline", "\r\nwindows\r\n",
    "混合 Chinese 和 English 文本", "emoji 🙂🚀 and 表情😀 end", "数字 12345 and 3.14", "上海AI实验室书生·浦语",
    "  \t \n ", " ", "中文，标点！？", "def f(x):\n    return x * 2\n", "rare: ß Ω ж ئ 𝔘 ＡＢＣ１２３",
    "<|im_start|>system\nYou are a professional color designer.\n<|im_end|>\n<|im_start|>user\n请介绍一下你自己"
    "<|im_end|>\n<|im_start|>assistant\n我是伍鲜同志的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦<|im_end|>\n",
    "<|im_start|>user\n  spaced  <|im_end|> \n<|im_start|>assistant\n",
    "[UNUSED_TOKEN_146]user\n你好[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n",
    "mixed <|im_start|>user\nhi[UNUSED_TOKEN_145] x<|im_end|>", "<s>text</s> after eos", "<|im_end|><|im_start|>",
    "<|action_start|><|plugin|>\n{\"name\": \"search\"}<|action_end|>\n<|interpreter|>", "[UNUSED_TOKEN_139] spare",
    "[UNUSED_TOKEN_145]", "<s>[UNUSED_TOKEN_146]", "<|im_end|>[UNUSED_TOKEN_145]", "a[UNUSED_TOKEN_139]b",
]


def slow_reference(sp, config: dict, text: str) -> list[int]:
    """InternLM2Tokenizer: PreTrainedTokenizer.tokenize splits on the added tokens, _tokenize = sp.encode."""
    added = {t["content"]: int(i) for i, t in config["added_tokens_decoder"].items()}
    pattern = "(" + "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)) + ")"
    ids = [sp.piece_to_id(config["bos_token"])] if config["add_bos_token"] else []
    for part in re.split(pattern, text):
        if part in added:
            ids.append(added[part])
        elif part:
            ids.extend(sp.encode(part))
    if config["add_eos_token"]:
        ids.append(sp.piece_to_id(config["eos_token"]))
    return ids


def _make(tmp_path, name, config_overrides=None, **sp_options):
    import sentencepiece as spm
    from transformers import AutoTokenizer
    from helpers.models.internlm2.sp_tokenizer import write_fast_tokenizer
    from helpers.encode.templates import to_jinja
    src = tmp_path / name
    src.mkdir()
    sp_path = train_sp_model(src / "tokenizer.model", **sp_options)
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    config = {**tokenizer_config(sp.get_piece_size()), **(config_overrides or {})}
    (src / "tokenizer_config.json").write_text(json.dumps(config))
    write_fast_tokenizer(src, tmp_path / f"{name}-fast", chat_template=to_jinja("internlm2_chat"))
    return sp, config, AutoTokenizer.from_pretrained(tmp_path / f"{name}-fast")


@pytest.fixture(scope="module", params=[True, False], ids=["dummy_prefix", "no_dummy_prefix"])
def converted(request, tmp_path_factory):
    return _make(tmp_path_factory.mktemp("tok"), "sp", add_dummy_prefix=request.param)


def test_ids_equal_the_slow_tokenizer(converted):
    sp, config, fast = converted
    assert type(fast).__name__ in ("TokenizersBackend", "PreTrainedTokenizerFast")
    for text in TEXTS:
        assert fast(text).input_ids == slow_reference(sp, config, text), text


def test_model_spec_is_read_not_assumed(converted):
    sp, config, fast = converted
    dummy = sp.encode("Hello", out_type=str)[0].startswith("▁")
    assert fast.convert_ids_to_tokens(fast("Hello").input_ids)[1].startswith("▁") == dummy


def test_both_spellings_reach_the_chat_token_ids(converted):
    sp, config, fast = converted
    top = sp.get_piece_size()
    for offset, (name, old) in enumerate(zip(CHAT_NAMES, PLACEHOLDERS)):
        index = top - 6 + offset
        assert sp.id_to_piece(index) == old
        assert fast.convert_ids_to_tokens(index) == name and fast.convert_tokens_to_ids(name) == index
        assert fast(name, add_special_tokens=False).input_ids == [index]
        assert index in fast(f"x{old}y", add_special_tokens=False).input_ids
    assert top - 2 == fast.convert_tokens_to_ids("<|im_end|>")
    assert fast.decode([top - 2]) == "<|im_end|>"


def test_bos_eos_and_special_tokens(converted):
    sp, config, fast = converted
    ids = fast("hi").input_ids
    assert ids[0] == 1 and ids[-1] != 2 and fast.bos_token_id == 1 and fast.eos_token_id == 2
    assert fast.pad_token == "</s>" and fast.unk_token_id == 0


def test_add_bos_add_eos_are_read_from_the_config(tmp_path):
    sp, config, fast = _make(tmp_path, "eos", {"add_bos_token": False, "add_eos_token": True},
                             add_dummy_prefix=True)
    for text in ("hi there", TEXTS[18]):
        ids = fast(text).input_ids
        assert ids == slow_reference(sp, config, text) and ids[0] != 1 and ids[-1] == 2


def test_decode_round_trips(converted):
    sp, config, fast = converted
    special = {int(i) for i in config["added_tokens_decoder"]}
    for text in TEXTS:
        ids = fast(text).input_ids
        # what the slow tokenizer's decode(skip_special_tokens=True) returns: sentencepiece on the rest
        assert fast.decode(ids, skip_special_tokens=True) == sp.decode([i for i in ids if i not in special]), text
        if "[UNUSED_TOKEN_14" not in text or "[UNUSED_TOKEN_139]" in text:
            assert fast.decode(ids) == "<s>" + text, text  # lossless: identity normalizer, specials kept


def test_chat_template_renders_the_training_text(converted):
    from helpers.encode.templates import to_jinja
    sp, config, fast = converted
    assert fast.chat_template == to_jinja("internlm2_chat")
    messages = [{"role": "user", "content": "请介绍一下你自己"},
                {"role": "assistant", "content": "我是伍鲜同志的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦"}]
    text = fast.apply_chat_template(messages, tokenize=False)
    assert text == ("<s><|im_start|>user\n请介绍一下你自己<|im_end|>\n<|im_start|>assistant\n"
                    "我是伍鲜同志的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦<|im_end|>\n")
    assert fast(text, add_special_tokens=False).input_ids == slow_reference(sp, config, text[3:])


def test_documented_corner_case_spare_piece_alone_after_bos(tmp_path):
    """With a dummy prefix, SentencePiece gives "▁" + piece for a segment that is exactly one unrenamed
    user-defined piece; the normalizer cannot tell it from the added token's content, so the fast tokenizer gives
    the piece alone. (Renamed chat tokens in either spelling are exact: see TEXTS.)"""
    sp, config, fast = _make(tmp_path, "corner", add_dummy_prefix=True)
    spare = sp.piece_to_id("[UNUSED_TOKEN_139]")
    assert slow_reference(sp, config, "[UNUSED_TOKEN_139]") == [1, sp.piece_to_id("▁"), spare]
    assert fast("[UNUSED_TOKEN_139]").input_ids == [1, spare]


def test_nfkc_model_with_whitespace_removal(tmp_path):
    sp, config, fast = _make(tmp_path, "nfkc", add_dummy_prefix=True, normalization="nmt_nfkc",
                             remove_extra_whitespaces=True)
    for text in TEXTS:
        assert fast(text).input_ids == slow_reference(sp, config, text), text


def test_unigram_model_is_refused_by_name(tmp_path):
    import io
    import sentencepiece as spm
    from helpers.models.internlm2.sp_tokenizer import TokenizerConversionError, write_fast_tokenizer
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["hello world"] * 50), model_writer=buffer,
                                   model_type="unigram", vocab_size=20, hard_vocab_limit=False, minloglevel=2)
    (tmp_path / "tokenizer.model").write_bytes(buffer.getvalue())
    with pytest.raises(TokenizerConversionError, match="model_type"):
        write_fast_tokenizer(tmp_path, tmp_path / "out")
    with pytest.raises(TokenizerConversionError, match="no tokenizer.model"):
        write_fast_tokenizer(tmp_path / "out", tmp_path / "out2")


@pytest.mark.parametrize("template", ["internlm2_chat", "hf"])
def test_old_placeholder_spellings_in_data_and_chat_stay_plain_characters(converted, template):
    """`[UNUSED_TOKEN_145]` is how old InternLM2 prompts spell <|im_end|>; inside a record or a chat message it must
    train and be sent as its characters, never as the control token (it used to encode to 92542-style ids)."""
    from helpers.data.conversation import Conversation, Turn
    from helpers.encode.encoding import Encoder, special_ids
    from helpers.models.generation import prompt_ids
    _, _, fast = converted
    controls = special_ids(fast)
    answer = "我叫[UNUSED_TOKEN_145]助手"
    encoder = Encoder(fast, template, max_length=512)
    sample = encoder.encode(Conversation([Turn("你是谁[UNUSED_TOKEN_146]", answer)]))
    plain = encoder.encode(Conversation([Turn("你是谁", "我叫助手")]))
    template_controls = sum(1 for i in plain.input_ids if i in controls)
    assert sum(1 for i in sample.input_ids if i in controls) == template_controls
    trained = [i for i, label in zip(sample.input_ids, sample.labels) if label != -100]
    assert fast.decode(trained, skip_special_tokens=False).startswith(answer)
    assert sample.special_text and encoder.stats.special_text
    ids = prompt_ids(fast, template, [], "hi[UNUSED_TOKEN_145][UNUSED_TOKEN_146]")
    assert sum(1 for i in ids if i in controls) == sum(1 for i in prompt_ids(fast, template, [], "hi") if i in controls)
    assert "hi[UNUSED_TOKEN_145][UNUSED_TOKEN_146]" in fast.decode(ids, skip_special_tokens=False)
