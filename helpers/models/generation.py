"""Answer a question with exactly the training template: used by in-training samples, chat and evaluation.

The prompt is the training rendering of the history plus the new question's instruction (a prefix of what
training saw), encoded by the same Encoder; generation stops at the tokenizer's EOS and at the template's
STOP_WORDS, and stop words never reach the user.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from helpers.data.conversation import Conversation, Turn
from helpers.encode.encoding import Encoder, pad_token_id
from helpers.encode.chat_format import ChatFormat, chat_format


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.1        # XTuner chat defaults; 0 = greedy
    top_p: float = 0.75
    top_k: int = 40
    repetition_penalty: float = 1.0
    max_new_tokens: int = 2048

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


GREEDY = Sampling(temperature=0.0)


def stop_words(template: ChatFormat | str, tokenizer) -> list[str]:
    words = list(chat_format(template).stop_words)
    if tokenizer.eos_token and tokenizer.eos_token not in words:
        words.append(tokenizer.eos_token)
    return words


def stop_token_ids(template: ChatFormat | str, tokenizer) -> list[int]:
    """EOS plus every stop word that is a single token (multi-token ones are matched as strings)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for word in stop_words(template, tokenizer):
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


def text_stop_words(template: ChatFormat | str, tokenizer) -> list[str]:
    """The stop words that are more than one token: matched in the generated text (single-token ones stop
    generation by id, stop_token_ids, and being control tokens are never shown)."""
    return [w for w in stop_words(template, tokenizer) if len(tokenizer.encode(w, add_special_tokens=False)) > 1]


def cut_at_stop(text: str, words: list[str]) -> str:
    """Text before the first stop word (the stop word itself is never shown)."""
    cut = len(text)
    for word in words:
        at = text.find(word)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def prompt_ids(tokenizer, template: ChatFormat | str, history: list[Turn], question: str, system: str = "") -> list[int]:
    turns = [Turn(t.input, t.output) for t in history] + [Turn(question, "")]
    encoder = Encoder(tokenizer, template, max_length=10**9, system=system)
    return encoder.prompt_ids(Conversation(turns))


def generation_kwargs(template: ChatFormat | str, tokenizer, sampling: Sampling) -> dict:
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, eos_token_id=stop_token_ids(template, tokenizer),
                  pad_token_id=pad_token_id(tokenizer),
                  repetition_penalty=sampling.repetition_penalty, use_cache=True)
    multi_token = text_stop_words(template, tokenizer)
    if multi_token:
        kwargs.update(stop_strings=multi_token, tokenizer=tokenizer)
    if sampling.greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    return kwargs


def answer(model, tokenizer, template: ChatFormat | str, question: str, system: str = "",
           history: list[Turn] | None = None, sampling: Sampling = Sampling(), streamer=None) -> str:
    """Generate one answer; the model is put in eval mode (and restored) and no gradients are kept."""
    import torch

    ids = prompt_ids(tokenizer, template, history or [], question, system)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model.generate(input_ids=torch.tensor([ids], device=device),
                                    attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                                    streamer=streamer, **generation_kwargs(template, tokenizer, sampling))
    finally:
        if was_training:
            model.train()
    return shown_answer(tokenizer, output[0, len(ids):].tolist(), set(stop_token_ids(template, tokenizer)),
                        text_stop_words(template, tokenizer))


def shown_answer(tokenizer, new_ids: list[int], stops: set[int], text_words: list[str]) -> str:
    """What the user sees of generated ids: up to the first stop token (`stops`: stop_token_ids), without any control
    token of the tokenizer (a random or half-trained model emits <reserved_102>-style ids mid-answer), cut at the
    first multi-token stop word (`text_words`: text_stop_words). Text the model wrote as plain characters (the
    characters of <|im_end|> spelled out) stays."""
    end = next((k for k, t in enumerate(new_ids) if t in stops), len(new_ids))  # the rest is stop and padding
    text = tokenizer.decode(new_ids[:end], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return cut_at_stop(text, text_words)


def answer_batch(model, tokenizer, template: ChatFormat | str, questions: list[str], systems: list[str] | str = "",
                 sampling: Sampling = GREEDY, batch_size: int = 16, progress=None) -> list[str]:
    """Answers to many single-turn questions, `batch_size` prompts per generate call; results in input order.

    Prompts are sorted by length so that a batch holds similar lengths, then left-padded (the answer always starts
    right after the last prompt token) with an attention mask that hides the padding. Greedy batched answers are
    the one-at-a-time answers (tested); only float rounding of a different matrix shape can ever tip a near tie.
    `progress(n)` is called with the number of answers finished after each batch."""
    import torch

    systems = [systems] * len(questions) if isinstance(systems, str) else list(systems)
    if len(systems) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(systems)} system prompts")
    encoder = Encoder(tokenizer, template, max_length=10**9)   # one for the batch (its set-up reads the vocabulary)
    prompts = [encoder.prompt_ids(Conversation([Turn(q, "", system=s)])) for q, s in zip(questions, systems)]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    kwargs = generation_kwargs(template, tokenizer, sampling)
    stops, words = set(stop_token_ids(template, tokenizer)), text_stop_words(template, tokenizer)
    device = next(model.parameters()).device
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in chosen)
            ids = torch.full((len(chosen), width), kwargs["pad_token_id"], dtype=torch.long)
            mask = torch.zeros((len(chosen), width), dtype=torch.long)
            for row, i in enumerate(chosen):
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            with torch.no_grad():
                output = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            for row, i in enumerate(chosen):
                answers[i] = shown_answer(tokenizer, output[row, width:].tolist(), stops, words)
            if progress is not None:
                progress(len(chosen))
    finally:
        if was_training:
            model.train()
    return answers


def with_max_new_tokens(sampling: Sampling, n: int) -> Sampling:
    return replace(sampling, max_new_tokens=n)
