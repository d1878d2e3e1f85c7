"""Prompt templates: XTuner's PROMPT_TEMPLATE / SYSTEM_TEMPLATE, exactly, plus what XTuner lacks.

One `PromptTemplate` is used for training text, the in-training chat samples, chat and evaluation, and
it is exported as a Jinja `chat_template` so a saved tokenizer formats prompts the same way in any tool.

Rendering produces `Segment`s (BOS / template text / content / EOS, each trained or not); encoding
(`helpers.encode.encoding`) and display (`render_text`) both consume the same segments, so what is shown is what
is trained. Semantics follow XTuner v0.1.21's xtuner/utils/templates.py, dataset/map_fns/template_map_fn.py and
dataset/utils.py encode_fn: turn = [BOS] SYSTEM? INSTRUCTION [output SUFFIX] [EOS unless SUFFIX_AS_EOS] SEP.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from helpers.data.system_prompts import SYSTEM_TEMPLATES
from helpers.data.conversation import Conversation, Turn
from helpers.errors import TunebookError


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    instruction: str                  # holds {input} (and {round} for chatglm2); ends where the answer starts
    system: str | None = None         # holds {system}; None = the template has no system slot
    suffix: str = ""                  # appended to every answer and trained (e.g. <|im_end|>)
    suffix_as_eos: bool = False       # True: the suffix replaces the tokenizer EOS (and no BOS follows)
    sep: str = ""                     # after each turn, never trained
    stop_words: tuple[str, ...] = ()  # generation stops on these strings (chat, evaluation)

    @property
    def needs_eos(self) -> bool:
        return not self.suffix_as_eos

    def spells_bos(self, bos_token: str | None) -> bool:
        """Whether every prompt of this template already opens with the tokenizer's BOS spelling.

        ChatML tokenizers such as SmolLM2's name `<|im_start|>` their BOS: XTuner's rule (BOS before each
        prompt) would then write `<|im_start|><|im_start|>user`. Such a BOS is left out; every other pair of
        template and tokenizer (InternLM2's `<s>`, Llama 3's `<|begin_of_text|>`, ...) keeps XTuner's BOS."""
        openings = [self.instruction] + ([self.system] if self.system is not None else [])
        return bool(bos_token) and all(text.startswith(bos_token) for text in openings)

    def control_tokens(self) -> list[str]:
        """Spellings in this template that a chat tokenizer registers as single special tokens."""
        found = []
        for text in (self.system or "", self.instruction, self.suffix, *self.stop_words):
            for token in _scan_control_tokens(text):
                if token not in found:
                    found.append(token)
        return found


# Spellings that chat tokenizers register as single control tokens: <|...|>, <..._of_turn>, <reserved_N>,
# DeepSeek's full-width bars. The default/internlm_chat role tags (<|User|>, <|Bot|>, ...) were always plain text.
_CONTROL_TOKEN = re.compile(r"<(?:\|[A-Za-z_]+\||[a-z]+_of_turn|reserved_\d+|｜[^<>｜\s]+｜)>")
_PLAIN_TAGS = {"<|System|>", "<|User|>", "<|Bot|>", "<|Human|>"}


def _scan_control_tokens(text: str) -> list[str]:
    return [m for m in _CONTROL_TOKEN.findall(text) if m not in _PLAIN_TAGS]


_LLAMA2_SYSTEM = ("[INST] <<SYS>>\n You are a helpful, respectful and honest assistant. Always answer as helpfully "
                  "as possible, while being safe. Your answers should not include any harmful, unethical, racist, "
                  "sexist, toxic, dangerous, or illegal content. Please ensure that your responses are socially "
                  "unbiased and positive in nature.\n{system}\n<</SYS>>\n [/INST] ")
_VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
                  "detailed, and polite answers to the user's questions. {system}\n ")
_DEEPSEEK_CODER_SYSTEM = ("You are an AI programming assistant, utilizing the DeepSeek Coder model, developed by "
                          "DeepSeekCompany, and you only answer questions related to computer science. For politically "
                          "sensitive questions, security and privacy issues, and other non-computer science questions, "
                          "you will refuse to answer. {system}\n")
_CHATML_SYSTEM = "<|im_start|>system\n{system}<|im_end|>\n"
_CHATML_INSTRUCTION = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"

# All 27 names of XTuner v0.2.0's PROMPT_TEMPLATE, in its order, strings verbatim.
PROMPT_TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in [
    PromptTemplate("default", system="<|System|>:{system}\n", instruction="<|User|>:{input}\n<|Bot|>:", sep="\n"),
    PromptTemplate("zephyr", system="<|system|>\n{system}\n", instruction="<|user|>\n{input}\n<|assistant|>\n",
                   sep="\n"),
    PromptTemplate("internlm_chat", system="<|System|>:{system}\n", instruction="<|User|>:{input}<eoh>\n<|Bot|>:",
                   suffix="<eoa>", suffix_as_eos=True, sep="\n", stop_words=("<eoa>",)),
    PromptTemplate("internlm2_chat", system=_CHATML_SYSTEM, instruction=_CHATML_INSTRUCTION, suffix="<|im_end|>",
                   suffix_as_eos=True, sep="\n", stop_words=("<|im_end|>",)),
    PromptTemplate("moss_sft", system="{system}\n", instruction="<|Human|>: {input}<eoh>\n", sep="\n",
                   stop_words=("<eoc>", "<eom>")),
    PromptTemplate("llama2_chat", system=_LLAMA2_SYSTEM, instruction="[INST] {input} [/INST]", sep="\n"),
    PromptTemplate("code_llama_chat", system="{system}\n", instruction="[INST] {input} [/INST]"),
    PromptTemplate("chatglm2", system="{system}\n", instruction="[Round {round}]\n\n问：{input}\n\n答：", sep="\n\n"),
    PromptTemplate("chatglm3", system="<|system|>\n{system}", instruction="<|user|>\n{input}<|assistant|>\n",
                   sep="\n"),
    PromptTemplate("qwen_chat", system=_CHATML_SYSTEM, instruction=_CHATML_INSTRUCTION, suffix="<|im_end|>",
                   suffix_as_eos=True, sep="\n", stop_words=("<|im_end|>", "<|endoftext|>")),
    PromptTemplate("baichuan_chat", system="{system}\n", instruction="<reserved_102>{input}<reserved_103>", sep="\n"),
    PromptTemplate("baichuan2_chat", system="{system}\n", instruction="<reserved_106>{input}<reserved_107>", sep="\n"),
    PromptTemplate("wizardlm", system=_VICUNA_SYSTEM, instruction="USER: {input} ASSISTANT:", sep="\n"),
    PromptTemplate("wizardcoder", system=("Below is an instruction that describes a task. Write a response that "
                                          "appropriately completes the request.\n\n{system}\n "),
                   instruction="### Instruction:\n{input}\n\n### Response:", sep="\n\n"),
    PromptTemplate("vicuna", system=_VICUNA_SYSTEM, instruction="USER: {input} ASSISTANT:", sep="\n"),
    PromptTemplate("deepseek_coder", system=_DEEPSEEK_CODER_SYSTEM,
                   instruction="### Instruction:\n{input}\n### Response:\n", sep="\n"),
    # Deprecated alias kept by XTuner ("TODO: deprecation, v0.2.0").
    PromptTemplate("deepseekcoder", system=_DEEPSEEK_CODER_SYSTEM,
                   instruction="### Instruction:\n{input}\n### Response:\n", sep="\n"),
    PromptTemplate("deepseek_moe", system="[INST] {system} [/INST]\n", instruction="[INST] {input} [/INST]", sep="\n"),
    PromptTemplate("deepseek_v2", system="{system}\n\n", instruction="User: {input}\n\nAssistant: ",
                   suffix="<｜end▁of▁sentence｜>", suffix_as_eos=True, stop_words=("<｜end▁of▁sentence｜>",)),
    PromptTemplate("mistral", system="[INST] {system} [/INST]\n", instruction="[INST] {input} [/INST]", sep="\n"),
    PromptTemplate("mixtral", system="[INST] {system} [/INST]\n", instruction="[INST] {input} [/INST]", sep="\n"),
    PromptTemplate("minicpm", instruction="<用户> {input} <AI>", sep="\n"),
    PromptTemplate("minicpm3", system=_CHATML_SYSTEM, instruction=_CHATML_INSTRUCTION, suffix="<|im_end|>",
                   suffix_as_eos=True, sep="\n", stop_words=("<|im_end|>", "<|endoftext|>")),
    # Gemma is the one template with a suffix that does not replace EOS: answers end <end_of_turn></s>.
    PromptTemplate("gemma", system="<start_of_turn>system\n{system}<end_of_turn>\n",
                   instruction="<start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model\n",
                   suffix="<end_of_turn>", suffix_as_eos=False, sep="\n", stop_words=("<end_of_turn>",)),
    PromptTemplate("cohere_chat", system="<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{system}<|END_OF_TURN_TOKEN|>",
                   instruction=("<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{input}<|END_OF_TURN_TOKEN|>"
                                "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"),
                   suffix="<|END_OF_TURN_TOKEN|>", suffix_as_eos=True, stop_words=("<|END_OF_TURN_TOKEN|>",)),
    PromptTemplate("llama3_chat", system="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
                   instruction=("<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|>"
                                "<|start_header_id|>assistant<|end_header_id|>\n\n"),
                   suffix="<|eot_id|>", suffix_as_eos=True, stop_words=("<|eot_id|>",)),
    PromptTemplate("phi3_chat", system="<|system|>\n{system}<|end|>\n", instruction="<|user|>\n{input}<|end|>\n<|assistant|>\n",
                   suffix="<|end|>", suffix_as_eos=True, sep="\n", stop_words=("<|end|>",)),
]}

# Templates tunebook adds beside XTuner's (same semantics). "chatml" is the plain ChatML of SmolLM2 and many chat
# models: the same strings as internlm2_chat, under the name a learner looks for; its only stop word is <|im_end|>.
EXTRA_TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in [
    PromptTemplate("chatml", system=_CHATML_SYSTEM, instruction=_CHATML_INSTRUCTION, suffix="<|im_end|>",
                   suffix_as_eos=True, sep="\n", stop_words=("<|im_end|>",)),
]}
TEMPLATES: dict[str, PromptTemplate] = {**PROMPT_TEMPLATES, **EXTRA_TEMPLATES}

# XTuner's SYSTEM_TEMPLATE texts live with the data (a dataset format may name one): helpers.data.system_prompts.

# The pseudo-names "hf" and "auto", the default template and the resolved object: helpers.encode.chat_format.


class TemplateError(TunebookError, ValueError):
    """A template or system-template name that does not exist, or a conversation it cannot render."""


def get_template(name: str) -> PromptTemplate:
    if isinstance(name, PromptTemplate):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise TemplateError(f"unknown prompt template {name!r}; choose one of: {', '.join(TEMPLATES)} "
                            "(or 'hf' to use the tokenizer's own chat_template). "
                            "List them with: python -m helpers templates list") from None


def resolve_system(system: str | None = None, system_template: str | None = None, **fields: str) -> str:
    """The system text from either a literal or a SYSTEM_TEMPLATE name (e.g. 'colorist'), never both."""
    if system and system_template:
        raise TemplateError("give either a system text or a system template name, not both")
    if not system_template:
        return system or ""
    if system_template not in SYSTEM_TEMPLATES:
        raise TemplateError(f"unknown system template {system_template!r}; choose one of: {', '.join(SYSTEM_TEMPLATES)}")
    text = SYSTEM_TEMPLATES[system_template]
    return text.format(**fields) if fields else text


# ---- segments: the one rendering both encoding and display use ----

@dataclass(frozen=True)
class Segment:
    kind: str            # "bos" | "eos" | "template" | "content" | "image" (LLaVA: the picture's tokens)
    text: str = ""       # empty for bos/eos (the tokenizer decides their spelling)
    trained: bool = False
    piece: int = 0       # XTuner encodes input / output / sep pieces separately; same number = same piece
    answer: bool = False  # part of an assistant answer (output, suffix, EOS), trained or not


@dataclass
class _Pieces:
    segments: list[Segment] = field(default_factory=list)
    piece: int = 0

    def start_piece(self):
        self.piece += 1

    def add(self, kind: str, text: str = "", trained: bool = False, answer: bool = False):
        if kind in ("bos", "eos") or text:
            self.segments.append(Segment(kind, text, trained, self.piece, answer))


def _fill(pieces: _Pieces, pattern: str, values: dict[str, str], content_keys: set[str]):
    """Append `pattern` with placeholders replaced, marking substituted user text as content.

    XTuner uses str.format; this walks the same placeholders so that braces inside user data stay literal
    and we know which characters came from the data (they must never become control tokens).
    """
    i = 0
    while i < len(pattern):
        start = pattern.find("{", i)
        if start == -1:
            pieces.add("template", pattern[i:])
            break
        end = pattern.find("}", start)
        key = pattern[start + 1:end]
        if end == -1 or key not in values:
            raise TemplateError(f"template text has an unknown placeholder: {pattern!r}")
        pieces.add("template", pattern[i:start])
        pieces.add("content" if key in content_keys else "template", values[key])
        i = end + 1


def _add_prompt(pieces: _Pieces, template: PromptTemplate, turn: Turn, round_number: int, bos: bool):
    pieces.start_piece()
    if bos:
        pieces.add("bos")
    if turn.system and template.system is not None:
        _fill(pieces, template.system, {"system": turn.system}, {"system"})
    _fill(pieces, template.instruction, {"input": turn.input, "round": str(round_number)}, {"input"})


def segments(template: PromptTemplate, conversation: Conversation, *, generation: bool = False) -> list[Segment]:
    """Segments of a conversation as XTuner trains it.

    generation=True renders the last turn only up to where the model answers (its output is ignored):
    the prompt is then exactly a prefix of the training text, so chat sees what training saw.
    """
    pieces = _Pieces()
    if conversation.pretrain:
        # XTuner pretrain_map_fn: BOS + raw text, all trained, no template, no EOS.
        for turn in conversation.turns:
            pieces.start_piece()
            pieces.add("bos")
            pieces.add("content", turn.output, trained=True)
        return pieces.segments
    needs_bos = True
    last = len(conversation.turns) - 1
    for index, turn in enumerate(conversation.turns):
        _add_prompt(pieces, template, turn, index + 1, needs_bos)
        if generation and index == last:
            break
        trained = turn.output_with_loss
        pieces.start_piece()
        pieces.add("content", turn.output, trained, answer=True)
        pieces.add("template", template.suffix, trained, answer=True)
        needs_bos = template.needs_eos
        if needs_bos:
            pieces.add("eos", trained=trained, answer=True)
        pieces.start_piece()
        pieces.add("template", template.sep)
    return pieces.segments


def render_text(segs: list[Segment], bos: str | None = None, eos: str | None = None, mark_trained: bool = False,
                open_mark: str = "[", close_mark: str = "]") -> str:
    """Join segments into text. BOS/EOS are spelled with the given strings, or left out when None."""
    out, inside = [], False
    for seg in segs:
        text = {"bos": bos, "eos": eos}.get(seg.kind, seg.text) if seg.kind in ("bos", "eos") else seg.text
        if text is None:
            continue
        if mark_trained and seg.trained != inside:
            out.append(open_mark if seg.trained else close_mark)
            inside = seg.trained
        out.append(text)
    if mark_trained and inside:
        out.append(close_mark)
    return "".join(out)


def training_text(template: PromptTemplate | str, conversation: Conversation, bos: str | None = None,
                  eos: str | None = None) -> str:
    return render_text(segments(get_template(template), conversation), bos, eos)


def generation_prompt(template: PromptTemplate | str, history: list[Turn], question: str, system: str = "",
                      bos: str | None = None, eos: str | None = None) -> str:
    """The prompt for the next answer: earlier turns as trained, then the new question's instruction.

    The system text goes on the first turn (as in training data and in xtuner chat).
    """
    turns = [Turn(input=t.input, output=t.output) for t in history] + [Turn(input=question, output="")]
    if system:
        turns[0] = Turn(input=turns[0].input, output=turns[0].output, system=system)
    return render_text(segments(get_template(template), Conversation(turns), generation=True), bos, eos)


# ---- Jinja export ----

def _jinja_literal(text: str) -> str:
    # Jinja string literals are unescaped with Python's unicode-escape, so JSON escaping of quotes, backslashes
    # and control characters round-trips; ensure_ascii=False keeps astral characters out of surrogate pairs.
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def _jinja_fill(pattern: str, variables: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(pattern):
        start = pattern.find("{", i)
        if start == -1:
            out.append(_jinja_literal(pattern[i:]))
            break
        end = pattern.find("}", start)
        if start > i:
            out.append(_jinja_literal(pattern[i:start]))
        out.append("{{ " + variables[pattern[start + 1:end]] + " }}")
        i = end + 1
    return "".join(out)


def to_jinja(template: PromptTemplate | str) -> str:
    """A Hugging Face `chat_template` that renders messages exactly as this template trains them.

    Messages follow XTuner's openai_map_fn: leading assistant messages are skipped; a system message applies
    to the next answered turn; consecutive user messages are joined without separator; BOS where encoding puts one (`bos_token`), EOS after answers
    when the template does not use its suffix as EOS. A trailing user message is rendered with the assistant
    opening, because XTuner's INSTRUCTION fuses both; `add_generation_prompt` is accepted for compatibility.
    """
    t = get_template(template)
    system_part = ""
    if t.system is not None:
        system_part = "{% if ns.system %}" + _jinja_fill(t.system, {"system": "ns.system"}) + "{% endif %}"
    # The same BOS rule as encoding (PromptTemplate.spells_bos), decided by the tokenizer the template is saved in.
    openings = [t.instruction] + ([t.system] if t.system is not None else [])
    spelled = " and ".join(f"not {json.dumps(o, ensure_ascii=False)}.startswith(bos_token)" for o in openings)
    prompt = ("{% if ns.bos and bos_token and " + spelled + " %}{{ bos_token }}{% endif %}" + system_part
              + _jinja_fill(t.instruction, {"input": "ns.input", "round": "ns.round"}))
    answer = ("{{ message['content'] }}" + (_jinja_literal(t.suffix) if t.suffix else "")
              + ("{{ eos_token or '' }}" if t.needs_eos else "") + (_jinja_literal(t.sep) if t.sep else ""))
    return (
        "{% set ns = namespace(bos=true, system='', input='', round=0, open=false, started=false) %}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{% set ns.system = message['content'] %}{% set ns.started = true %}"
        "{% elif message['role'] == 'user' %}{% set ns.input = ns.input + message['content'] %}"
        "{% set ns.open = true %}{% set ns.started = true %}"
        "{% elif message['role'] == 'assistant' %}"
        "{% if ns.started %}{% set ns.round = ns.round + 1 %}" + prompt + answer
        + "{% set ns.bos = " + ("true" if t.needs_eos else "false") + " %}"
        "{% set ns.system = '' %}{% set ns.input = '' %}{% set ns.open = false %}{% endif %}"
        "{% endif %}"
        "{% endfor %}"
        "{% if ns.open %}{% set ns.round = ns.round + 1 %}" + prompt + "{% endif %}"
    )


def conversation_to_messages(conversation: Conversation, generation: bool = False) -> list[dict]:
    """OpenAI-style messages for a conversation (system message before the turn it belongs to)."""
    messages = []
    last = len(conversation.turns) - 1
    for index, turn in enumerate(conversation.turns):
        if turn.system:
            messages.append({"role": "system", "content": turn.system})
        messages.append({"role": "user", "content": turn.input})
        if not (generation and index == last):
            messages.append({"role": "assistant", "content": turn.output})
    return messages


def describe(template: PromptTemplate) -> str:
    """One line per field, for `templates list` and notebooks."""
    fields = {"SYSTEM": template.system, "INSTRUCTION": template.instruction, "SUFFIX": template.suffix or None,
              "SUFFIX_AS_EOS": template.suffix_as_eos, "SEP": template.sep or None,
              "STOP_WORDS": list(template.stop_words) or None}
    return "\n".join(f"  {key:<14}{json.dumps(value, ensure_ascii=False)}" for key, value in fields.items()
                     if value is not None)
