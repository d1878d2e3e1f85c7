"""General records answered by the base model itself (self-distillation), so a persona fine-tune changes who the
model says it is and little else.

Why: mixing general data into persona data (camp2's remedy for the 复读机) teaches the general questions' written
answers too, and for a small model those pull it away from its own style: measured on SmolLM2-135M (README,
"The CPU recipe"), the shipped general answers as written left 3 of 35 unseen general questions answered with the
persona and moved the general answers far from the base's (similarity 0.32); the same records answered by the base
itself left 1 of 35 and similarity 0.50, at the same held-out identity. The idea is "self-distillation fine-tuning"
(Yang et al., ACL 2024): train on the model's own answers where the behaviour should not change.

Which records: those data_gen.mixing marks `"general": true` (everything it mixes in, from the shipped set or a
learner's file); persona records and unmarked records keep their answers. Only single-turn records are re-answered.
The answers are greedy, in batches, with the template and system prompt of the training run, at most
MAX_NEW_TOKENS tokens; the result is an ordinary data file (JSONL) in the run folder, so a learner can read what
was trained and a resumed run reuses it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from helpers.data.general_set import GENERAL_KEY
from helpers.errors import TunebookError
from helpers.data.formats import DataFileError, Issue, read_records

MAX_NEW_TOKENS = 128         # the measured setting; SmolLM2 finishes most answers well before it
FILE_NAME = "data_base_answers.jsonl"


@dataclass
class BaseAnswers:
    path: Path          # the data file to train on
    answered: int       # general records whose answer is now the base model's
    kept: int           # general records kept as written (multi-turn)
    seconds: float


def general_positions(records: list[dict]) -> list[int]:
    """Indices of the single-turn records marked general (the ones to re-answer)."""
    return [i for i, r in enumerate(records)
            if r.get(GENERAL_KEY) is True and isinstance(r.get("conversation"), list) and len(r["conversation"]) == 1]


def read_plain_records(data_path: str | Path) -> list[dict]:
    records = []
    for item in read_records(data_path):
        if isinstance(item, Issue):
            raise DataFileError(item.where, f"{item.message} (python -m helpers check-data {data_path} lists all)")
        records.append(item.value)
    return records


def with_base_answers(data_path: str | Path, out_path: Path, answer_all, progress=print) -> BaseAnswers:
    """Write `data_path` to `out_path` with every general single-turn answer replaced by `answer_all(questions,
    systems)` (a function returning one answer per question, e.g. answer_batch on the base model)."""
    started = time.time()
    records = read_plain_records(data_path)
    chosen = general_positions(records)
    marked = sum(1 for r in records if r.get(GENERAL_KEY) is True)
    if not chosen:
        raise TunebookError(f"general_answers: base, but {data_path} has no record marked \"{GENERAL_KEY}\": true. "
                            "Make the file with data_gen.persona --mix ... (it marks the general records it mixes "
                            "in), or set general_answers: data")
    asked = [(records[i]["conversation"][0]["input"], records[i]["conversation"][0].get("system") or "")
             for i in chosen]
    distinct = list(dict.fromkeys(asked))     # a repeated record (--allow-repeats) is answered once
    if progress:
        progress(f"general_answers: base -- the base model answers the {len(distinct)} general questions itself "
                 f"(greedy, at most {MAX_NEW_TOKENS} tokens), so training keeps its general answers")
    answers = answer_all([q for q, _ in distinct], [s for _, s in distinct])
    if len(answers) != len(distinct):
        raise ValueError(f"{len(distinct)} questions but {len(answers)} answers")
    by_question = dict(zip(distinct, answers))
    for i, key in zip(chosen, asked):
        turn = dict(records[i]["conversation"][0], output=by_question[key].strip())
        records[i] = {**records[i], "conversation": [turn]}
    from helpers.io import atomic_file
    with atomic_file(out_path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return BaseAnswers(Path(out_path), len(chosen), marked - len(chosen), round(time.time() - started, 1))


def for_run(config, loaded_path: Path, template, system: str, output_dir: Path, rank: int) -> BaseAnswers:
    """The engine's step: the training file with the general records answered by the base model, made once per run
    folder by rank 0 (other ranks wait for it); a resumed run reuses it. config: a TrainConfig."""
    from helpers.models.generation import answer_batch, with_max_new_tokens
    from helpers.train.data_cache import file_digest
    out = output_dir / FILE_NAME
    stamp = output_dir / f"{FILE_NAME}.source"   # digest of the data file it was made from
    source = file_digest(config.data_path)
    if rank == 0 and not (out.is_file() and stamp.is_file() and stamp.read_text() == source):
        from helpers.models.generation import GREEDY
        from helpers.models.loading import load_for_inference
        output_dir.mkdir(parents=True, exist_ok=True)
        base = load_for_inference(loaded_path, template=template, system=system)
        sampling = with_max_new_tokens(GREEDY, MAX_NEW_TOKENS)
        made = with_base_answers(config.data_path, out, lambda questions, systems: answer_batch(
            base.model, base.tokenizer, template, questions, [s or system for s in systems], sampling))
        del base
        stamp.write_text(source)
        print(f"general_answers: base -- {made.answered} general answers from the base model in {made.seconds:.0f} s "
              f"-> {out}")
        return made
    deadline = time.time() + 6 * 3600
    while not (stamp.is_file() and stamp.read_text() == source):
        if time.time() > deadline:
            raise TunebookError(f"rank {rank}: rank 0 did not write {out} in time")
        time.sleep(0.5)
    records = read_plain_records(out)
    return BaseAnswers(out, len(general_positions(records)), 0, 0.0)
