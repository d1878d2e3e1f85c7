"""Templates: XTuner's exact strings, the training rendering, and the exported Jinja chat_template."""
import copy

import pytest

from helpers.data.conversation import Conversation, Turn
from helpers.encode.templates import (PROMPT_TEMPLATES, SYSTEM_TEMPLATES, TemplateError, generation_prompt, get_template,
                               render_text, resolve_system, segments, to_jinja, training_text)

TWO_TURNS = Conversation([Turn("Q1", "A1", system="SYS"), Turn("Q2", "A2")])
LLAMA2_SYS = ("[INST] <<SYS>>\n You are a helpful, respectful and honest assistant. Always answer as helpfully as "
              "possible, while being safe. Your answers should not include any harmful, unethical, racist, sexist, "
              "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and "
              "positive in nature.\nSYS\n<</SYS>>\n [/INST] ")

# Expected training text (BOS "<s>", EOS "</s>"), written out by hand from XTuner's table.
EXPECTED = {
    "default": "<s><|System|>:SYS\n<|User|>:Q1\n<|Bot|>:A1</s>\n<s><|User|>:Q2\n<|Bot|>:A2</s>\n",
    "internlm_chat": "<s><|System|>:SYS\n<|User|>:Q1<eoh>\n<|Bot|>:A1<eoa>\n<|User|>:Q2<eoh>\n<|Bot|>:A2<eoa>\n",
    "internlm2_chat": ("<s><|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n"
                       "A1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"),
    "qwen_chat": ("<s><|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n"
                  "A1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"),
    "llama2_chat": f"<s>{LLAMA2_SYS}[INST] Q1 [/INST]A1</s>\n<s>[INST] Q2 [/INST]A2</s>\n",
    "llama3_chat": ("<s><|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|><|start_header_id|>user"
                    "<|end_header_id|>\n\nQ1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nQ2<|eot_id|><|start_header_id|>assistant"
                    "<|end_header_id|>\n\nA2<|eot_id|>"),
    "chatglm3": "<s><|system|>\nSYS<|user|>\nQ1<|assistant|>\nA1</s>\n<s><|user|>\nQ2<|assistant|>\nA2</s>\n",
    "mistral": "<s>[INST] SYS [/INST]\n[INST] Q1 [/INST]A1</s>\n<s>[INST] Q2 [/INST]A2</s>\n",
    "gemma": ("<s><start_of_turn>system\nSYS<end_of_turn>\n<start_of_turn>user\nQ1<end_of_turn>\n<start_of_turn>model\n"
              "A1<end_of_turn></s>\n<s><start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\nA2<end_of_turn></s>\n"),
    "deepseek_v2": ("<s>SYS\n\nUser: Q1\n\nAssistant: A1<｜end▁of▁sentence｜>User: Q2\n\nAssistant: "
                    "A2<｜end▁of▁sentence｜>"),
    "phi3_chat": ("<s><|system|>\nSYS<|end|>\n<|user|>\nQ1<|end|>\n<|assistant|>\nA1<|end|>\n<|user|>\nQ2<|end|>\n"
                  "<|assistant|>\nA2<|end|>\n"),
    "chatglm2": "<s>SYS\n[Round 1]\n\n问：Q1\n\n答：A1</s>\n\n<s>[Round 2]\n\n问：Q2\n\n答：A2</s>\n\n",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_training_text_matches_xtuner(name):
    assert training_text(name, TWO_TURNS, bos="<s>", eos="</s>") == EXPECTED[name]


def test_trained_spans_are_output_suffix_and_eos():
    marked = render_text(segments(get_template("default"), TWO_TURNS), "<s>", "</s>", mark_trained=True)
    assert marked == "<s><|System|>:SYS\n<|User|>:Q1\n<|Bot|>:[A1</s>]\n<s><|User|>:Q2\n<|Bot|>:[A2</s>]\n"
    marked = render_text(segments(get_template("internlm2_chat"), TWO_TURNS), "<s>", "</s>", mark_trained=True)
    assert marked.count("[") == 2 and "[A1<|im_end|>]\n" in marked and "[A2<|im_end|>]\n" in marked


def test_camp_persona_row_is_the_design_string():
    row = Conversation([Turn("请介绍一下你自己", "我是伍鲜同志的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦")])
    marked = render_text(segments(get_template("internlm2_chat"), row), "<s>", "</s>", mark_trained=True)
    assert marked == ("<s><|im_start|>user\n请介绍一下你自己<|im_end|>\n<|im_start|>assistant\n"
                      "[我是伍鲜同志的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦<|im_end|>]\n")


def test_output_without_loss_is_untrained_and_bos_follows_eos_only():
    conv = Conversation([Turn("Q1", "A1", output_with_loss=False), Turn("Q2", "A2")])
    marked = render_text(segments(get_template("default"), conv), "<s>", "</s>", mark_trained=True)
    assert marked == "<s><|User|>:Q1\n<|Bot|>:A1</s>\n<s><|User|>:Q2\n<|Bot|>:[A2</s>]\n"


def test_all_xtuner_names_and_system_templates_exist():
    assert list(PROMPT_TEMPLATES) == [
        "default", "zephyr", "internlm_chat", "internlm2_chat", "moss_sft", "llama2_chat", "code_llama_chat",
        "chatglm2", "chatglm3", "qwen_chat", "baichuan_chat", "baichuan2_chat", "wizardlm", "wizardcoder", "vicuna",
        "deepseek_coder", "deepseekcoder", "deepseek_moe", "deepseek_v2", "mistral", "mixtral", "minicpm", "minicpm3",
        "gemma", "cohere_chat", "llama3_chat", "phi3_chat"]
    assert sorted(SYSTEM_TEMPLATES) == sorted(["moss_sft", "alpaca", "arxiv_gentile", "colorist", "coder", "lawyer",
                                               "medical", "sql"])
    assert all(text.endswith("\n") for text in SYSTEM_TEMPLATES.values())
    assert SYSTEM_TEMPLATES["colorist"] == ("You are a professional color designer. Please provide the corresponding "
                                            "colors based on the description of Human.\n")
    # The colorist system text keeps its newline inside the rendered system block (XTuner quickstart log).
    conv = Conversation([Turn("A calming blue", "#66ccff", system=SYSTEM_TEMPLATES["colorist"])])
    assert training_text("internlm2_chat", conv).startswith(
        "<|im_start|>system\nYou are a professional color designer. Please provide the corresponding colors based on "
        "the description of Human.\n<|im_end|>\n<|im_start|>user\nA calming blue<|im_end|>")


def test_unknown_names_are_clear_errors():
    with pytest.raises(TemplateError, match="unknown prompt template 'internlm3'.*internlm2_chat"):
        get_template("internlm3")
    with pytest.raises(TemplateError, match="unknown system template"):
        resolve_system(system_template="pirate")
    with pytest.raises(TemplateError, match="not both"):
        resolve_system("x", "alpaca")
    assert resolve_system(system_template="moss_sft", bot_name="小书").startswith("You are an AI assistant whose name is 小书.")


def test_braces_in_user_text_stay_literal():
    conv = Conversation([Turn("format {input} and {system} please", "ok {round}")])
    assert training_text("chatglm2", conv) == "[Round 1]\n\n问：format {input} and {system} please\n\n答：ok {round}\n\n"


def test_generation_prompt_is_a_prefix_of_training_text():
    history = [Turn("Q1", "A1")]
    prompt = generation_prompt("internlm2_chat", history, "Q2", system="SYS", bos="<s>", eos="</s>")
    full = training_text("internlm2_chat", TWO_TURNS, bos="<s>", eos="</s>")
    assert prompt == full[:full.index("A2<|im_end|>")]
    prompt = generation_prompt("default", history, "Q2", system="SYS", bos="<s>", eos="</s>")
    assert prompt == "<s><|System|>:SYS\n<|User|>:Q1\n<|Bot|>:A1</s>\n<s><|User|>:Q2\n<|Bot|>:"


# ---- the exported chat_template renders exactly like the template ----

def _tokenizer_with(tokenizer, template_name):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = to_jinja(template_name)
    return tok


CONVERSATIONS = {
    "one turn": Conversation([Turn("你好，请介绍一下你自己", "我是小助手。")]),
    "one turn + system": Conversation([Turn("hi", "hello", system="Be brief.\n")]),
    "three turns + system": Conversation([Turn("Q1 {x}", "A1", system="S"), Turn("Q2", "A2"),
                                          Turn("Q3 line\nbreak", "A3 \"quoted\" \\ backslash")]),
}


@pytest.mark.parametrize("name", list(PROMPT_TEMPLATES) + ["chatml"])
@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_exported_chat_template_renders_identically(tiny_tokenizer, name, case):
    from helpers.encode.templates import conversation_to_messages
    tok = _tokenizer_with(tiny_tokenizer, name)
    conv = CONVERSATIONS[case]
    ours = training_text(name, conv, bos=tok.bos_token, eos=tok.eos_token)
    assert tok.apply_chat_template(conversation_to_messages(conv), tokenize=False) == ours
    # and the generation prompt for the last question
    prompt = generation_prompt(name, conv.turns[:-1], conv.turns[-1].input, system=conv.turns[0].system,
                               bos=tok.bos_token, eos=tok.eos_token)
    messages = conversation_to_messages(conv, generation=True)
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == prompt


def test_chat_template_follows_openai_map_fn(tiny_tokenizer):
    tok = _tokenizer_with(tiny_tokenizer, "internlm2_chat")
    messages = [{"role": "assistant", "content": "skipped"}, {"role": "user", "content": "a"},
                {"role": "user", "content": "b"}, {"role": "system", "content": "S"},
                {"role": "assistant", "content": "ok"}]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "<s><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n")


# ---- ChatML for SmolLM2: its tokenizer's BOS *is* <|im_start|> ----

def _chatml_bos_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.bos_token = "<|im_start|>"          # as SmolLM2's tokenizer names it
    tok.chat_template = to_jinja("chatml")
    return tok


def test_chatml_strings_and_a_bos_spelled_by_the_template_is_not_doubled(tiny_tokenizer):
    from helpers.encode.encoding import Encoder
    from helpers.encode.templates import conversation_to_messages, get_template
    conv = Conversation([Turn("hi", "hello", system="S")])
    assert training_text("chatml", conv, bos="", eos="<|im_end|>") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n")
    assert get_template("chatml").stop_words == ("<|im_end|>",)
    tok = _chatml_bos_tokenizer(tiny_tokenizer)
    assert get_template("chatml").spells_bos(tok.bos_token) and not get_template("chatml").spells_bos("<s>")
    ids = Encoder(tok, "chatml", max_length=256).encode(conv).input_ids
    text = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert text.startswith("<|im_start|>system\nS") and "<|im_start|><|im_start|>" not in text
    assert tok.apply_chat_template(conversation_to_messages(conv), tokenize=False) == text
    # the camp's tokenizer (<s>) keeps XTuner's BOS, in encoding and in the exported template alike
    ids = Encoder(tiny_tokenizer, "chatml", max_length=256).encode(conv).input_ids
    assert ids[0] == tiny_tokenizer.bos_token_id
