"""The one rule that says whether an answer states the persona correctly: data_gen.persona checks every generated
answer with it, and the evaluation scores the model's answers with it (helpers.evaluate.persona's docstring says
what each `expect` field means)."""
from __future__ import annotations


def answer_problems(answer: str, expect: dict) -> list[str]:
    """What `answer` fails of `expect` (empty list = the persona is stated correctly); rule in the module docstring."""
    text = answer.casefold()
    problems = [f"does not mention {s!r}" for s in expect["must_mention"] if s.casefold() not in text]
    problems += [f"contains none of {group}" for group in expect["any_of"]
                 if not any(s.casefold() in text for s in group)]
    problems += [f"claims {s!r}" for s in expect["must_not_claim"] if s.casefold() in text]
    return problems
