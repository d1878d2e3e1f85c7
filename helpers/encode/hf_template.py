"""Template mode `hf`: format with the tokenizer's own chat_template, and still train only on answers.

Hugging Face templates do not mark which characters are the assistant's. We find each answer's span by
rendering the conversation up to that answer twice: with the generation prompt (P) and with the answer
(Q); the answer span is Q[len(P):] minus trailing whitespace (the turn separator, untrained as in XTuner).
That needs each rendering to be a prefix of the next; templates that rewrite history (some reasoning
models drop earlier thoughts) break it, and we say so instead of training on a wrong mask.
"""
from __future__ import annotations

from helpers.data.conversation import Conversation
from helpers.errors import TunebookError
from helpers.encode.templates import conversation_to_messages

IGNORE_INDEX = -100


def _render(tokenizer, messages: list[dict], generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def answer_spans(tokenizer, conversation: Conversation) -> tuple[str, list[tuple[int, int, bool]]]:
    """Rendered text and (start, end, trained) character spans of every answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise TunebookError("template 'hf' needs a tokenizer with a chat_template; this one has none. "
                            "Pick a named template instead (python -m helpers templates list)")
    messages = conversation_to_messages(conversation)
    full = _render(tokenizer, messages, generation=False)
    spans = []
    assistant_turns = iter(conversation.turns)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        turn = next(assistant_turns)
        prompt = _render(tokenizer, messages[:index], generation=True)
        with_answer = _render(tokenizer, messages[:index + 1], generation=False)
        if not (with_answer.startswith(prompt) and full.startswith(with_answer)):
            raise TunebookError("this tokenizer's chat_template renders earlier turns differently once later turns "
                                "are added, so answer spans cannot be located for masking; use a named template")
        end = len(prompt) + len(with_answer[len(prompt):].rstrip())
        spans.append((len(prompt), end, turn.output_with_loss))
    return full, spans


def encode_with_chat_template(tokenizer, conversation: Conversation, controls=frozenset()):
    """(input_ids, labels, content_had_special_text) under the tokenizer's chat_template."""
    text, spans = answer_spans(tokenizer, conversation)
    encoded, special = _encode(tokenizer, text, conversation, controls)
    ids, labels = [], []
    for token_id, (start, _end) in encoded:
        trained = any(a <= start < b and keep for a, b, keep in spans)
        ids.append(token_id)
        labels.append(token_id if trained else IGNORE_INDEX)
    return ids, labels, special


def prompt_ids_with_chat_template(tokenizer, conversation: Conversation, controls=frozenset()) -> list[int]:
    """The generation prompt's ids, encoded as training encodes (message text that spells a control token stays
    plain characters)."""
    text = _render(tokenizer, conversation_to_messages(conversation, generation=True), generation=True)
    return [token_id for token_id, _ in _encode(tokenizer, text, conversation, controls, generation=True)[0]]


def _encode(tokenizer, text: str, conversation: Conversation, controls, generation: bool = False):
    """((id, (start, end)) pairs of `text`, whether a message's text reached a control token). One tokenizer call,
    exactly the tokenizer's ids, unless a control token lies inside a message's text (spelled as itself, or another
    way the tokenizer's normalizer maps to one): then each message text is encoded as plain characters."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    pairs = list(zip(encoded["input_ids"], encoded["offset_mapping"]))
    regions = _regions(text, conversation_to_messages(conversation, generation=generation))
    contents = [(a, b) for a, b, protect in regions if protect]
    found = any(start < b and end > a for token_id, (start, end) in pairs if token_id in controls
                for a, b in contents)
    return (_encode_protecting_contents(tokenizer, text, regions, controls), True) if found else (pairs, False)


def _regions(text: str, messages: list[dict]) -> list[tuple[int, int, bool]]:
    """`text` cut into (start, end, is a message's content) regions, locating each content in order."""
    regions, cursor = [], 0
    for message in messages:
        content = message["content"]
        at = text.find(content, cursor) if content else -1
        if at < 0:
            continue
        regions.append((cursor, at, False))
        regions.append((at, at + len(content), True))
        cursor = at + len(content)
    regions.append((cursor, len(text), False))
    return regions


def _encode_protecting_contents(tokenizer, text: str, regions: list[tuple[int, int, bool]], controls):
    from helpers.encode.encoding import plain_text_ids
    out = []
    for start, end, protect in regions:
        if end <= start:
            continue
        if protect:  # a content string: every id in it belongs to its span
            out += [(token_id, (start, end)) for token_id in plain_text_ids(tokenizer, text[start:end], controls)]
            continue
        enc = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True)
        out += [(token_id, (a + start, b + start)) for token_id, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])]
    return out
