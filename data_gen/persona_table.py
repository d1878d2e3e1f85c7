"""Facts + template banks -> a checked table of identity questions and their filled answers (for data_gen.persona).

Everything that can go wrong with template data is caught here, before anything is written: a `{...}` left in any
text (PlaceholderError, naming the template), a fact the answer should state but does not, a false identity claim.
The `expect` dicts built here are the held-out file's scoring spec (documented in data_gen.persona); the rule that
scores an answer against one, `answer_problems`, lives in helpers.data.persona_rules so evaluation and generation share it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

from data_gen import persona_bank_en, persona_bank_zh
from helpers.errors import TunebookError
from helpers.data.persona_rules import answer_problems  # the one scoring rule: evaluation uses it too

BANKS = {"zh": persona_bank_zh, "en": persona_bank_en}
LANG_CHOICES = {"zh": ("zh",), "en": ("en",), "both": ("zh", "en")}
# The intents whose phrasing depends on an optional fact: "<intent>/no_<fact>" answers are used when it is missing.
INTENT_FACT = {"name": "assistant_name", "rename": "assistant_name", "creator": "author",
               "base_model": "model_description"}
NAMES_ASSISTANT = ("identity", "introduce", "name", "greeting", "rename")   # must mention the assistant's own name
PLACEHOLDER = re.compile(r"\{+[^{}]*\}+|[{}]")   # {name}, {{name}}, {} and any stray brace


class PlaceholderError(TunebookError):
    """A template left a `{...}` slot in generated text (the LLaMA-Factory identity.json failure)."""


@dataclass(frozen=True)
class PersonaFacts:
    name: str                               # the learner/owner, e.g. 伍鲜同志
    assistant_name: str | None = None       # the assistant's own name; default: it calls itself <name>的小助手
    author: str | None = None               # who built it; default: answers say <name> fine-tuned it
    model_description: str | None = None    # e.g. 上海AI实验室书生·浦语的1.8B大模型; default: a neutral sentence
    model_description_en: str | None = None  # for English answers; default: model_description

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            value = value.strip() if isinstance(value, str) else value
            object.__setattr__(self, f.name, value or None)
            if value and PLACEHOLDER.search(value):
                raise TunebookError(f"--{f.name.replace('_', '-')} {value!r} contains a brace; persona text must not "
                                    "contain { or } (they look like unfilled template slots)")
        if not self.name:
            raise TunebookError("--name is required: the learner's name the assistant belongs to, e.g. 伍鲜同志")

    def values(self) -> list[str]:
        return [v for v in (self.name, self.assistant_name, self.author, self.model_description,
                            self.model_description_en) if v]


@dataclass(frozen=True)
class Question:
    lang: str
    intent: str
    text: str
    extra: tuple = ()          # (("other", "ChatGPT"),) for templated questions


# ---------------------------------------------------------------- filling and checking text

class _KeepMissing(dict):
    def __missing__(self, key):    # leave unknown slots in place so the placeholder check names them
        return "{" + key + "}"


def fill(template: str, values: dict[str, str], where: str) -> str:
    """Fill `template`'s slots; refuse (PlaceholderError naming `where`) if any `{...}` survives."""
    try:
        text = template.format_map(_KeepMissing(values))
    except (IndexError, ValueError, AttributeError, KeyError) as err:
        raise PlaceholderError(f"persona template {where} cannot be filled ({err}): {template!r}") from None
    left = PLACEHOLDER.findall(text)
    if left:
        raise PlaceholderError(f"persona template {where} leaves the placeholder {left[0]!r} unfilled in {text!r} "
                               f"(template {template!r}; slots available: {', '.join(sorted(values))}). Fix the "
                               "template: a doubled {{slot}} prints as a literal {slot}")
    return text


# ---------------------------------------------------------------- the question/answer table

def _others(bank, facts: PersonaFacts) -> list[tuple[str, str]]:
    """Other assistants to deny being, minus any that overlap a given fact (denying the truth would be wrong)."""
    given = [v.casefold() for v in facts.values()]

    def clash(word: str) -> bool:
        return any(word.casefold() in v or v in word.casefold() for v in given)
    return [(o, m) for o, m in bank.OTHERS if not clash(o) and not clash(m)]


def _questions(lang: str, facts: PersonaFacts) -> list[Question]:
    """Every question of the bank, templated ones expanded per other assistant / maker; duplicates dropped."""
    bank, others = BANKS[lang], _others(BANKS[lang], facts)
    makers = list(dict.fromkeys(m for _, m in others))
    out, seen = [], set()
    for intent, templates in bank.QUESTIONS.items():
        for i, template in enumerate(templates):
            where = f"{lang}/questions/{intent}[{i}]"
            if intent == "not_other":
                expansions = [(("other", o),) for o, _ in others]
            elif intent == "not_other_maker":
                expansions = [(("maker", m),) for m in makers]
            else:
                expansions = [()]
            for extra in expansions:
                text = fill(template, dict(extra), where)
                if text not in seen:
                    seen.add(text)
                    out.append(Question(lang, intent, text, extra))
    return out


def _answer_key(bank, intent: str, facts: PersonaFacts) -> str:
    fact = INTENT_FACT.get(intent)
    if fact and not getattr(facts, fact) and f"{intent}/no_{fact}" in bank.ANSWERS:
        return f"{intent}/no_{fact}"
    return intent


def claims_for(facts: PersonaFacts) -> list[str]:
    """The false-identity phrases of both languages (the held-out must_not_claim list)."""
    phrases = []
    for bank in BANKS.values():
        for other, maker in _others(bank, facts):
            phrases += bank.claims(other, maker)
    return list(dict.fromkeys(phrases))


def expect_for(lang: str, intent: str, facts: PersonaFacts, claims: list[str]) -> dict:
    """What an answer to a question of this intent must state (the held-out "expect" dict)."""
    bank = BANKS[lang]
    mention = [facts.name]
    if intent in NAMES_ASSISTANT and facts.assistant_name:
        mention.append(facts.assistant_name)
    if intent == "creator" and facts.author:
        mention.append(facts.author)
    model = (facts.model_description_en or facts.model_description) if lang == "en" else facts.model_description
    if intent == "base_model" and model:
        mention.append(model)
    any_of = [list(bank.DENIALS)] if intent in ("not_other", "not_other_maker") else []
    if intent == "human":
        any_of.append(list(bank.AI_WORDS))
    return {"intent": intent, "lang": lang, "name": facts.name, "must_mention": list(dict.fromkeys(mention)),
            "any_of": any_of, "must_not_claim": claims}


def answer_table(lang: str, facts: PersonaFacts) -> dict[Question, list[str]]:
    """Each question -> its filled answer phrasings. Checks every template and every answer against its expect."""
    bank, values, claims = BANKS[lang], BANKS[lang].slots(facts), claims_for(facts)
    for key in dict.fromkeys(_answer_key(bank, intent, facts) for intent in bank.QUESTIONS):
        for i, template in enumerate(bank.ANSWERS[key]):   # every template these facts use, sampled or not
            fill(template, {**values, "other": "X", "maker": "Y"}, f"{lang}/answers/{key}[{i}]")
    table = {}
    for question in _questions(lang, facts):
        key = _answer_key(bank, question.intent, facts)
        expect = expect_for(lang, question.intent, facts, claims)
        answers = []
        for i, template in enumerate(bank.ANSWERS[key]):
            where = f"{lang}/answers/{key}[{i}]"
            text = fill(template, {**values, **dict(question.extra)}, where)
            problems = answer_problems(text, expect)
            if problems:
                raise TunebookError(f"persona template {where} filled with these facts {', '.join(problems)}: {text!r}")
            answers.append(text)
        table[question] = answers
    return table
