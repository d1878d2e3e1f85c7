"""Hand-written persona paraphrases as a held-out file for any persona: a second, independent identity test.

The generator's held-out questions come from the same question bank as its training questions (other phrasings of
the same intents, written by the same hand). tests/fixtures/persona_paraphrases_en.jsonl holds 32 English questions
written separately, none in that bank (a test checks it); each names its intent, so the expectation is the
generator's own (persona_table.expect_for) and the score is the same rule. Usage:

    python -m data_gen.paraphrases tests/fixtures/persona_paraphrases_en.jsonl --name "Wu Xian" --out work/data/p.jsonl
    python -m helpers evaluate persona --model work/train-persona/adapter --heldout work/data/p.jsonl --lang en
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data_gen.persona_table import PersonaFacts, answer_table, claims_for, expect_for
from helpers.errors import command
from helpers.data.formats import DataFileError, Issue, read_records
from helpers.io import write_jsonl

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "persona_paraphrases_en.jsonl"


def read_paraphrases(path: str | Path) -> list[dict]:
    rows = []
    for item in read_records(path):
        if isinstance(item, Issue):
            raise DataFileError(item.where, item.message)
        row = item.value
        if not (isinstance(row, dict) and isinstance(row.get("question"), str) and isinstance(row.get("intent"), str)):
            raise DataFileError(item.where, 'each line needs {"intent": ..., "question": ...}')
        rows.append(row)
    return rows


def paraphrase_heldout(path: str | Path, facts: PersonaFacts, lang: str = "en") -> list[dict]:
    """Held-out records (data_gen.persona's format) for the paraphrases in `path`, expectations for `facts`."""
    table, claims = answer_table(lang, facts), claims_for(facts)
    reference = {}
    for question, answers in table.items():
        reference.setdefault(question.intent, answers[0])
    records = []
    for i, row in enumerate(read_paraphrases(path)):
        if row["intent"] not in reference:
            raise DataFileError(f"{path}:{i + 1}", f"unknown intent {row['intent']!r}; "
                                                   f"known: {', '.join(sorted(reference))}")
        records.append({"id": f"{lang}/paraphrase/{row['intent']}/{i}",
                        "conversation": [{"input": row["question"], "output": reference[row["intent"]]}],
                        "expect": expect_for(lang, row["intent"], facts, claims)})
    return records


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_gen.paraphrases", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", default=str(FIXTURE), help="paraphrase file (default: the shipped one)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--assistant-name", default=None)
    parser.add_argument("--author", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    facts = PersonaFacts(name=args.name, assistant_name=args.assistant_name, author=args.author)
    n = write_jsonl(args.out, paraphrase_heldout(args.file, facts))
    print(f"{n} paraphrase questions -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
