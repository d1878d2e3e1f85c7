"""`python -m helpers check-data FILE`: the successor of `xtuner check-custom-dataset` + `log-dataset`.

Validates every record (FILE:LINE messages, exit 2), then with a tokenizer shows what training will see:
tokens, trained share, truncation, dropped samples, packing efficiency and a few samples with their masks.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from helpers.data.conversation import with_default_system
from helpers.errors import TunebookError
from helpers.data.formats import FORMATS, LoadResult, load_conversations
from helpers.encode.chat_format import DEFAULT_TEMPLATE, ChatFormat, chat_format
from helpers.encode.templates import render_text, resolve_system

MAX_ISSUES_SHOWN = 50


@dataclass
class DataReport:
    load: LoadResult
    template: ChatFormat
    max_length: int
    distinct: int = 0
    encode: object = None                       # EncodeStats when a tokenizer was given
    plans: dict = field(default_factory=dict)   # strategy -> BatchPlan.summary()
    samples: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.load.issues and bool(self.load.conversations)


def check(source, fmt: str = "auto", template: ChatFormat | str = DEFAULT_TEMPLATE, tokenizer=None,
          max_length: int = 2048, system: str = "", show: int = 2) -> DataReport:
    """Validate and measure a dataset; never raises for bad records (they are in report.load.issues)."""
    from helpers.encode.templates import TemplateError
    template = chat_format(template)
    if template.uses_tokenizer_template and tokenizer is None:
        raise TemplateError("template 'hf' uses a tokenizer's chat_template: pass a tokenizer")
    if max_length <= 0:
        raise TunebookError(f"--max-length must be positive, got {max_length}")
    report = DataReport(load_conversations(source, fmt), template, max_length)
    conversations = report.load.conversations
    report.distinct = len({repr(c.turns) for c in conversations})
    if conversations and report.distinct / len(conversations) < 0.05:
        report.warnings.append(
            f"only {report.distinct} distinct conversations among {len(conversations)} records: the model will "
            "memorise them and may answer every question with them (the camp's 复读机 problem); generate varied "
            "data (python -m data_gen.persona) and mix in general data")
    if not report.ok:
        return report
    if tokenizer is None:
        if not template.uses_tokenizer_template:
            for conversation in conversations[:show]:
                segs = template.segments(with_default_system(conversation, system))
                report.samples.append(f"{conversation.source}\n" + render_text(segs, mark_trained=True,
                                                                                open_mark="⟦", close_mark="⟧"))
        return report
    from helpers.encode.encoding import Encoder, decode_with_mask
    from helpers.encode.packing import STRATEGIES, plan_batches

    encoder = Encoder(tokenizer, template, max_length, system)
    samples = encoder.encode_all(conversations)
    report.encode = encoder.stats
    if encoder.stats.special_text:
        report.warnings.append(
            f"{len(encoder.stats.special_text)} records spell a special token of the tokenizer in their text "
            f"(first: {encoder.stats.special_text[0]}); it is trained as plain characters, never as a control token")
    if encoder.stats.truncated:
        report.warnings.append(f"{encoder.stats.truncated} samples are longer than max_length={max_length} and lose "
                               "their tail (answers cut before their stop token); raise max_length or shorten them")
    if samples:
        # packed rows and grouped batches get the same token budget; padded uses the tutorials' batch of 4
        for strategy in STRATEGIES:
            report.plans[strategy] = plan_batches(samples, strategy, max_length,
                                                  batch_size=4 if strategy == "padded" else 1).summary()
    report.samples = [f"{s.source}\n" + decode_with_mask(tokenizer, s, "⟦", "⟧") for s in samples[:show]]
    return report


def format_report(report: DataReport, source: str) -> str:
    load, lines = report.load, []
    add = lines.append
    add(f"check-data: {source}  (format: {load.format or '?'}, template: {report.template}, "
        f"max_length: {report.max_length})")
    add(f"  records              {load.records:,}")
    add(f"  conversations        {len(load.conversations):,} ({report.distinct:,} distinct)")
    if load.skipped:
        add(f"  skipped on purpose   {len(load.skipped):,} (first: {load.skipped[0]})")
    add(f"  bad records          {len(load.issues):,}")
    stats = report.encode
    if stats is not None:
        add(f"  samples              {stats.samples:,}")
        add(f"  dropped              {stats.dropped_prompt_too_long:,} prompt alone >= max_length, "
            f"{stats.dropped_no_trained:,} with nothing to train on")
        add(f"  truncated            {stats.truncated:,}")
        share = stats.trained_tokens / stats.tokens if stats.tokens else 0
        add(f"  tokens               {stats.tokens:,} (trained on {stats.trained_tokens:,} = {share:.1%})")
        add(f"  longest sample       {stats.longest:,} tokens")
        add(f"  special-token text   {len(stats.special_text):,} records")
        for strategy, plan in report.plans.items():
            if strategy == "packed":
                detail = f"{plan['rows']:,} rows of {report.max_length} tokens"
            elif strategy == "grouped":
                detail = f"{plan['micro_batches']:,} length-grouped batches of <= {report.max_length} tokens"
            else:
                detail = f"{plan['micro_batches']:,} padded batches of 4"
            add(f"  {strategy:<8} batching    {detail}: efficiency {plan['efficiency']:.1%} (non-pad / computed)")
    elif report.ok:
        add("  tokens               pass --tokenizer MODEL_DIR for token counts, truncation and packing efficiency")
    for warning in report.warnings:
        add(f"  WARNING: {warning}")
    for sample in report.samples:
        add("--- sample " + sample)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers check-data",
                                     description="Validate a dataset and show what training will see.")
    parser.add_argument("file", help=".json / .jsonl dataset file")
    parser.add_argument("--format", default="auto", choices=("auto", "llava") + FORMATS,
                        help="auto also recognises LLaVA files (records with \"image\" + \"conversations\")")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help=f"prompt template (default {DEFAULT_TEMPLATE})")
    parser.add_argument("--system", default=None, help="system text for records that have none")
    parser.add_argument("--system-template", default=None, help="system template name, e.g. colorist")
    parser.add_argument("--tokenizer", default=None, help="model/tokenizer folder for token counts and masks")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--show", type=int, default=2, help="how many samples to print with their masks")
    parser.add_argument("--image-folder", help="LLaVA: where the records' images are (default: the file's folder)")
    parser.add_argument("--vision", help="LLaVA: the vision tower, for its image-token count (default: the camp's "
                                         "CLIP ViT-L/14-336, 576)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Text datasets (LLaVA files go through helpers.multimodal.check_llava.main, the command's entry point)."""
    args = build_parser().parse_args(argv)
    tokenizer = None
    if args.tokenizer:
        from helpers.encode.encoding import load_tokenizer
        tokenizer = load_tokenizer(args.tokenizer)
    from helpers.data.formats import DataFileError
    try:
        report = check(args.file, args.format, args.template, tokenizer, args.max_length,
                       resolve_system(args.system, args.system_template), args.show)
    except DataFileError as err:
        print(err, file=sys.stderr)  # already "FILE:LINE: what is wrong and how to fix it"
        return 2
    for issue in report.load.issues[:MAX_ISSUES_SHOWN]:
        print(issue, file=sys.stderr)
    if len(report.load.issues) > MAX_ISSUES_SHOWN:
        print(f"... and {len(report.load.issues) - MAX_ISSUES_SHOWN} more bad records", file=sys.stderr)
    print(format_report(report, args.file))
    if report.load.issues:
        print(f"{args.file}: {len(report.load.issues)} bad records; fix them (see the lines above) and run again",
              file=sys.stderr)
        return 2
    if not report.load.conversations:
        print(f"{args.file}: no usable records", file=sys.stderr)
        return 2
    if report.encode is not None and report.encode.samples == 0:
        print(f"{args.file}: no record has anything left to train on with this tokenizer and max_length "
              f"{args.max_length} (see 'dropped' above); training would refuse it too", file=sys.stderr)
        return 2
    return 0
