"""Did the Colorist fine-tune work? Parse rate and CIEDE2000 distance to the reference colour, before vs after.

Scoring only (helpers.evaluate.run generates the answers). Per model, over the held-out descriptions that
data_gen.colorist wrote to `<stem>.heldout.jsonl` (helpers.data.colors.colorist_metrics does the arithmetic):
    parse rate          share of answers holding a hex colour (helpers.data.colors.parse_hex: '#rrggbb' anywhere, or
                        a '#rgb' shorthand); an answer without one counts as a failure here and nowhere else
    ΔE00 mean / median  CIEDE2000 between the reference and the parsed colour, over the parsed answers only
    share ΔE00 < 10     of the parsed answers, how many land in the reference's colour family
Read the ΔE numbers together with the parse rate: a model that answers one colour in ten has a ΔE over one answer.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from helpers.data.colorist import ColoristDataError, read_heldout
from helpers.data.colors import CLOSE_DELTA_E, colorist_metrics, is_hex_colour, parse_hex, swatch_grid
from helpers.evaluate.report_table import html_table, number, percent, text_table


def read_colorist_heldout(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """(descriptions, reference hexes, system prompts) of a held-out Colorist file.

    The system prompt is each record's own (data_gen.colorist writes the colorist one into every record, and the
    model was trained with it), "" where a record has none. A reference that is not '#rrggbb' names its line."""
    from helpers.data.formats import load_conversations

    descriptions, references = read_heldout(path)          # checks the file and names bad records
    for index, reference in enumerate(references):
        if not is_hex_colour(reference.strip()):
            raise ColoristDataError(f"{path}: record {index + 1}: the reference answer {reference!r} is not a hex "
                                    "colour like '#66ccff'; is this a Colorist held-out file?")
    if not descriptions:
        raise ColoristDataError(f"{path}: no records: the held-out file is empty")
    systems = [c.turns[0].system for c in load_conversations(path, fmt="conversation").conversations]
    return descriptions, [r.strip() for r in references], systems


def colorist_scores(references: Sequence[str], answers: Sequence[str]) -> dict:
    """helpers.data.colors.colorist_metrics for one model's answers."""
    return colorist_metrics(list(references), list(answers))


def comparison_rows(before: dict | None, after: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the before/after table; without `before` only the after column."""
    def parsed(scores: dict) -> str:
        return f"{scores['parsed']}/{scores['n']}"
    rows = [("parse rate (answers with a hex colour)", lambda s: percent(s["parse_rate"])),
            ("parsed answers", parsed),
            ("ΔE00 mean (parsed answers)", lambda s: number(s["delta_e_mean"], 2)),
            ("ΔE00 median (parsed answers)", lambda s: number(s["delta_e_median"], 2)),
            (f"share ΔE00 < {CLOSE_DELTA_E:g} (parsed answers)", lambda s: percent(s["share_under_10"]))]
    headers = ["metric", *(["before"] if before is not None else []), "after"]
    return headers, [[label, *([show(before)] if before is not None else []), show(after)] for label, show in rows]


def colorist_table(before: dict | None, after: dict) -> str:
    return text_table(*comparison_rows(before, after))


def colorist_table_html(before: dict | None, after: dict) -> str:
    return html_table(*comparison_rows(before, after))


def colorist_grid(descriptions: Sequence[str], references: Sequence[str], answers: Sequence[str],
                  limit: int | None = 20) -> str:
    """helpers.data.colors.swatch_grid of (description, reference, answer) for the first `limit` rows."""
    rows = list(zip(descriptions, references, answers))
    return swatch_grid(rows if limit is None else rows[:limit])


def colorist_grids_html(descriptions: Sequence[str], references: Sequence[str], before: Sequence[str] | None,
                        after: Sequence[str], limit: int | None = 20) -> str:
    """Swatch grids of the before and after answers, one under the other."""
    parts = []
    if before is not None:
        parts += ["<h4>before</h4>", colorist_grid(descriptions, references, before, limit)]
    parts += ["<h4>after</h4>", colorist_grid(descriptions, references, after, limit)]
    return "".join(parts)


@dataclass(repr=False)   # the text form is the table, not every answer
class ColoristReport:
    """A before/after Colorist run: show it in a notebook (HTML table + swatch grids) or print .table()."""
    descriptions: list[str]
    references: list[str]
    after: dict                                  # helpers.data.colors.colorist_metrics of the fine-tuned model
    after_answers: list[str]
    before: dict | None = None                   # ... of the base model (None: no before column)
    before_answers: list[str] | None = None
    before_label: str = ""                       # which base the before column is

    def table(self) -> str:
        return colorist_table(self.before, self.after)

    def html(self, limit: int | None = 20) -> str:
        caption = f"<p>{html.escape(self.before_label)}</p>" if self.before_label else ""
        return caption + colorist_table_html(self.before, self.after) + colorist_grids_html(
            self.descriptions, self.references, self.before_answers, self.after_answers, limit)

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return (f"{self.before_label}\n" if self.before_label else "") + self.table()

    def grid(self, limit: int | None = 20) -> str:
        return colorist_grid(self.descriptions, self.references, self.after_answers, limit)

    def records(self) -> list[dict]:
        """One JSON-able dict per description: each model's answer, the colour parsed from it and its ΔE00."""
        sides = ([("before", self.before, self.before_answers)] if self.before is not None else []) + [
            ("after", self.after, self.after_answers)]
        out = []
        for i, (description, reference) in enumerate(zip(self.descriptions, self.references)):
            row = {"description": description, "reference": reference}
            for side, scores, answers in sides:
                row.update({side: answers[i], f"{side}_parsed": parse_hex(answers[i]),
                            f"{side}_delta_e": scores["delta_e"][i]})
            out.append(row)
        return out


def colorist_report(descriptions: Sequence[str], references: Sequence[str], after_answers: Sequence[str],
                    before_answers: Sequence[str] | None = None, before_label: str = "") -> ColoristReport:
    """Score answers already generated (helpers.evaluate.run makes them)."""
    before = None if before_answers is None else colorist_scores(references, before_answers)
    return ColoristReport(list(descriptions), list(references), colorist_scores(references, after_answers),
                          list(after_answers), before, None if before_answers is None else list(before_answers),
                          before_label)
