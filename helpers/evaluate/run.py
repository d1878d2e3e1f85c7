"""Prove the fine-tune worked: answer held-out questions before and after training, score both, show a table.

    python -m helpers evaluate persona  --model ADAPTER_OR_MERGED [--adapter DIR] [--base BASE] [--heldout FILE]
    python -m helpers evaluate colorist --model ADAPTER_OR_MERGED [--adapter DIR] [--base BASE] --heldout FILE

"before" is the base model and "after" the fine-tuned one, asked the same questions with the same template and
system prompt (the training ones, from tunebook.json), greedy decoding so the table is reproducible:
  - an adapter: before = the same loaded model with the adapter switched off (peft's disable_adapter()), so only
    one model is ever in memory; --base BASE loads the base separately instead (same answers, more memory);
  - a merged model: before = --base BASE, else the base its tunebook.json names if that folder exists here, else
    there is no before column (a note says so).
When the base is loaded separately the fine-tuned model is freed first: one model in memory at a time.
Scoring lives in helpers.evaluate.persona and helpers.evaluate.colorist (their docstrings define every number).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
from pathlib import Path
from typing import Sequence

from helpers.cli import positive_int
from helpers.evaluate.colorist import ColoristReport, colorist_report
from helpers.errors import TunebookError
from helpers.models.generation import GREEDY, answer_batch, with_max_new_tokens
from helpers.io import write_jsonl
from helpers.evaluate.persona import PersonaReport, persona_report
from helpers.evaluate.results import evaluation_record, save_evaluation

PERSONA_MAX_NEW_TOKENS = 64    # a persona sentence fits; a 复读机 shows in the first sentence anyway
COLORIST_MAX_NEW_TOKENS = 16   # '#rrggbb' plus a little room for chatter around it
ADAPTER_OFF = "adapter-off"
EVAL_BATCH_SIZE = 16           # prompts per generate call: 5.4x one at a time on 2 CPU cores (SmolLM2, measured)


# ---------------------------------------------------------------- generation

@contextlib.contextmanager
def _adapter_off(model):
    if not hasattr(model, "disable_adapter"):
        raise TunebookError("this model has no adapter to switch off for the 'before' answers; give the base model "
                            "(--base BASE) instead")
    with model.disable_adapter():
        yield


def generate_answers(im, questions: Sequence[str], systems: Sequence[str] | None = None,
                     max_new_tokens: int = PERSONA_MAX_NEW_TOKENS, adapter_off: bool = False, desc: str = "answering",
                     progress: bool = True, batch_size: int = EVAL_BATCH_SIZE) -> list[str]:
    """Greedy answers of an InferenceModel (helpers.models.loading) to `questions`, in batches (helpers.models.generation.answer_batch).

    systems: one system prompt per question (default: the model's training system prompt for all).
    adapter_off: answer as the base model by switching the PEFT adapter off for the duration."""
    from tqdm.auto import tqdm

    sampling = with_max_new_tokens(GREEDY, max_new_tokens)
    systems = [im.system] * len(questions) if systems is None else list(systems)
    if len(systems) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(systems)} system prompts")
    with tqdm(total=len(questions), desc=desc, unit="q", leave=False, disable=not progress) as bar, \
            (_adapter_off(im.model) if adapter_off else contextlib.nullcontext()):
        return answer_batch(im.model, im.tokenizer, im.template, list(questions), systems, sampling,
                            batch_size=batch_size, progress=bar.update)


def reached_limit(tokenizer, answers: Sequence[str], max_new_tokens: int) -> int:
    """How many answers used every new token they were allowed (re-encoded length; stop words are already cut)."""
    return sum(len(tokenizer.encode(a, add_special_tokens=False)) >= max_new_tokens for a in answers)


def _limit_note(count: int, total: int, what: str, max_new_tokens: int, tiny: bool = False) -> str:
    if not count:
        return ""
    note = f"note: {count} of {total} {what} after training used all {max_new_tokens} new tokens and were cut off; "
    if tiny:  # a longer limit only gives a random-weight model more room to ramble
        return note + ("this is the random-weight tiny test model, which rarely learns to stop: the figures show the "
                       "pipeline works, not what a real model learns (leave the smoke profile to use SmolLM2)")
    return note + "a fact stated late in a long answer is then missed: raise --max-new-tokens"


def _is_tiny_base(im) -> bool:
    """Whether the evaluated model is (or was merged from) the random-weight tiny model."""
    from helpers.models.tiny import is_tiny
    return is_tiny(im.base_path) or is_tiny(im.record.get("base_model", {}).get("path"))


def balanced(items: Sequence, limit: int | None, lang_of=lambda item: item.get("lang", "")) -> list:
    """The first `limit` items taking languages in turn (zh, en, zh, ...), kept in file order; all when None.

    The held-out and general files list one language after the other; a plain head would test only the first."""
    if limit is None or limit >= len(items):
        return list(items)
    queues: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        queues.setdefault(lang_of(item), []).append(index)
    chosen: list[int] = []
    while len(chosen) < limit:
        for queue in queues.values():
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return [items[i] for i in sorted(chosen)]


# ---------------------------------------------------------------- persona

def persona_inputs(heldout: str | Path, lang: str = "both", limit: int | None = None):
    """(held-out PersonaItems, general eval records) for one run, each limited with `balanced`."""
    from helpers.data.general_set import load_general
    from helpers.evaluate.persona import read_persona_heldout

    if lang not in ("zh", "en", "both"):
        raise TunebookError(f"--lang must be zh, en or both, not {lang!r}")
    items = [i for i in read_persona_heldout(heldout) if lang == "both" or i.lang == lang]
    if not items:
        raise TunebookError(f"{heldout} has no {lang} questions")
    general = [{"id": r["id"], "lang": r["lang"], "question": r["conversation"][0]["input"],
                "reference": r["conversation"][0]["output"]} for r in load_general(lang=lang, split="eval")]
    return balanced(items, limit, lambda i: i.lang), balanced(general, limit)


def persona_answers(im, items, general: list[dict], max_new_tokens: int = PERSONA_MAX_NEW_TOKENS,
                    adapter_off: bool = False, progress: bool = True, label: str = "") -> tuple[list[str], list[str]]:
    questions = [i.question for i in items]
    general_questions = [g["question"] for g in general]
    return (generate_answers(im, questions, max_new_tokens=max_new_tokens, adapter_off=adapter_off,
                             desc=f"{label} identity questions".strip(), progress=progress),
            generate_answers(im, general_questions, max_new_tokens=max_new_tokens, adapter_off=adapter_off,
                             desc=f"{label} general questions".strip(), progress=progress))


def evaluate_persona(after, before=ADAPTER_OFF, heldout: str | Path | None = None, lang: str = "both",
                     limit: int | None = None, max_new_tokens: int = PERSONA_MAX_NEW_TOKENS,
                     markers: Sequence[str] = (), progress: bool = True) -> PersonaReport:
    """Notebook entry: `after` is a loaded InferenceModel; before = "adapter-off" (its own base), another loaded
    InferenceModel (the base), or None (no before column). heldout defaults to the training file's held-out file."""
    items, general = persona_inputs(heldout or default_heldout(after.record), lang, limit)
    after_answers = persona_answers(after, items, general, max_new_tokens, progress=progress, label="after:")
    before_answers = None
    if before == ADAPTER_OFF:
        before_answers = persona_answers(after, items, general, max_new_tokens, adapter_off=True,
                                         progress=progress, label="before:")
    elif before is not None:
        before_answers = persona_answers(_same_prompts(before, after), items, general, max_new_tokens,
                                         progress=progress, label="before:")
    label = "" if before is None else "base (adapter off)" if before == ADAPTER_OFF else str(before.base_path)
    return persona_report(items, general, after_answers, before_answers, markers, label)


def _same_prompts(before, after):
    """The base asked exactly as the fine-tuned model is: its template and system prompt (only weights differ)."""
    return dataclasses.replace(before, template=after.template, system=after.system)


def default_heldout(record: dict) -> Path:
    """`<training file stem>.heldout.jsonl` beside the training data named in tunebook.json (data_gen's naming)."""
    data = (record or {}).get("data", {}).get("path")
    if not data:
        raise TunebookError("no held-out file given and the model has no tunebook.json naming its training data: "
                            "pass --heldout FILE (data_gen.persona wrote <stem>.heldout.jsonl beside the data)")
    path = Path(data).with_name(f"{Path(data).stem}.heldout.jsonl")
    if not path.is_file():
        raise TunebookError(f"the model was trained on {data}, but {path} (its held-out file) does not exist: "
                            "pass --heldout FILE")
    return path


# ---------------------------------------------------------------- colorist

def evaluate_colorist(after, heldout: str | Path, before=ADAPTER_OFF, limit: int | None = None,
                      max_new_tokens: int = COLORIST_MAX_NEW_TOKENS, progress: bool = True) -> ColoristReport:
    """Notebook entry, like evaluate_persona: each description is asked with its record's own system prompt."""
    from helpers.evaluate.colorist import read_colorist_heldout
    descriptions, references, systems = _head(read_colorist_heldout(heldout), limit)
    systems = [s or after.system for s in systems]
    kwargs = dict(systems=systems, max_new_tokens=max_new_tokens, progress=progress)
    after_answers = generate_answers(after, descriptions, desc="after: colours", **kwargs)
    before_answers = None
    if before == ADAPTER_OFF:
        before_answers = generate_answers(after, descriptions, adapter_off=True, desc="before: colours", **kwargs)
    elif before is not None:
        before_answers = generate_answers(_same_prompts(before, after), descriptions, desc="before: colours",
                                          **kwargs)
    label = "" if before is None else "base (adapter off)" if before == ADAPTER_OFF else str(before.base_path)
    return colorist_report(descriptions, references, after_answers, before_answers, label)


def _head(columns: tuple[list, ...], limit: int | None) -> tuple[list, ...]:
    return tuple(column[:limit] for column in columns) if limit is not None else columns


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers evaluate", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True, metavar="{persona,colorist}")
    for task, tokens, help_text in (
            ("persona", PERSONA_MAX_NEW_TOKENS, "identity on held-out paraphrases; 复读机 rate and similarity to base "
                                                "on the shipped general questions"),
            ("colorist", COLORIST_MAX_NEW_TOKENS, "parse rate and CIEDE2000 to the reference on held-out colours")):
        p = sub.add_parser(task, help=help_text, description=help_text)
        p.add_argument("--model", required=True, help="adapter folder, merged model, or base model (with --adapter)")
        p.add_argument("--adapter", help="adapter folder to put on --model")
        p.add_argument("--base", help="the model before training, loaded separately (needed for a merged model "
                                      "whose tunebook.json names no base here; default for an adapter: adapter off)")
        p.add_argument("--heldout", required=task == "colorist",
                       help="held-out file (persona default: <training data stem>.heldout.jsonl from tunebook.json)")
        p.add_argument("--limit", type=positive_int,
                       help="use only N questions of each set (languages in turn)" if task == "persona"
                       else "use only the first N descriptions")
        p.add_argument("--max-new-tokens", type=positive_int, default=tokens, help=f"per answer (default {tokens})")
        p.add_argument("--bits", type=int, choices=(4, 8), help="load the base in 4-bit NF4 or 8-bit (default: full)")
        p.add_argument("--template", help="prompt template (default: the training one from tunebook.json)")
        p.add_argument("--system", help="system prompt (default: the training one from tunebook.json)")
        p.add_argument("--out", help="write every question's answers and scores to this JSONL file")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        if task == "persona":
            p.add_argument("--lang", choices=("zh", "en", "both"), default="both", help="question languages")
            p.add_argument("--marker", action="append", default=[],
                           help="extra phrase that marks a persona slip in a general answer (repeatable)")
    return parser


def _free(im) -> None:
    import torch
    del im.model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _before_plan(args, record: dict, has_adapter: bool) -> tuple[str | None, str]:
    """(what to load for the before column, ADAPTER_OFF, or None; the line that says which)."""
    if args.base:
        return args.base, f"before = {args.base} (loaded separately)"
    if has_adapter:
        return ADAPTER_OFF, "before = the same model with the adapter switched off (the base it was trained on)"
    recorded = record.get("base_model", {}).get("path")
    if recorded and Path(recorded).is_dir():
        return recorded, f"before = {recorded} (the base named in the model's tunebook.json)"
    return None, ("note: no before column: this is not an adapter and no base is known; pass --base BASE "
                  "(the model it was merged from) to compare")


def _record_of(model: str, adapter: str | None) -> dict:
    from helpers.models.record import read_record
    folder = Path(adapter or model)
    return (read_record(folder) if folder.is_dir() else None) or {}


def _missing_folder(args) -> str | None:
    """A --model / --adapter that is a local path (absolute, ./, ../, ~) and does not exist, as one line."""
    for name, folder in (("--model", args.model), ("--adapter", args.adapter)):
        local = folder and (Path(folder).is_absolute() or str(folder).startswith((".", "~")) or name == "--adapter")
        if local and not Path(folder).expanduser().exists():
            return f"{name} {folder}: no such folder (relative paths start from {Path.cwd()})"
    return None


def _questions(args, record: dict, missing: str | None):
    """(what was read, the questions): persona -> (items, general); colorist -> (descriptions, references, systems).
    `missing`: _missing_folder's message, raised first when the held-out file would come from that folder's record."""
    if args.task == "persona":
        if not args.heldout and missing:
            raise TunebookError(missing)
        heldout = args.heldout or default_heldout(record)
        items, general = persona_inputs(heldout, args.lang, args.limit)
        return (f"held-out identity questions: {len(items)} from {heldout}; general questions: {len(general)} "
                "(shipped eval split)"), (items, general)
    from helpers.evaluate.colorist import read_colorist_heldout
    descriptions, references, systems = _head(read_colorist_heldout(args.heldout), args.limit)
    return f"held-out descriptions: {len(descriptions)} from {args.heldout}", (descriptions, references, systems)


def main(argv: list[str] | None = None) -> int:
    from helpers.models.loading import is_adapter_dir, load_for_inference

    args = build_parser().parse_args(argv)
    if args.out and args.heldout and Path(args.out).resolve() == Path(args.heldout).resolve():
        raise TunebookError(f"--out {args.out} is the held-out file itself; choose another path")
    progress = not args.no_progress
    record = _record_of(args.model, args.adapter)
    # Read and check the questions first: a wrong file fails in a second, not after a model load.
    missing = _missing_folder(args)
    what, questions = _questions(args, record, missing)
    if args.task == "persona":
        items, general = questions
    else:
        descriptions, references, systems = questions
    if missing:
        raise TunebookError(missing)
    before_source, note = _before_plan(args, record, bool(args.adapter) or is_adapter_dir(args.model))

    after = load_for_inference(args.model, args.adapter, bits=args.bits, template=args.template, system=args.system)
    print(f"{what}; template {after.template}\n{note}")
    if args.task == "persona":
        def ask(im, off=False, label=""):
            return persona_answers(im, items, general, args.max_new_tokens, off, progress, label)
    else:
        systems = [s or after.system for s in systems]

        def ask(im, off=False, label=""):
            return generate_answers(im, descriptions, systems, args.max_new_tokens, off, f"{label} colours", progress)
    after_answers = ask(after, label="after:")
    # only the after model's identity answers (persona) / colour answers matter for being cut short
    scored = after_answers[0] if args.task == "persona" else after_answers
    cut_note = _limit_note(reached_limit(after.tokenizer, scored, args.max_new_tokens), len(scored),
                           "identity answers" if args.task == "persona" else "answers", args.max_new_tokens,
                           tiny=_is_tiny_base(after))
    before_answers = ask(after, True, "before:") if before_source == ADAPTER_OFF else None
    template, system = after.template, after.system
    _free(after)
    if before_source not in (None, ADAPTER_OFF):
        base = load_for_inference(before_source, bits=args.bits, template=template, system=system)
        before_answers = ask(base, label="before:")
        _free(base)
    label = "" if before_source is None else note
    if args.task == "persona":
        report = persona_report(items, general, after_answers, before_answers, args.marker, label)
    else:
        report = colorist_report(descriptions, references, after_answers, before_answers, label)
    _save_table(args, record, report)
    print(report.table())
    if args.task == "persona":
        _print_examples(report)
    if cut_note:
        print(cut_note)
    if args.out:
        write_jsonl(args.out, report.records())
        print(f"answers: {args.out}")
    return 0


def _save_table(args, record: dict, report) -> None:
    """evaluation.json beside the evaluated folder (a hub id has none here), for `upload`'s model card."""
    folder = Path(args.adapter or args.model)
    if folder.is_dir():
        saved = save_evaluation(folder, evaluation_record(args.task, report, args.heldout or default_heldout(record)))
        if saved:
            print(f"evaluation table: {saved}")


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _print_examples(report: PersonaReport) -> None:
    """The first identity and the first general question with both answers: what the numbers are made of."""
    for title, column, question in (("identity", 0, report.items[0].question),
                                    ("general", 1, report.general[0]["question"])):
        print(f"example ({title}): {question}")
        for side, answers in (("before", report.before_answers), ("after", report.after_answers)):
            if answers is not None:
                print(f"  {side:<6} {_short(answers[column][0])}")
