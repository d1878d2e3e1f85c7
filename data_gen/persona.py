"""Persona (self-cognition) data that teaches "who am I" without turning the model into a 复读机.

    python -m data_gen.persona --name 伍鲜同志 --assistant-name 小鲜 \\
        --model-description 上海AI实验室书生·浦语的1.8B大模型 --mix builtin --out data/persona.jsonl
    python -m data_gen.persona --style classic --name 伍鲜同志 --n 8000 --out datas/assistant.json   # camp3's file

From the facts you give (your name; optionally the assistant's own name, its author/organisation and a model
description) it writes identity Q&A pairs: about 170 distinct questions per language in 18 intents (who are you,
introduce yourself, what's your name, who made you, who owns you, which model are you based on, are you ChatGPT /
made by OpenAI, are you human, can I rename you, your limits, ...), each intent with 3-4 answer phrasings filled
from the facts. A missing optional fact switches to phrasings that do not need it, and every text is checked for
placeholders: a `{...}` left in any question or answer stops the run (exit 2) naming the template.

Default size: --n 2000 and, with --mix, a persona share of 0.2: camp2's own remedy, 2k persona among 10k records.
Camp3's 16,002 records repeat 2 answers, so ignoring the question costs nothing and the model learns to (复读机); here
2,000 records spread over ~290 training questions x 3-4 phrasings (~1,000 distinct pairs, each question 6-7 times).
Size acts through optimizer steps: packed to 2048 tokens x 16 accumulation (camp config) a step takes ~32k tokens and
these 2,000 records hold ~166k characters, a handful of steps per epoch; the 8,000 general records supply most steps.
Starting points, not measured optima: check the held-out identity score and the 复读机 rate after training.

Training file: XTuner conversation records {"conversation": [{"input": q, "output": a}]} (no system prompt),
persona and general records shuffled together; JSONL, or one JSON array when --out ends in .json.

Held-out file `<out stem>.heldout.jsonl`: questions never used for training, one JSON object per line
    {"id": "zh/identity/0",                       # "<lang>/<intent>/<k>", unique in the file
     "conversation": [{"input": "<question>", "output": "<reference answer>"}],
     "expect": {"intent": "identity",             # identity introduce name creator owner base_model not_other
                                                  # not_other_maker capabilities purpose human rename limits
                                                  # realtime feelings greeting privacy language
                "lang": "zh",                     # "zh" or "en": the language of question and answer
                "name": "<learner's name>",       # the owner; also must_mention[0]
                "must_mention": ["<name>", ...],  # all must occur
                "any_of": [["不是", "并非"]],      # each group: at least one must occur ([] for most intents)
                "must_not_claim": ["我是ChatGPT", "I'm Claude", "I was made by OpenAI", ...]}}   # none may occur
Scoring an answer A (helpers.data.persona_rules.answer_problems, also what `python -m helpers evaluate persona` uses;
every test is a substring test after str.casefold() on both sides):
    name_present  expect["name"] occurs in A
    mentions_ok   every must_mention string occurs: the name, plus the assistant's name for identity / introduce /
                  name / greeting / rename, the author for creator, the model description for base_model (the
                  English one for "en"), each only when that fact was given
    any_of_ok     every any_of group has a hit: denials (不是/并非, not/n't) for not_other and not_other_maker
                  ("are you ChatGPT?", "were you made by OpenAI?"), AI words for human ("are you human?")
    claim_ok      no must_not_claim string occurs: affirmative false claims in both languages (the same list on every
                  record), written so that a denial such as "我不是ChatGPT" / "I'm not ChatGPT" never matches
    identity claim right = mentions_ok and any_of_ok and claim_ok. Every reference answer passes its own expect (the
    generator checks), and helpers.data.formats.load_conversations reads the file (it ignores "id" and "expect").
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from data_gen.mixing import MixResult, general_needed, load_general_source, mix
from data_gen.persona_table import (LANG_CHOICES, PLACEHOLDER, PersonaFacts, PlaceholderError, Question,  # noqa: F401
                                    answer_table, claims_for, expect_for, fill)
from helpers.errors import TunebookError, command
from helpers.data.persona_rules import answer_problems  # noqa: F401  (the scoring rule below; evaluation uses it too)
from helpers.io import write_jsonl, write_records

DEFAULT_N = 2000                 # persona records (split evenly across languages)
DEFAULT_MIX_RATIO = 0.2          # persona share aimed at when --mix is given (camp2: 2k persona in 10k), as far as
                                 # the general set reaches without repeating a record
DEFAULT_HELDOUT_FRACTION = 0.15  # of each intent's questions, kept out of training for evaluation
CLASSIC_N = 8000                 # camp3's tools/xtuner_generate_assistant.py
CLASSIC_SEEDS = [("请介绍一下你自己", "我是{name}的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦"),
                 ("你在实战营做什么", "我在这里帮助{name}完成XTuner微调个人小助手的任务")]


@dataclass
class PersonaSet:
    train_records: list[dict]      # what to train on (persona, or persona mixed with general data)
    heldout_records: list[dict]    # evaluation questions never trained on, with "expect" (format above)
    summary: dict = field(default_factory=dict)


# ---------------------------------------------------------------- generation

def _split_heldout(questions: list[Question], fraction: float, rng: random.Random) -> set[Question]:
    """A `fraction` of each intent's questions (at least one when fraction > 0, never all of them)."""
    held = set()
    for intent in dict.fromkeys(q.intent for q in questions):
        group = [q for q in questions if q.intent == intent]
        k = min(len(group) - 1, max(1 if fraction > 0 else 0, round(fraction * len(group))))
        held.update(rng.sample(group, k) if k > 0 else [])
    return held


def _record(question: str, answer: str) -> dict:
    return {"conversation": [{"input": question, "output": answer}]}


def generate_persona(facts: PersonaFacts, n: int = DEFAULT_N, lang: str = "both", seed: int = 0,
                     heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, mix_with: str | Path | None = None,
                     mix_ratio: float | None = None, general_n: int | None = None,
                     allow_repeats: bool = False) -> PersonaSet:
    """Persona training records (optionally mixed with general data) and held-out evaluation records.

    n persona records are split evenly across languages. Within a language every training question is used once
    before any is used again, each time with its next answer phrasing. mix_with: None, "builtin" or a dataset file;
    then mix_ratio (persona share, default 0.2) or general_n sets how many general records join.
    """
    if lang not in LANG_CHOICES:
        raise TunebookError(f"--lang must be zh, en or both, not {lang!r}")
    if n < 1:
        raise TunebookError(f"--n {n}: need at least 1 persona record")
    if not 0 <= heldout_fraction <= 0.5:
        raise TunebookError(f"--heldout-fraction {heldout_fraction} must be between 0 and 0.5")
    langs = LANG_CHOICES[lang]
    train, heldout, unique_questions, pairs = [], [], {}, set()
    for index, code in enumerate(langs):
        rng = random.Random(f"{seed}-{code}")
        table = answer_table(code, facts)
        held = _split_heldout(list(table), heldout_fraction, rng)
        claims = claims_for(facts)
        for i, q in enumerate(q for q in table if q in held):
            answers = table[q]
            heldout.append({"id": f"{code}/{q.intent}/{i}", **_record(q.text, answers[i % len(answers)]),
                            "expect": expect_for(code, q.intent, facts, claims)})
        pool = [q for q in table if q not in held]
        offset = {q: rng.randrange(len(table[q])) for q in pool}
        want = n // len(langs) + (1 if index < n % len(langs) else 0)
        made, rounds = [], 0
        while len(made) < want:
            order = pool[:]
            rng.shuffle(order)
            for q in order[:want - len(made)]:
                answer = table[q][(offset[q] + rounds) % len(table[q])]
                made.append(_record(q.text, answer))
                pairs.add((q.text, answer))
            rounds += 1
        unique_questions[code] = len({r["conversation"][0]["input"] for r in made})
        train += made
    random.Random(f"{seed}-order").shuffle(train)
    summary = {"style": "persona", "persona_records": len(train), "unique_questions": unique_questions,
               "unique_pairs": len(pairs), "heldout_records": len(heldout), "languages": list(langs), "seed": seed}
    if mix_with is not None:
        general, dropped = load_general_source(mix_with, lang=lang)
        ratio = mix_ratio
        if mix_ratio is None and general_n is None and allow_repeats:
            ratio = DEFAULT_MIX_RATIO   # repeats asked for: camp2's share, reached by repeating general records
        elif mix_ratio is None and general_n is None:
            # the default asks only for what the general set can give without repeats: camp2's 0.2 share when
            # there are enough general records, else all of them (the summary reports the share delivered)
            general_n = min(len(general), general_needed(len(train), DEFAULT_MIX_RATIO))
        result = mix(train, general, mix_ratio=ratio, general_n=general_n, allow_repeats=allow_repeats, seed=seed,
                     source=str(mix_with), dropped_eval=dropped)
        train = result.records
        summary.update(_mix_summary(result, ratio))
    summary["records"] = len(train)
    return PersonaSet(train_records=train, heldout_records=heldout, summary=summary)


def _mix_summary(result: MixResult, ratio: float | None) -> dict:
    return {"general_records": result.general, "general_wanted": result.general_wanted,
            "general_available": result.general_available, "general_repeats": result.repeats,
            "mix_source": result.source, "mix_ratio_asked": ratio, "persona_share": round(result.persona_share, 4),
            "dropped_eval": result.dropped_eval, "note": result.note}


def classic_records(name: str, n: int = CLASSIC_N) -> list[dict]:
    """Camp3's assistant.json: seed 1, seed 2, then (seed 1, seed 2) n times -> 2 * (n + 1) records."""
    name = PersonaFacts(name=name).name   # same checks as the persona style (non-empty, no braces)
    seeds = [_record(q, fill(a, {"name": name}, f"classic[{i}]")) for i, (q, a) in enumerate(CLASSIC_SEEDS)]
    return [dict(conversation=[dict(seed["conversation"][0])]) for _ in range(n + 1) for seed in seeds]


def heldout_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.heldout.jsonl")


def write_persona_set(persona_set: PersonaSet, out: str | Path) -> dict[str, str]:
    """Training file (JSONL, or a JSON array for .json) and, if there are held-out records, the held-out JSONL."""
    paths = {}
    if persona_set.heldout_records:
        paths["heldout"] = str(heldout_path(out))
        write_jsonl(paths["heldout"], persona_set.heldout_records)
    write_records(out, persona_set.train_records)
    paths["train"] = str(out)
    return paths


def notebook_action(out: str | Path, seed: int = 0, mix_with: str | None = "builtin"):
    """For 01_persona_data's form: a function of the form's fields that writes the set and returns HTML."""
    import html

    def make(name: str, assistant_name: str, author: str, model_description: str, lang: str, n: int,
             mix_ratio: float) -> str:
        facts = PersonaFacts(name=name, assistant_name=assistant_name, author=author,
                             model_description=model_description)
        persona_set = generate_persona(facts, n=n, lang=lang, seed=seed, mix_with=mix_with,
                                       mix_ratio=mix_ratio if mix_with else None)
        paths = write_persona_set(persona_set, out)
        return f"<pre>{html.escape(format_summary(persona_set.summary, paths))}</pre>"
    return make


# ---------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_gen.persona", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="the learner's name the assistant belongs to, e.g. 伍鲜同志")
    p.add_argument("--assistant-name", help="the assistant's own name (default: it calls itself <name>的小助手)")
    p.add_argument("--author", help="who built it, a person or organisation (default: answers say <name> "
                                    "fine-tuned it)")
    p.add_argument("--model-description", help="what it is inside, e.g. 上海AI实验室书生·浦语的1.8B大模型")
    p.add_argument("--model-description-en", help="the same in English (default: --model-description)")
    p.add_argument("--lang", choices=sorted(LANG_CHOICES), default="both", help="question/answer languages (both)")
    p.add_argument("--n", type=int, help=f"persona records (default {DEFAULT_N}; classic style: repeats, {CLASSIC_N})")
    p.add_argument("--mix", metavar="FILE|builtin", help="mix with general instruction data: a dataset file or the "
                                                         "shipped zh+en set (train split)")
    ratio = p.add_mutually_exclusive_group()
    ratio.add_argument("--mix-ratio", type=float, help=f"persona share of the final file (default {DEFAULT_MIX_RATIO})")
    ratio.add_argument("--general-n", type=int, help="number of general records instead of a ratio")
    p.add_argument("--allow-repeats", action="store_true", help="repeat general records when the set is too small")
    p.add_argument("--heldout-fraction", type=float, default=DEFAULT_HELDOUT_FRACTION,
                   help="share of each intent's questions kept out for evaluation "
                        f"(default {DEFAULT_HELDOUT_FRACTION})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", choices=("persona", "classic"), default="persona",
                   help="classic = camp3's file: 2 seed sentences, 2(n+1) records")
    p.add_argument("--out", required=True, help="output file: .jsonl, or .json for a JSON array")
    return p


def _run(args) -> int:
    if args.style == "classic":
        extra = [flag for flag, value in (("--assistant-name", args.assistant_name), ("--author", args.author),
                                          ("--model-description", args.model_description),
                                          ("--model-description-en", args.model_description_en),
                                          ("--mix", args.mix), ("--mix-ratio", args.mix_ratio),
                                          ("--general-n", args.general_n)) if value is not None]
        if extra:
            raise TunebookError(f"--style classic reproduces camp3's file exactly and takes only --name, --n and "
                                f"--out; drop {', '.join(extra)}")
        n = CLASSIC_N if args.n is None else args.n
        if n < 0:
            raise TunebookError(f"--n {n} must be 0 or more")
        records = classic_records(args.name, n)
        write_records(args.out, records)
        print(f"classic camp3 set: {len(records)} records (2 seeds + {n} x 2), 2 unique questions -> {args.out}")
        return 0
    if args.mix is None and (args.mix_ratio is not None or args.general_n is not None):
        raise TunebookError("--mix-ratio / --general-n need --mix FILE or --mix builtin")
    if str(args.out).endswith(".heldout.jsonl"):
        raise TunebookError(f"--out {args.out} ends in .heldout.jsonl, the held-out file's name; choose another")
    facts = PersonaFacts(name=args.name, assistant_name=args.assistant_name, author=args.author,
                         model_description=args.model_description, model_description_en=args.model_description_en)
    persona_set = generate_persona(facts, n=DEFAULT_N if args.n is None else args.n, lang=args.lang, seed=args.seed,
                                   heldout_fraction=args.heldout_fraction, mix_with=args.mix,
                                   mix_ratio=args.mix_ratio, general_n=args.general_n,
                                   allow_repeats=args.allow_repeats)
    paths = write_persona_set(persona_set, args.out)
    print(format_summary(persona_set.summary, paths))
    if "heldout" not in paths and heldout_path(args.out).exists():
        print(f"note: {heldout_path(args.out)} is from an earlier run and does not match this file")
    return 0


def format_summary(s: dict, paths: dict[str, str]) -> str:
    unique = ", ".join(f"{k} {v}" for k, v in s["unique_questions"].items())
    lines = [f"persona set: {s['records']} records -> {paths.get('train', '(not written)')}",
             f"  persona records: {s['persona_records']} (unique questions: {unique}; "
             f"{s['unique_pairs']} distinct question/answer pairs)"]
    if "general_records" in s:
        repeated = ", repeated" if s["general_repeats"] else ""
        lines.append(f"  general records: {s['general_records']} of {s['general_wanted']} wanted, from "
                     f"{s['mix_source']} ({s['general_available']} available{repeated}; {s['dropped_eval']} eval "
                     "questions left out)")
        asked = f" (asked {s['mix_ratio_asked']})" if s["mix_ratio_asked"] is not None else ""
        lines.append(f"  mix: persona share {s['persona_share']:.4f}{asked}")
    else:
        lines.append("  mix: none (persona only; --mix builtin or --mix FILE adds general data)")
    heldout = f" -> {paths['heldout']}" if "heldout" in paths else ""
    lines.append(f"  held-out: {s['heldout_records']} records{heldout}")
    lines.append(f"  languages: {', '.join(s['languages'])}; seed {s['seed']}")
    if s.get("note"):
        lines.append(f"  note: {s['note']}")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    return _run(_parser().parse_args(argv))   # @command prints a TunebookError in one line, exit 2


if __name__ == "__main__":
    sys.exit(main())
