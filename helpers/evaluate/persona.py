"""Did the persona fine-tune work, and did it turn the model into a 复读机? Scoring only (no model here).

Three numbers, each computed the same way before and after training (helpers.evaluate.run generates the answers):

persona correct   share of the persona generator's held-out questions (paraphrases never trained on) whose answer
                  passes its record's `expect` with helpers.data.persona_rules.answer_problems -- the ONE scoring rule
                  (data_gen.persona checks every generated answer with it too). With every test a substring test after casefold():
                  every expect["must_mention"] string occurs (the owner's name, plus the assistant's name / author /
                  model description for the intents that state them), every expect["any_of"] group has a hit
                  (denials for "are you ChatGPT?", AI words for "are you human?"), and no expect["must_not_claim"]
                  phrase occurs ("我是ChatGPT", "I was made by OpenAI", ...). So an answer with the right sentence but
                  another name fails, and so does one that names the owner but claims to be ChatGPT.
复读机 rate        share of the shipped general questions (helpers.data.general_set, eval split, never trained on; nothing
                  about the assistant) whose answer slips into the persona: it contains a persona marker. Markers are
                  the persona facts recorded in the held-out file -- every string of every expect["must_mention"]
                  (owner's name, assistant's name, author, model descriptions) -- plus any phrases passed in. The
                  generator's self-introductions all contain the owner's name ("我是小鲜，伍鲜同志的小助手…"), so that
                  marker catches them; camp2's failure ("我是伍鲜同志的小助手，内在是…" to every question) scores 100%.
                  Matching: casefold substring; a marker made of ASCII letters/digits at an end must meet a non-letter
                  there (so the name "Al" does not fire inside "also"); a marker the question itself contains is not
                  counted for that question (asking about it is not a slip).
similarity        how close the answers to the general questions stay to the base model's answers to the same
to base           questions: the mean of bigram_f1(answer, base answer) below (1.0 for the base itself). It catches
                  damage the marker test cannot see (an answer turned to noise, or the same off-topic sentence).
answer quality    the mean bigram_f1 of the general answers to the shipped reference answers, before and after:
                  whether training made the general answers better or worse (a small base scores low either way;
                  the difference is what counts).
"""
from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from helpers.data.formats import DataFileError, Issue, read_records
from helpers.data.persona_rules import answer_problems
from helpers.evaluate.report_table import html_table, number, percent, text_table


@dataclass(frozen=True)
class PersonaItem:
    """One held-out identity question of data_gen.persona's `<stem>.heldout.jsonl`."""
    id: str
    question: str
    reference: str
    expect: dict

    @property
    def lang(self) -> str:
        return self.expect.get("lang", "")


# ---------------------------------------------------------------- markers and slips

def persona_markers(expects: Iterable[dict], extra: Iterable[str] = ()) -> list[str]:
    """The persona facts of a held-out set (all must_mention strings, first-seen order) plus `extra` phrases."""
    markers = [s for expect in expects for s in expect["must_mention"]] + list(extra)
    return list(dict.fromkeys(m.strip() for m in markers if m and m.strip()))


def _marker_pattern(marker: str) -> re.Pattern:
    text = marker.casefold()
    before = r"(?<![0-9a-z])" if re.match(r"[0-9a-z]", text) else ""
    after = r"(?![0-9a-z])" if re.search(r"[0-9a-z]$", text) else ""
    return re.compile(before + re.escape(text) + after)


def slips(answer: str, markers: Sequence[str], question: str = "") -> list[str]:
    """The persona markers in `answer` (rule in the module docstring); [] = no slip into the persona."""
    text, asked = answer.casefold(), question.casefold()
    return [m for m in markers if _marker_pattern(m).search(text) and not _marker_pattern(m).search(asked)]


# ---------------------------------------------------------------- similarity

def _bigrams(text: str) -> Counter:
    chars = "".join(text.casefold().split())       # whitespace carries no meaning in Chinese; chrF drops it too
    return Counter(chars[i:i + 2] for i in range(len(chars) - 1)) if len(chars) > 1 else Counter([chars])


def bigram_f1(candidate: str, reference: str) -> float:
    """Character-bigram F1 (chrF with n = 2 only and beta = 1): works the same for Chinese and English.

    Both texts are casefolded and stripped of all whitespace; each becomes the multiset of its adjacent character
    pairs (a one-character text is its own single gram). precision = shared pairs / candidate pairs, recall =
    shared pairs / reference pairs, F1 = 2PR / (P + R). Identical texts give 1.0 (two empty texts too), texts with
    no pair in common 0.0. Written here because it is a dozen lines and needs no package; sacrebleu's chrF averages
    n = 1..6 with beta = 2, which is not what this number means.
    """
    a, b = _bigrams(candidate), _bigrams(reference)
    if a == b:
        return 1.0
    shared = sum((a & b).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / sum(a.values()), shared / sum(b.values())
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------- one model's scores

def persona_scores(items: Sequence[PersonaItem], persona_answers: Sequence[str], general_questions: Sequence[str],
                   general_answers: Sequence[str], markers: Sequence[str],
                   base_answers: Sequence[str] | None = None,
                   general_references: Sequence[str] | None = None) -> dict:
    """Scores of one model. base_answers: the base model's answers to the same general questions (None: unknown);
    general_references: the reference answers of those questions (None: no answer-quality score).

    Returns {"persona_n", "persona_correct", "general_n", "repeat_rate", "similarity_to_base", "answer_quality",
    "persona_problems" (per item), "general_slips" (per question), "similarity" and "quality" (per question, or
    None)}; a share is None when its set is empty.
    """
    if len(items) != len(persona_answers):
        raise ValueError(f"{len(items)} persona questions but {len(persona_answers)} answers")
    if len(general_questions) != len(general_answers):
        raise ValueError(f"{len(general_questions)} general questions but {len(general_answers)} answers")
    if base_answers is not None and len(base_answers) != len(general_answers):
        raise ValueError(f"{len(general_answers)} general answers but {len(base_answers)} base answers")
    problems = [answer_problems(a, item.expect) for item, a in zip(items, persona_answers)]
    slipped = [slips(a, markers, q) for q, a in zip(general_questions, general_answers)]
    if general_references is not None and len(general_references) != len(general_answers):
        raise ValueError(f"{len(general_answers)} general answers but {len(general_references)} references")
    similarity = None if base_answers is None else [bigram_f1(a, b) for a, b in zip(general_answers, base_answers)]
    quality = None if general_references is None else [bigram_f1(a, r) for a, r in
                                                        zip(general_answers, general_references)]
    return {"persona_n": len(items),
            "persona_correct": _share(not p for p in problems),
            "general_n": len(general_questions),
            "repeat_rate": _share(bool(s) for s in slipped),
            "similarity_to_base": _mean(similarity),
            "answer_quality": _mean(quality),
            "persona_problems": problems, "general_slips": slipped, "similarity": similarity, "quality": quality}


def _mean(values: Sequence[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def _share(flags: Iterable[bool]) -> float | None:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else None


# ---------------------------------------------------------------- before vs after

METRICS = (("persona_correct", "persona correct", percent),
           ("repeat_rate", "复读机 rate", percent),
           ("similarity_to_base", "similarity to base", number),
           ("answer_quality", "answer quality", number))
# ASCII only: matplotlib's default font has no CJK glyphs (复读机 would print as boxes and warn)
CHART_LABELS = ("persona correct", "persona slips\n(repeater rate)", "similarity\nto base",
                "answer quality\n(F1 to reference)")


def comparison_rows(before: dict | None, after: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the before/after table; without `before` only the after column."""
    labels = {"persona_correct": f"persona correct (held-out identity, n={after['persona_n']})",
              "repeat_rate": f"复读机 rate (general questions, n={after['general_n']})",
              "similarity_to_base": "similarity to base (general, mean bigram F1)",
              "answer_quality": "answer quality (general, bigram F1 to reference)"}
    headers = ["metric", *(["before"] if before is not None else []), "after"]
    rows = []
    for key, _, show in METRICS:
        rows.append([labels[key], *([show(before[key])] if before is not None else []), show(after[key])])
    return headers, rows


def persona_table(before: dict | None, after: dict) -> str:
    return text_table(*comparison_rows(before, after))


def persona_table_html(before: dict | None, after: dict) -> str:
    return html_table(*comparison_rows(before, after))


def persona_chart(before: dict | None, after: dict, title: str = "persona fine-tune: before vs after"):
    """Grouped bars (persona correct, 复读机 rate, similarity to base, answer quality), one colour per model, all on a 0-1 scale.

    Returns a Chart: a matplotlib Figure made without pyplot (no global state, shown once), wrapped so that a notebook
    draws it as PNG even where pyplot was never imported (a bare Figure shows only "<Figure size 640x320 ...>")."""
    from matplotlib.figure import Figure

    series = ([("before", before, "#9aa5b1")] if before is not None else []) + [("after", after, "#2f7ed8")]
    figure = Figure(figsize=(6.4, 3.2))
    axis = figure.add_subplot()
    width = 0.8 / len(series)
    for index, (name, scores, colour) in enumerate(series):
        values = [scores[key] if scores[key] is not None else 0.0 for key, _, _ in METRICS]
        positions = [x - 0.4 + width * (index + 0.5) for x in range(len(METRICS))]
        bars = axis.bar(positions, values, width, label=name, color=colour)
        axis.bar_label(bars, labels=[f"{v:.2f}" if scores[k] is not None else "n/a"
                                     for v, (k, _, _) in zip(values, METRICS)], fontsize=8, padding=2)
    axis.set_xticks(range(len(METRICS)), list(CHART_LABELS))
    axis.set_ylim(0, 1.15)
    axis.set_ylabel("share / score (0-1)")
    axis.set_title(title)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return Chart(figure)


@dataclass
class Chart:
    figure: object   # the matplotlib Figure (save it with .figure.savefig(path))

    def _repr_png_(self) -> bytes:
        import io
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


# ---------------------------------------------------------------- a whole run

@dataclass(repr=False)   # the text form is the table, not every answer
class PersonaReport:
    """A before/after persona run: show it in a notebook (HTML table), .chart(), print .table(), save .records()."""
    items: list[PersonaItem]
    general: list[dict]                                     # {"id", "lang", "question", "reference"}
    markers: list[str]                                      # what counted as a persona slip
    after: dict                                             # persona_scores of the fine-tuned model
    after_answers: tuple[list[str], list[str]]              # (identity answers, general answers)
    before: dict | None = None                              # persona_scores of the base (None: no before column)
    before_answers: tuple[list[str], list[str]] | None = None
    before_label: str = ""                                  # which base the before column is

    def table(self) -> str:
        return persona_table(self.before, self.after)

    def html(self) -> str:
        caption = f"<p>{html.escape(self.before_label)}</p>" if self.before_label else ""
        return caption + persona_table_html(self.before, self.after)

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return (f"{self.before_label}\n" if self.before_label else "") + self.table()

    def chart(self):
        return persona_chart(self.before, self.after)

    def records(self) -> list[dict]:
        """One JSON-able dict per question: answers, what failed, which markers slipped, similarity to base."""
        out = []
        for i, item in enumerate(self.items):
            row = {"set": "persona", "id": item.id, "lang": item.lang, "question": item.question,
                   "reference": item.reference}
            for side, scores, answers in self._sides():
                row[side] = answers[0][i]
                row[f"{side}_problems"] = scores["persona_problems"][i]
            out.append(row)
        for i, general in enumerate(self.general):
            row = {"set": "general", **general}
            for side, scores, answers in self._sides():
                row[side] = answers[1][i]
                row[f"{side}_slips"] = scores["general_slips"][i]
            if self.after["similarity"] is not None:
                row["similarity_to_base"] = self.after["similarity"][i]
            for side, scores, _ in self._sides():
                row[f"{side}_quality"] = scores["quality"][i]
            out.append(row)
        return out

    def _sides(self):
        if self.before is not None:
            yield "before", self.before, self.before_answers
        yield "after", self.after, self.after_answers


def persona_report(items: Sequence[PersonaItem], general: list[dict], after_answers, before_answers=None,
                   markers: Sequence[str] = (), before_label: str = "") -> PersonaReport:
    """Score answers already generated: after_answers / before_answers = (persona answers, general answers)."""
    marker_list = persona_markers((i.expect for i in items), markers)
    questions = [g["question"] for g in general]
    base_general = before_answers[1] if before_answers is not None else None
    references = [g["reference"] for g in general]
    after = persona_scores(items, after_answers[0], questions, after_answers[1], marker_list, base_general, references)
    before = None if before_answers is None else persona_scores(items, before_answers[0], questions,
                                                                before_answers[1], marker_list, base_general,
                                                                references)
    return PersonaReport(list(items), general, marker_list, after, tuple(after_answers), before,
                         None if before_answers is None else tuple(before_answers), before_label)


# ---------------------------------------------------------------- the held-out file

def read_persona_heldout(path: str | Path) -> list[PersonaItem]:
    """Records {"id"?, "conversation": [{"input", "output"}], "expect": {...}} (data_gen.persona's held-out file)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(str(path), "no such file: give the <stem>.heldout.jsonl that data_gen.persona wrote "
                                       "beside the training file")
    items = []
    for item in read_records(path):
        if isinstance(item, Issue):
            raise DataFileError(item.where, item.message)
        problem = _heldout_problem(item.value)
        if problem:
            raise DataFileError(item.where, problem)
        turn = item.value["conversation"][0]
        items.append(PersonaItem(str(item.value.get("id", item.where)), turn["input"], turn["output"],
                                 item.value["expect"]))
    if not items:
        raise DataFileError(str(path), "no records: the held-out file is empty")
    return items


def _heldout_problem(record) -> str:
    if not isinstance(record, dict):
        return "a record must be a JSON object"
    turns = record.get("conversation")
    if not (isinstance(turns, list) and turns and isinstance(turns[0], dict)
            and all(isinstance(turns[0].get(k), str) for k in ("input", "output"))):
        return 'needs "conversation": [{"input": question, "output": reference answer}]'
    expect = record.get("expect")
    if not isinstance(expect, dict):
        return ('has no "expect": this is not a persona held-out file (data_gen.persona writes <stem>.heldout.jsonl '
                'with one); a plain dataset cannot be scored for identity')
    lists = {"must_mention": expect.get("must_mention"), "must_not_claim": expect.get("must_not_claim")}
    for key, value in lists.items():
        if not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            return f'expect["{key}"] must be a list of strings'
    any_of = expect.get("any_of")
    if not (isinstance(any_of, list) and all(isinstance(g, list) and g and all(isinstance(s, str) for s in g)
                                             for g in any_of)):
        return 'expect["any_of"] must be a list of non-empty lists of strings'
    return ""
