"""The one resolved template object: answer spans, the record round trip, pseudo-names, the data-cache key."""
import copy
import dataclasses

import pytest

from helpers.data.conversation import Conversation, Turn
from helpers.encode.chat_format import ChatFormat, chat_format, check_name, from_record
from helpers.encode.templates import PROMPT_TEMPLATES, TemplateError, training_text

CONVERSATIONS = {
    "one turn": Conversation([Turn("你好", "我是小助手。")]),
    "system + three turns, middle untrained": Conversation([
        Turn("Q1 {x}", "A1", system="S"), Turn("Q2", "A2", output_with_loss=False), Turn("Q3", "A3 \"q\" \\")]),
}


@pytest.mark.parametrize("name", list(PROMPT_TEMPLATES) + ["chatml"])
@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_named_answer_spans_are_the_ones_hf_mode_finds_in_the_exported_template(tiny_tokenizer, name, case):
    """Two independent span finders (segments vs. rendering prefixes of the exported Jinja) agree on every template."""
    conversation = CONVERSATIONS[case]
    named = chat_format(name)
    tokenizer = named.apply_to(copy.deepcopy(tiny_tokenizer))
    text, spans = named.answer_spans(tokenizer, conversation)
    hf_text, hf_spans = chat_format("hf").answer_spans(tokenizer, conversation)
    assert text == hf_text == training_text(name, conversation, bos="<s>", eos="</s>")
    assert spans == hf_spans
    suffix = named.prompt.suffix + ("</s>" if named.prompt.needs_eos else "")
    assert [text[a:b] for a, b, _ in spans] == [t.output + suffix for t in conversation.turns]
    assert [trained for _, _, trained in spans] == [t.output_with_loss for t in conversation.turns]


def test_record_round_trip_and_stored_strings_win():
    fmt = chat_format("qwen_chat")
    assert from_record({"template": fmt.record()}) == fmt
    # a record written by a tunebook whose template had other strings keeps training's strings
    edited = dataclasses.replace(fmt.prompt, suffix="<|end|>", stop_words=("<|end|>",))
    back = from_record({"template": ChatFormat("qwen_chat", edited).record()})
    assert back.prompt == edited and back.stop_words == ("<|end|>",)
    # a name this version no longer knows still loads from its strings
    assert from_record({"template": {**fmt.record(), "name": "old_name"}}).prompt.instruction == fmt.prompt.instruction
    assert from_record({"template": {"name": "hf"}}) == ChatFormat("hf")
    assert from_record({"template": {"name": "internlm2_chat"}}) == chat_format("internlm2_chat")
    assert from_record(None) is None and from_record({}) is None


def test_pseudo_names_and_unknown_names():
    assert chat_format(None).name == "internlm2_chat"  # the one default
    assert chat_format("hf").uses_tokenizer_template and chat_format("hf").stop_words == ()
    check_name("auto")
    check_name("hf")
    with pytest.raises(TemplateError, match="resolve_template"):
        chat_format("auto")
    with pytest.raises(TemplateError, match="unknown prompt template 'internlm3_chat'"):
        check_name("internlm3_chat")
    assert chat_format(chat_format("gemma")) == chat_format(PROMPT_TEMPLATES["gemma"]) == chat_format("gemma")


def test_hf_needs_a_tokenizer_with_a_chat_template(tiny_tokenizer):
    bare = copy.deepcopy(tiny_tokenizer)
    bare.chat_template = None
    with pytest.raises(TemplateError, match="has none"):
        chat_format("hf").apply_to(bare)
    with pytest.raises(TemplateError, match="pass a tokenizer"):
        chat_format("hf").segments(CONVERSATIONS["one turn"])
    assert chat_format("hf").jinja(tiny_tokenizer) == tiny_tokenizer.chat_template


def test_data_cache_key_follows_the_template_strings_not_only_its_name(tiny_tokenizer, tmp_path):
    from helpers.train.data_cache import data_key
    data = tmp_path / "d.jsonl"
    data.write_text('{"conversation": [{"input": "q", "output": "a"}]}\n', encoding="utf-8")
    fmt = chat_format("qwen_chat")
    edited = ChatFormat("qwen_chat", dataclasses.replace(fmt.prompt, sep="\n\n"))
    keys = {data_key(str(data), "auto", f, 512, "", tiny_tokenizer) for f in (fmt, edited)}
    assert len(keys) == 2
    assert data_key(str(data), "auto", fmt, 512, "", tiny_tokenizer) == data_key(str(data), "auto", chat_format(
        "qwen_chat"), 512, "", tiny_tokenizer)
