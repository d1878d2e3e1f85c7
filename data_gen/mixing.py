"""Mix persona records into general instruction data: the camp2 lesson's remedy for the "复读机" model.

The ratio is the persona share of the final file: mix_ratio R means persona / (persona + general) = R, so for P
persona records the mix takes G = P * (1 - R) / R general records, rounded to the nearest whole record (the share
is then off by less than one record). Camp2's "2k persona among 10k" is R = 0.2. general_n gives G directly.
General records come from a file in any format helpers.data.formats reads, or from the shipped set ("builtin", train
split only). The shipped set's eval questions are never mixed in, whatever file (or format) they come in.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from helpers.errors import TunebookError
from helpers.data.formats import DataFileError, load_conversations
from helpers.data.general_set import GENERAL_KEY, general_questions, load_general, training_record

BUILTIN = "builtin"


@dataclass
class MixResult:
    records: list[dict]        # persona + general, shuffled together
    persona: int
    general: int
    general_wanted: int        # what the ratio / general_n asked for
    general_available: int     # distinct general records there were to draw from
    repeats: bool              # some general records appear more than once
    source: str                # "builtin" or the file name
    dropped_eval: int          # records left out because they are the shipped set's eval questions
    note: str                  # what fell short and what to do, or ""

    @property
    def persona_share(self) -> float:
        return self.persona / max(1, self.persona + self.general)


def general_needed(n_persona: int, mix_ratio: float) -> int:
    """General records that make `n_persona` persona records a share `mix_ratio` of the file (nearest record)."""
    if not 0 < mix_ratio <= 1:
        raise TunebookError(f"--mix-ratio {mix_ratio} is out of range: it is the persona share of the final file, "
                            "0 < R <= 1 (0.2 = 1 persona record per 4 general records)")
    return int(math.floor(n_persona * (1 - mix_ratio) / mix_ratio + 0.5))


def load_general_source(source: str | Path, lang: str = "both") -> tuple[list[dict], int]:
    """General records from `source` ("builtin" or a dataset file) and how many eval items were left out."""
    if str(source) == BUILTIN:
        return [training_record(r) for r in load_general(lang=lang, split="train")], 0
    path = str(source)
    result = load_conversations(path)
    if result.issues:
        raise DataFileError(path, f"{len(result.issues)} bad record(s), first: {result.issues[0]}. Fix them "
                                  f"(python -m helpers check-data {path} lists them all) before mixing")
    if any(c.pretrain for c in result.conversations):
        raise DataFileError(path, 'holds pretraining text records ({"text": ...}); only instruction/conversation '
                                  "data can be mixed with persona conversations")
    # Matched by question text, so the shipped eval items are caught in any file and format they were copied to.
    eval_texts = {q.strip() for q in general_questions(lang="both", split="eval")}
    kept = [c.to_record() for c in result.conversations if c.turns[0].input.strip() not in eval_texts]
    if not kept:
        raise DataFileError(path, "no general records left to mix in (every record is an evaluation question)")
    return kept, len(result.conversations) - len(kept)


def mix(persona: list[dict], general: list[dict], *, mix_ratio: float | None = None, general_n: int | None = None,
        allow_repeats: bool = False, seed: int = 0, source: str = "", dropped_eval: int = 0) -> MixResult:
    """Persona + general records shuffled together; exactly one of mix_ratio / general_n sets the general count.

    More general records than needed: a seeded sample without replacement. Fewer: all of them once (and a note), or,
    with allow_repeats, every record the same number of times (+/-1) until the count is reached.
    """
    if (mix_ratio is None) == (general_n is None):
        raise TunebookError("give exactly one of --mix-ratio (persona share of the file) or --general-n (count)")
    if general_n is not None and general_n < 0:
        raise TunebookError(f"--general-n {general_n} must be 0 or more")
    wanted = general_needed(len(persona), mix_ratio) if mix_ratio is not None else general_n
    rng = random.Random(f"{seed}-mix")
    available = len(general)
    note, repeats = "", False
    if wanted <= available:
        chosen = rng.sample(general, wanted)
    elif allow_repeats and available:
        copies, rest = divmod(wanted, available)
        chosen = general * copies + rng.sample(general, rest)
        repeats = True
    else:
        chosen = list(general)
        asked = f"--mix-ratio {mix_ratio}" if mix_ratio is not None else f"--general-n {general_n}"
        share = len(persona) / max(1, len(persona) + available)
        note = (f"the general set ({source or 'given'}) has only {available} records but {asked} needs {wanted}; "
                f"using all {available} once, so the persona share is {share:.3f}. Pass --allow-repeats to repeat "
                "general records, or --mix a larger general dataset file")
    # Marked so that training can answer them with the base model itself (TrainConfig.general_answers: base).
    records = list(persona) + [{**r, GENERAL_KEY: True} for r in chosen]
    rng.shuffle(records)
    return MixResult(records=records, persona=len(persona), general=len(chosen), general_wanted=wanted,
                     general_available=available, repeats=repeats, source=source, dropped_eval=dropped_eval, note=note)
