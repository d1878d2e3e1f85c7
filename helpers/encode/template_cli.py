"""`python -m helpers templates list|render`: see exactly what a template trains on."""
from __future__ import annotations

import argparse
import sys

from helpers.data.conversation import with_default_system
from helpers.errors import TunebookError
from helpers.data.formats import load_conversations
from helpers.encode.chat_format import HF_TEMPLATE, ChatFormat, chat_format
from helpers.encode.templates import SYSTEM_TEMPLATES, TEMPLATES, describe, render_text, resolve_system

OPEN, CLOSE = "⟦", "⟧"  # trained-span marks; brackets of this shape almost never occur in training data


def render_record(template: ChatFormat | str, conversation, system: str = "", tokenizer=None,
                  show: str = "text") -> str:
    """Training text of one conversation; with a tokenizer BOS/EOS appear as that tokenizer spells them."""
    from helpers.encode.encoding import Encoder, decode_with_mask

    template = chat_format(template)
    if tokenizer is not None and (show == "labels" or template.uses_tokenizer_template):
        encoder = Encoder(tokenizer, template, max_length=10**9, system=system)
        sample = encoder.encode(conversation)
        if sample is None:
            raise TunebookError("this conversation has no trained token")
        if show == "labels":
            return decode_with_mask(tokenizer, sample, OPEN, CLOSE)
        return tokenizer.decode(sample.input_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if template.uses_tokenizer_template:
        raise TunebookError("template 'hf' renders with a tokenizer's chat_template: pass --tokenizer DIR")
    conversation = with_default_system(conversation, system)
    bos = tokenizer.bos_token if tokenizer is not None else None
    eos = tokenizer.eos_token if tokenizer is not None else None
    return render_text(template.segments(conversation), bos, eos, mark_trained=show == "labels",
                       open_mark=OPEN, close_mark=CLOSE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers templates", description="Prompt templates (XTuner names).")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="every template with its exact strings, and the system templates")
    listing.add_argument("--names", action="store_true", help="names only")
    render = sub.add_parser("render", help="print the training text of one conversation record")
    render.add_argument("--template", required=True, help=f"template name, or '{HF_TEMPLATE}' (tokenizer's own)")
    render.add_argument("--file", required=True, help="a .json/.jsonl file holding one record in any supported format")
    render.add_argument("--format", default="auto", help="record format (default: detect)")
    render.add_argument("--system", default=None, help="system text for turns that have none")
    render.add_argument("--system-template", default=None, help=f"system template: {', '.join(SYSTEM_TEMPLATES)}")
    render.add_argument("--tokenizer", default=None, help="tokenizer/model folder: BOS/EOS appear as it encodes them")
    render.add_argument("--show", choices=("text", "labels"), default="text",
                        help=f"labels: mark trained spans {OPEN}like this{CLOSE}")
    args = parser.parse_args(argv)

    if args.action == "list":
        for name, template in TEMPLATES.items():
            print(name if args.names else f"{name}\n{describe(template)}")
        if not args.names:
            print("\nsystem templates (--system-template):")
            for name, text in SYSTEM_TEMPLATES.items():
                print(f"  {name:<14}{text!r}")
        return 0

    template = chat_format(args.template)  # unknown name -> clear error before reading anything
    system = resolve_system(args.system, args.system_template)
    result = load_conversations(args.file, args.format)
    if result.issues:
        for issue in result.issues:
            print(issue, file=sys.stderr)
        return 2
    if not result.conversations:
        raise TunebookError(f"{args.file}: no usable record")
    if len(result.conversations) > 1:
        print(f"# {args.file} holds {len(result.conversations)} records; rendering the first", file=sys.stderr)
    tokenizer = None
    if args.tokenizer:
        from helpers.encode.encoding import load_tokenizer
        tokenizer = load_tokenizer(args.tokenizer)
    sys.stdout.write(render_record(template, result.conversations[0], system, tokenizer, args.show))
    if not sys.stdout.isatty():
        sys.stdout.flush()
    return 0
