"""Chat with a (fine-tuned) model in exactly its training format: the successor of `xtuner chat`.

    python -m helpers chat MODEL [--adapter DIR] [--template NAME] [--system TEXT | --system-template NAME]
                               [--bits 4|8] [--temperature 0.1] [--max-new-tokens 2048] [--show-prompt]

MODEL is a merged folder, a base model (+ --adapter), or an adapter folder alone (its base comes from tunebook.json).
Template and system prompt default to what the model was trained with (its tunebook.json), so the prompt is a prefix
of the training text (helpers.models.generation.prompt_ids) — not a second, hand-built prompt like the course's streamlit
demo (whose prompt had 4 stray spaces, a literal <s> and another system prompt) or `xtuner chat` without
--prompt-template (xtuner#279, #343). XTuner's keys work: a message ends at an empty line (double Enter), RESET
clears the history, EXIT quits; so does end of input, which lets a pipe script a conversation.
Stop words (the template's STOP_WORDS and EOS) end the answer and are never shown, even when the stream splits them.
"""
from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from helpers.encode.chat_format import DEFAULT_TEMPLATE, ChatFormat, chat_format
from helpers.data.conversation import Turn
from helpers.models.generation import Sampling, generation_kwargs, prompt_ids, text_stop_words

INPUT_PROMPT = "double enter to end input (EXIT: exit chat, RESET: reset history) >>> "  # xtuner chat's


class StopFilter:
    """Passes streamed text through, holding back any tail that could be the start of a stop word; after a stop
    word, nothing more is shown."""

    def __init__(self, words: Iterable[str]):
        self.words = [w for w in words if w]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        cut = min((at for at in (self.pending.find(w) for w in self.words) if at != -1), default=-1)
        if cut != -1:
            self.stopped = True
            shown, self.pending = self.pending[:cut], ""
            return shown
        hold = max((n for w in self.words for n in range(1, len(w)) if self.pending.endswith(w[:n])), default=0)
        shown, self.pending = self.pending[:len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return shown

    def flush(self) -> str:
        """End of stream: a held-back tail that never became a stop word is text after all."""
        shown, self.pending = ("" if self.stopped else self.pending), ""
        return shown


@dataclass
class ChatSession:
    model: object
    tokenizer: object
    template: ChatFormat | str = DEFAULT_TEMPLATE  # a name is resolved to its ChatFormat on creation
    system: str = ""
    sampling: Sampling = Sampling()             # XTuner chat defaults (T=0.1, top_p 0.75, top_k 40)
    history: list[Turn] = field(default_factory=list)
    use_adapter: bool = True                    # False: the same PeftModel answers with its adapter disabled (base)
    extra_stop_words: tuple[str, ...] = ()
    last_prompt_ids: list[int] = field(default_factory=list)
    loaded: object = None                       # helpers.models.loading.InferenceModel: paths and training record

    def __post_init__(self):
        self.template = chat_format(self.template)

    @property
    def stop_words(self) -> list[str]:
        """The stop words to find in streamed text: the multi-token ones (single control tokens stop generation by
        id and are never shown) and the user's extra ones."""
        return text_stop_words(self.template, self.tokenizer) + [w for w in self.extra_stop_words if w]

    def prompt_ids(self, question: str) -> list[int]:
        return prompt_ids(self.tokenizer, self.template, self.history, question, self.system)

    def prompt_text(self, question: str) -> str:
        return self.tokenizer.decode(self.prompt_ids(question), skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    def reset(self) -> None:
        self.history.clear()

    def stream(self, question: str) -> Iterator[str]:
        """Yield the answer in pieces as it is generated (stop words removed); then add the turn to the history."""
        import torch
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(question)
        self.last_prompt_ids = ids
        # control tokens never reach the screen (generation stops at the single-token stop words anyway); the
        # StopFilter still cuts multi-token stop words, which are plain text
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        clean_up_tokenization_spaces=False)
        device = next(self.model.parameters()).device
        kwargs = dict(input_ids=torch.tensor([ids], device=device),
                      attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device), streamer=streamer,
                      **generation_kwargs(self.template, self.tokenizer, self.sampling))
        if self.extra_stop_words:
            kwargs.update(stop_strings=list(kwargs.get("stop_strings", [])) + list(self.extra_stop_words),
                          tokenizer=self.tokenizer)
        failure: list[BaseException] = []

        def generate():
            try:
                with torch.no_grad(), self._adapter_context():
                    self.model.generate(**kwargs)
            except BaseException as err:  # re-raised in the caller's thread; end the stream so it cannot hang
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        words = StopFilter(self.stop_words)
        answer = []
        for piece in streamer:
            shown = words.feed(piece)
            if shown:
                answer.append(shown)
                yield shown
        tail = words.flush()
        if tail:
            answer.append(tail)
            yield tail
        thread.join()
        if failure:
            raise failure[0]
        self.history.append(Turn(question, "".join(answer)))

    def ask(self, question: str) -> str:
        return "".join(self.stream(question))

    def _adapter_context(self):
        import contextlib
        if self.use_adapter or not hasattr(self.model, "disable_adapter"):
            return contextlib.nullcontext()
        return self.model.disable_adapter()


def load_chat(model, adapter=None, bits: int | None = None, dtype: str = "auto", template: str | None = None,
              system: str | None = None, system_template: str | None = None, sampling: Sampling = Sampling(),
              trust_remote_code: bool = False) -> ChatSession:
    """A chat session on a merged folder, base (+ adapter), or adapter folder (see helpers.models.loading.load_for_inference)."""
    from helpers.models.loading import load_for_inference
    from helpers.encode.templates import resolve_system

    if system is not None or system_template:
        system = resolve_system(system, system_template)
    loaded = load_for_inference(model, adapter, bits=bits, dtype=dtype, template=template, system=system,
                                trust_remote_code=trust_remote_code)
    return ChatSession(loaded.model, loaded.tokenizer, loaded.template, loaded.system, sampling, loaded=loaded)


def base_session(session: ChatSession) -> ChatSession:
    """The base model's side of a side-by-side chat: the same PeftModel with its adapter disabled (no second copy
    in memory), same template, system prompt and sampling, its own history."""
    if not hasattr(session.model, "disable_adapter"):
        from helpers.errors import TunebookError
        raise TunebookError("side-by-side needs base + adapter (load_chat(BASE, adapter=DIR)); a merged model has no "
                            "separate base: load the base model into its own session instead")
    return replace(session, history=[], use_adapter=False, last_prompt_ids=[])


# ---- terminal -------------------------------------------------------------------------------------------------

def decode_input(raw: bytes, notes: list[str]) -> str | None:
    """A terminal line as text: UTF-8, else GB18030 (a Chinese Windows terminal or a GBK file piped in) with a
    note; None when it is neither (the message is then refused with a note, and the session goes on)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        notes.append("(this message is neither UTF-8 nor GB18030 text; it was not sent. Set your terminal to UTF-8)")
        return None
    notes.append("(input was not UTF-8; read it as GB18030. Set your terminal to UTF-8 to avoid the guess)")
    return text


def read_message(stream, notes: list[str] | None = None) -> tuple[str | None, bool]:
    """Lines up to an empty line (xtuner chat's double Enter) -> (message, reached end of input).

    A binary stream (the terminal's stdin.buffer) is decoded line by line with decode_input; a line that cannot be
    decoded makes the message "" (nothing is sent), with the reason in `notes`."""
    lines, notes, refused = [], notes if notes is not None else [], False
    while True:
        line = stream.readline()
        if isinstance(line, bytes):
            if line:
                decoded = decode_input(line, notes)
                refused |= decoded is None
                line = decoded or "\x00"  # an undecodable line still ends nothing: keep reading to the empty line
            else:
                line = ""
        if line == "":
            return ("" if refused else "\n".join(lines) if lines else None), True
        line = line.rstrip("\r\n")
        if line == "":
            return ("" if refused else "\n".join(lines)), False
        lines.append(line)


def terminal_chat(session: ChatSession, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                  show_prompt: bool = False, echo: bool | None = None) -> int:
    """XTuner's loop: RESET clears the history, EXIT (or end of input) quits with 0; answers are streamed.

    echo (default: when stdin is not a terminal, e.g. a pipe) writes each message after the prompt, so a transcript
    holds the questions as well as the answers."""
    if echo is None:
        echo = not (hasattr(stdin, "isatty") and stdin.isatty())
    while True:
        stdout.write("\n" + INPUT_PROMPT)
        stdout.flush()
        notes: list[str] = []
        message, at_end = read_message(stdin, notes)
        if echo and message:
            stdout.write(message + "\n")
        for note in dict.fromkeys(notes):
            stdout.write(note + "\n")
        command = (message or "").strip()
        if command == "EXIT":
            return 0
        if command == "RESET":
            session.reset()
            stdout.write("(history cleared)\n")
        elif command:
            if show_prompt:
                stdout.write(f"\n[prompt] {session.prompt_text(message)!r}\n")
            for piece in session.stream(message):
                stdout.write(piece)
                stdout.flush()
            stdout.write("\n")
        if at_end:
            stdout.write("\n")
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers chat", description="Chat in the terminal with the "
                                     "training template (a message ends at an empty line; RESET, EXIT).")
    parser.add_argument("model", help="merged model folder, base model (with --adapter), or an adapter folder")
    parser.add_argument("--adapter", help="PEFT adapter folder to apply to MODEL")
    parser.add_argument("--template", help="prompt template (default: the training record's)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--system", help="system prompt text (default: the training record's)")
    group.add_argument("--system-template", help="system prompt by SYSTEM_TEMPLATE name, e.g. colorist")
    parser.add_argument("--bits", type=int, choices=[4, 8], help="load the base in 4-bit (NF4) or 8-bit")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    defaults = Sampling()
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy (default 0.1)")
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--stop-words", nargs="*", default=[], help="extra stop words (the template's are built in)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (xtuner chat's default 0)")
    parser.add_argument("--show-prompt", action="store_true", help="print each prompt as the model sees it")
    llava = parser.add_argument_group("LLaVA (xtuner chat --llava ... --visual-encoder ... --image ...)")
    llava.add_argument("--image", help="a picture to talk about: MODEL is then a merged LLaVA folder, a LLaVA stage "
                                       "output, or an LM with --llava and --visual-encoder")
    llava.add_argument("--llava", help="stage-1 projector or stage-2 adapter folder for the LM given as MODEL")
    llava.add_argument("--visual-encoder", help="the CLIP vision folder (default: the one the --llava folder names)")
    args = parser.parse_args(argv)
    if args.llava or args.visual_encoder:
        if not args.image:
            parser.error("--llava / --visual-encoder need --image PATH (the picture to talk about)")
    if args.image:
        return _llava_chat(args)

    from transformers import set_seed
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # keep the terminal for the conversation
    set_seed(args.seed)
    sampling = Sampling(args.temperature, args.top_p, args.top_k, args.repetition_penalty, args.max_new_tokens)
    session = load_chat(args.model, args.adapter, args.bits, args.dtype, args.template, args.system,
                        args.system_template, sampling)
    session.extra_stop_words = tuple(args.stop_words)
    origin = "training record" if session.loaded.record.get("template") and not args.template else \
        ("--template" if args.template else "default: no training record, pass --template to choose")
    print(f"model {session.loaded.base_path}" + (f" + adapter {session.loaded.adapter_path}"
                                                 if session.loaded.adapter_path else ""), file=sys.stderr)
    print(f"template {session.template} ({origin}); system prompt {session.system!r}", file=sys.stderr)
    # bytes from the terminal, decoded per line (decode_input): GBK input never ends the session with a traceback
    return terminal_chat(session, getattr(sys.stdin, "buffer", sys.stdin), sys.stdout, args.show_prompt)


def _llava_chat(args) -> int:
    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    from helpers.errors import TunebookError
    from helpers.multimodal.llava_chat import load_llava_chat
    if not Path(args.image).is_file():   # before the model loads: a typo costs no waiting
        raise TunebookError(f"--image {args.image}: no such file")
    hf_logging.disable_progress_bar()
    set_seed(args.seed)
    system = args.system
    if args.system_template:
        from helpers.encode.templates import resolve_system
        system = resolve_system(None, args.system_template)
    chat = load_llava_chat(args.model, args.llava, args.visual_encoder, args.template, system)
    chat.sampling = Sampling(args.temperature, args.top_p, args.top_k, args.repetition_penalty, args.max_new_tokens)
    chat.set_image(args.image)
    print(f"LLaVA {args.model}" + (f" + {args.llava}" if args.llava else "") + f"; image {args.image} "
          f"({chat.image_tokens} image tokens); template {chat.template}", file=sys.stderr)
    return terminal_chat(chat, getattr(sys.stdin, "buffer", sys.stdin), sys.stdout, args.show_prompt)
