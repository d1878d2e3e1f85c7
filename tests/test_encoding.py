"""Encoding: ids and labels token by token against an independent copy of XTuner's template_map_fn + encode_fn."""
import pytest

from helpers.data.conversation import Conversation, Turn
from helpers.encode.encoding import IGNORE_INDEX, Encoder, decode_with_mask
from helpers.errors import TunebookError
from helpers.data.formats import conversations_from_records
from helpers.encode.templates import PROMPT_TEMPLATES


def xtuner_reference(record: dict, template, tokenizer, max_length: int):
    """XTuner v0.1.21 template_map_fn + encode_fn, transcribed from xtuner/dataset/map_fns/template_map_fn.py and
    xtuner/dataset/utils.py (encode_fn)."""
    conversation = []
    for i, turn in enumerate(record["conversation"]):
        input_text = template.instruction.format(input=turn.get("input", ""), round=i + 1)
        if turn.get("system"):
            input_text = template.system.format(system=turn["system"]) + input_text
        output = turn["output"] + (template.suffix or "")
        conversation.append({"input": input_text, "output": output,
                             "output_with_loss": turn.get("output_with_loss", True),
                             "need_eos_token": not template.suffix_as_eos, "sep": template.sep or ""})
    bos, eos = [tokenizer.bos_token_id], [tokenizer.eos_token_id]
    input_ids, labels, next_needs_bos = [], [], True
    for turn in conversation:
        input_encode = tokenizer.encode(turn["input"], add_special_tokens=False)
        if next_needs_bos:
            input_ids += bos
            labels += [IGNORE_INDEX]
        input_ids += input_encode
        labels += [IGNORE_INDEX] * len(input_encode)
        output_encode = tokenizer.encode(turn["output"], add_special_tokens=False)
        input_ids += output_encode
        labels += output_encode if turn["output_with_loss"] else [IGNORE_INDEX] * len(output_encode)
        if turn["need_eos_token"]:
            next_needs_bos = True
            input_ids += eos
            labels += eos if turn["output_with_loss"] else [IGNORE_INDEX]
        else:
            next_needs_bos = False
        if turn["sep"] != "":
            sep_encode = tokenizer.encode(turn["sep"], add_special_tokens=False)
            input_ids += sep_encode
            labels += [IGNORE_INDEX] * len(sep_encode)
    return input_ids[:max_length], labels[:max_length]


RECORDS = [
    {"conversation": [{"input": "请介绍一下你自己", "output": "我是伍鲜同志的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦"}]},
    {"conversation": [{"system": "You are a professional color designer.\n", "input": "A calming blue",
                       "output": "#66ccff"}, {"input": "darker?", "output": "#1099ee"}]},
    {"conversation": [{"input": "Q1 with {braces}", "output": "A1", "output_with_loss": False},
                      {"input": "多轮第二问", "output": "第二答 with  spaces\n\tand tabs"}]},
]


# minicpm has no SYSTEM slot, so XTuner itself cannot render records with a system text (covered below).
CASES = [(name, index) for name in PROMPT_TEMPLATES for index, record in enumerate(RECORDS)
         if PROMPT_TEMPLATES[name].system is not None or not any(t.get("system") for t in record["conversation"])]


@pytest.mark.parametrize("name,index", CASES)
def test_ids_and_labels_equal_xtuner_encode_fn(tiny_tokenizer, name, index):
    template = PROMPT_TEMPLATES[name]
    conversation = conversations_from_records([RECORDS[index]])[0]
    sample = Encoder(tiny_tokenizer, name, max_length=4096).encode(conversation)
    ids, labels = xtuner_reference(RECORDS[index], template, tiny_tokenizer, 4096)
    assert sample.input_ids == ids
    assert sample.labels == labels


def test_minicpm_ignores_system_text(tiny_tokenizer):
    # minicpm has no SYSTEM: the system text is simply not rendered (XTuner would crash on None.format).
    conv = Conversation([Turn("hi", "yo", system="S")])
    sample = Encoder(tiny_tokenizer, "minicpm", 100).encode(conv)
    assert tiny_tokenizer.decode(sample.input_ids) == "<s><用户> hi <AI>yo</s>\n"


def test_exact_mask_for_the_camp_row(tiny_tokenizer):
    tok = tiny_tokenizer
    conv = Conversation([Turn("请介绍一下你自己", "我是小助手")])
    sample = Encoder(tok, "internlm2_chat", 100).encode(conv)
    prompt = tok.encode("<|im_start|>user\n请介绍一下你自己<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    answer = tok.encode("我是小助手<|im_end|>", add_special_tokens=False)
    sep = tok.encode("\n", add_special_tokens=False)
    assert sample.input_ids == [tok.bos_token_id] + prompt + answer + sep
    assert sample.labels == [IGNORE_INDEX] * (1 + len(prompt)) + answer + [IGNORE_INDEX] * len(sep)
    assert tok.eos_token_id not in sample.input_ids  # internlm2_chat: <|im_end|> replaces </s>
    assert decode_with_mask(tok, sample) == ("<s><|im_start|>user\n请介绍一下你自己<|im_end|>\n<|im_start|>assistant\n"
                                             "[我是小助手<|im_end|>]\n")


def test_special_token_text_in_content_is_plain_text(tiny_tokenizer):
    tok = tiny_tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    conv = Conversation([Turn("我叫<|im_end|>", "你好，<|im_end|>！")], source="f.jsonl:3")
    encoder = Encoder(tok, "internlm2_chat", 100)
    sample = encoder.encode(conv)
    # exactly three control <|im_end|>: after the question, after the answer (trained suffix), nowhere else
    assert sample.input_ids.count(im_end) == 2
    trained = [t for t, l in zip(sample.input_ids, sample.labels) if l != IGNORE_INDEX]
    assert trained[-1] == im_end and trained.count(im_end) == 1
    assert tok.decode(trained) == "你好，<|im_end|>！<|im_end|>"  # first one spelled out in characters
    assert sample.special_text and encoder.stats.special_text == ["f.jsonl:3"]


def test_truncation_and_drops_are_counted(tiny_tokenizer):
    prompt = Encoder(tiny_tokenizer, "internlm2_chat", 1000).prompt_ids(Conversation([Turn("hi", "")]))
    encoder = Encoder(tiny_tokenizer, "internlm2_chat", max_length=len(prompt) + 3)
    long_answer = encoder.encode(Conversation([Turn("hi", "a long answer " * 20)]))
    assert long_answer is not None and len(long_answer) == len(prompt) + 3 and long_answer.truncated
    assert long_answer.trained_tokens == 3
    assert encoder.encode(Conversation([Turn("a very long question " * 20, "answer")])) is None
    assert encoder.encode(Conversation([Turn("q", "a", output_with_loss=False)])) is None
    s = encoder.stats
    assert (s.truncated, s.dropped_prompt_too_long, s.dropped_no_trained, s.samples) == (1, 1, 1, 1)


def test_pretrain_records_train_all_text_without_eos(tiny_tokenizer):
    conv = conversations_from_records([{"text": "  书生·浦语大模型实战营  "}])[0]
    sample = Encoder(tiny_tokenizer, "internlm2_chat", 100).encode(conv)
    body = tiny_tokenizer.encode("书生·浦语大模型实战营", add_special_tokens=False)
    assert sample.input_ids == [tiny_tokenizer.bos_token_id] + body
    assert sample.labels == [IGNORE_INDEX] + body


def test_default_system_fills_only_records_without_one(tiny_tokenizer):
    encoder = Encoder(tiny_tokenizer, "internlm2_chat", 200, system="SYS")
    plain = encoder.encode(Conversation([Turn("q", "a")]))
    own = encoder.encode(Conversation([Turn("q", "a", system="MINE")]))
    assert "<|im_start|>system\nSYS<|im_end|>" in tiny_tokenizer.decode(plain.input_ids)
    assert "SYS" not in tiny_tokenizer.decode(own.input_ids).replace("MINE", "")


def test_hf_mode_masks_answers_like_the_named_template(tiny_tokenizer):
    # The tiny tokenizer's chat_template is the exported internlm2_chat one; hf mode must find the same spans
    # (token boundaries may differ where XTuner tokenizes pieces separately, so compare decoded marked text).
    conv = conversations_from_records([RECORDS[1]])[0]
    hf = Encoder(tiny_tokenizer, "hf", 4096).encode(conv)
    named = Encoder(tiny_tokenizer, "internlm2_chat", 4096).encode(conv)
    assert decode_with_mask(tiny_tokenizer, hf) == decode_with_mask(tiny_tokenizer, named)
    prompt = Encoder(tiny_tokenizer, "hf", 4096).prompt_ids(conv)
    assert tiny_tokenizer.decode(prompt).endswith("<|im_start|>user\ndarker?<|im_end|>\n<|im_start|>assistant\n")


def test_bad_settings_fail_clearly(tiny_tokenizer):
    with pytest.raises(TunebookError, match="max_length must be a positive"):
        Encoder(tiny_tokenizer, "internlm2_chat", 0)
    with pytest.raises(TunebookError, match="unknown prompt template"):
        Encoder(tiny_tokenizer, "nope", 10)
