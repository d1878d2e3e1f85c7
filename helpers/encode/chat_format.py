"""One resolved prompt format: the object every stage after resolution takes instead of a template name.

A template is chosen once (an XTuner name, tunebook's `chatml`, or `hf` for the tokenizer's own chat_template;
`auto` is resolved against the model folder by helpers.models.find.resolve_template) and gives everything
downstream needs: the training segments, the stop words, the Jinja chat_template a saved tokenizer carries, the
answer spans a loss mask is built from, and the dict the training record stores. Nothing downstream asks "is this
the hf pseudo-template?" again; the object knows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from helpers.data.conversation import Conversation
from helpers.encode.templates import PromptTemplate, Segment, TemplateError, get_template, segments, to_jinja

HF_TEMPLATE = "hf"         # pseudo-name: the tokenizer's own chat_template renders (helpers.encode.hf_template)
AUTO_TEMPLATE = "auto"     # pseudo-name: the model's own template, resolved with the model folder before use
DEFAULT_TEMPLATE = "internlm2_chat"  # the camp's; the one default for models without a known template of their own


@dataclass(frozen=True)
class ChatFormat:
    name: str                          # a template name (python -m helpers templates list), or "hf"
    prompt: PromptTemplate | None = None  # the template's strings; None = the tokenizer's own chat_template

    def __str__(self) -> str:
        return self.name

    @property
    def uses_tokenizer_template(self) -> bool:
        return self.prompt is None

    @property
    def stop_words(self) -> tuple[str, ...]:
        """Generation stops on these strings (the tokenizer's EOS is added by helpers.models.generation)."""
        return () if self.prompt is None else self.prompt.stop_words

    def jinja(self, tokenizer=None) -> str:
        """The chat_template that renders messages exactly as this format trains them."""
        if self.prompt is not None:
            return to_jinja(self.prompt)
        own = getattr(tokenizer, "chat_template", None)
        if not own:
            raise TemplateError("template 'hf' uses the tokenizer's own chat_template, and this tokenizer has none; "
                                "pick a named template instead (python -m helpers templates list)")
        return own

    def apply_to(self, tokenizer):
        """Make the tokenizer carry this format, so a saved tokenizer formats prompts as trained in any tool."""
        tokenizer.chat_template = self.jinja(tokenizer)
        return tokenizer

    def segments(self, conversation: Conversation, *, generation: bool = False) -> list[Segment]:
        if self.prompt is None:
            raise TemplateError("template 'hf' renders with a tokenizer's chat_template: pass a tokenizer")
        return segments(self.prompt, conversation, generation=generation)

    def answer_spans(self, tokenizer, conversation: Conversation) -> tuple[str, list[tuple[int, int, bool]]]:
        """The rendered text and the (start, end, trained) character span of every answer (suffix included)."""
        if self.prompt is None:
            from helpers.encode.hf_template import answer_spans
            return answer_spans(tokenizer, conversation)
        bos = None if self.prompt.spells_bos(tokenizer.bos_token) else tokenizer.bos_token
        text, spans, cursor, previous = [], [], 0, None
        for seg in self.segments(conversation):
            piece = ({"bos": bos, "eos": tokenizer.eos_token}[seg.kind] if seg.kind in ("bos", "eos") else seg.text) or ""
            if seg.answer and previous is not None and previous.answer and previous.piece == seg.piece:
                spans[-1][1] += len(piece)  # the suffix and EOS after an answer belong to it
            elif seg.answer:
                spans.append([cursor, cursor + len(piece), seg.trained])
            text.append(piece)
            cursor += len(piece)
            previous = seg
        return "".join(text), [tuple(span) for span in spans]

    def record(self) -> dict:
        """What tunebook.json stores: the name and, for named templates, every string (see from_record)."""
        if self.prompt is None:
            return {"name": self.name}
        return {"name": self.name, **{k: v for k, v in dataclasses.asdict(self.prompt).items() if k != "name"}}


def chat_format(template: ChatFormat | PromptTemplate | str | None = None) -> ChatFormat:
    """The format for a template name (None = the one default). 'auto' needs the model folder first."""
    if isinstance(template, ChatFormat):
        return template
    if isinstance(template, PromptTemplate):
        return ChatFormat(template.name, template)
    name = DEFAULT_TEMPLATE if template is None else template
    if name == HF_TEMPLATE:
        return ChatFormat(HF_TEMPLATE)
    if name == AUTO_TEMPLATE:
        raise TemplateError("template 'auto' means the model's own; resolve it with the model folder "
                            "(helpers.models.find.resolve_template(name, model_dir))")
    return ChatFormat(name, get_template(name))


def check_name(name: str) -> None:
    """Raise TemplateError for a name that is neither a template nor a pseudo-name (auto, hf)."""
    if name != AUTO_TEMPLATE:
        chat_format(name)


def from_record(record: dict | None) -> ChatFormat | None:
    """The format a training record names; its stored strings win, so a record outlives a renamed template."""
    stored = (record or {}).get("template") or {}
    name = stored.get("name")
    if not name:
        return None
    fields = {f.name for f in dataclasses.fields(PromptTemplate)} - {"name"}
    if name == HF_TEMPLATE or not fields <= stored.keys():
        return chat_format(name)
    values = {key: stored[key] for key in fields}
    values["stop_words"] = tuple(values["stop_words"])
    return ChatFormat(name, PromptTemplate(name, **values))
