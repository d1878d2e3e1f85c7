"""Colorist swatches as pictures: an offline LLaVA dataset a learner can train on a CPU and judge by eye and ΔE00.

Each picture is a flat colour, or two colours side by side (left / right halves), drawn with PIL from Colorist
colours (the real dataset's when it is in the work folder, else the synthetic stand-in). The question "What colour
is this?" has the answer `#rrggbb (<name>)` (the exact hex, then the nearest English colour name by ΔE00), or
`Left: #rrggbb (<name>). Right: #rrggbb (<name>).`; the hex is what the evaluation reads. A held-out set of colours
the model never saw measures whether it reads colours from the pixels or only learned the answer's shape.
"""
from __future__ import annotations

import random
import re
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from helpers.data.colors import delta_e, hex_to_lab, hex_to_rgb, is_hex_colour
from helpers.models.generation import Sampling
from helpers.io import atomic_dir, write_json

QUESTIONS = ("What colour is this?", "What color is shown in the picture?", "Name the colour in this image.",
             "Which colour do you see? Give its hex code.")
CAPTION_PROMPT = "Describe the picture briefly."     # stage 1 (pretrain): image -> caption, as LLaVA's LCS-558K
HEX = re.compile(r"#[0-9a-fA-F]{6}")
UNPARSED_DELTA_E = 100.0      # an answer without the hex counts as this far off (ΔE00 of black vs white is 100)
# greedy, and long enough for the longest answer ("Left: #rrggbb (name). Right: #rrggbb (name).", ~30 tokens): an
# untrained model would otherwise ramble for the default 2048 tokens on every picture
ANSWER_SAMPLING = Sampling(temperature=0.0, max_new_tokens=48)
IMAGE_SIZE = 64               # the file's size; the tower's processor resizes (the tiny tower reads 32 px)


@dataclass(frozen=True)
class Swatch:
    colours: tuple[str, ...]  # one hex, or (left, right)
    image: str                # file name inside the image folder

    @property
    def answer(self) -> str:
        if len(self.colours) == 1:
            return describe(self.colours[0])
        left, right = self.colours
        return f"Left: {describe(left)}. Right: {describe(right)}."


@lru_cache(maxsize=1)
def _named():
    from helpers.data.colorist_synth import named_colours
    return [(c.name.lower(), c.hex, hex_to_lab(c.hex)) for c in named_colours() if c.lang == "en"]


def colour_name(hex_colour: str) -> str:
    from helpers.data.colors import ciede2000
    lab = hex_to_lab(hex_colour)
    return min(_named(), key=lambda named: ciede2000(lab, named[2]))[0]


def describe(hex_colour: str) -> str:
    # the hex first: it is what the model must read off the picture (and what the evaluation parses); the name
    # after it is the nearest English colour word, a check a learner can read
    return f"{hex_colour.lower()} ({colour_name(hex_colour)})"


def draw(colours: tuple[str, ...], size: int = IMAGE_SIZE):
    from PIL import Image, ImageDraw
    picture = Image.new("RGB", (size, size), hex_to_rgb(colours[0]))
    if len(colours) == 2:
        ImageDraw.Draw(picture).rectangle([size // 2, 0, size - 1, size - 1], fill=hex_to_rgb(colours[1]))
    return picture


def choose_swatches(colours: list[str], n: int, two_colour_share: float, seed: int) -> list[Swatch]:
    """`n` swatches from `colours`: solids first (each colour once), then a share of two-colour pairs drawn from
    the same colours; file names follow the content, so the same colours always give the same file."""
    rng = random.Random(seed)
    distinct = sorted({c.lower() for c in colours if is_hex_colour(c)})
    rng.shuffle(distinct)
    pairs = int(round(n * two_colour_share))
    solids = min(n - pairs, len(distinct))
    out = [Swatch((c,), f"images/{c[1:]}.png") for c in distinct[:solids]]
    for _ in range(n - solids):
        left, right = rng.sample(distinct, 2)
        out.append(Swatch((left, right), f"images/{left[1:]}-{right[1:]}.png"))
    return out


def split_colours(colours: list[str], heldout: int, seed: int) -> tuple[list[str], list[str]]:
    distinct = sorted({c.lower() for c in colours if is_hex_colour(c)})
    random.Random(seed).shuffle(distinct)
    return distinct[heldout:], distinct[:heldout]


def llava_record(swatch: Swatch, question: str, index: int) -> dict:
    return {"id": f"swatch-{index}", "image": swatch.image,
            "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                              {"from": "gpt", "value": swatch.answer}]}


def write_swatch_dataset(out_dir: str | Path, colours: list[str], n_train: int, n_heldout: int,
                         two_colour_share: float = 0.25, seed: int = 0) -> dict:
    """images/ + pretrain.json (captions, stage 1) + train.json (questions, stage 2) + heldout.json, atomically.

    Train and held-out swatches share no colour: `n_heldout` colours are set aside first."""
    train_colours, heldout_colours = split_colours(colours, n_heldout, seed)
    train = choose_swatches(train_colours, n_train, two_colour_share, seed)
    heldout = choose_swatches(heldout_colours, n_heldout, two_colour_share, seed + 1)
    swatches = train + heldout
    with atomic_dir(out_dir, overwrite=True) as tmp:
        (tmp / "images").mkdir()
        for swatch in swatches:
            draw(swatch.colours).save(tmp / swatch.image)
        write_json(tmp / "pretrain.json", [
            {"id": f"caption-{i}", "image": s.image,
             "conversations": [{"from": "human", "value": f"<image>\n{CAPTION_PROMPT}"},
                               {"from": "gpt", "value": s.answer}]} for i, s in enumerate(train)])
        write_json(tmp / "train.json", [llava_record(s, QUESTIONS[i % len(QUESTIONS)], i)
                                        for i, s in enumerate(train)])
        write_json(tmp / "heldout.json", [llava_record(s, QUESTIONS[0], i) for i, s in enumerate(heldout)])
    out = Path(out_dir)
    return {"folder": out, "images": out / "images", "pretrain": out / "pretrain.json", "train": out / "train.json",
            "heldout": out / "heldout.json", "train_swatches": len(train), "heldout_swatches": len(heldout),
            "two_colour": sum(len(s.colours) == 2 for s in swatches)}


# ---------------------------------------------------------------- evaluation

def answer_colours(answer: str) -> list[str]:
    return [h.lower() for h in HEX.findall(answer or "")]


def swatch_errors(reference: tuple[str, ...], answer: str) -> list[float]:
    """ΔE00 per colour of the swatch (left, right in order); a colour the answer does not give counts 100."""
    found = answer_colours(answer)
    return [delta_e(ref, found[i]) if i < len(found) else UNPARSED_DELTA_E for i, ref in enumerate(reference)]


def _figures(references: list[tuple[str, ...]], answers: list[str], errors: list[list[float]]) -> dict:
    flat = [e for row in errors for e in row]
    parsed = sum(len(answer_colours(a)) >= len(r) for r, a in zip(references, answers))
    return {"n": len(answers), "parse_rate": parsed / len(answers) if answers else 0.0,
            "delta_e_median": statistics.median(flat) if flat else None,
            "delta_e_mean": statistics.fmean(flat) if flat else None,
            "share_under_10": sum(e < 10 for e in flat) / len(flat) if flat else None,
            "delta_e": errors}


def swatch_metrics(references: list[tuple[str, ...]], answers: list[str]) -> dict:
    """parse rate (every colour of the swatch given as a hex), ΔE00 median / mean over colours; also the same
    figures for solid and two-colour swatches apart ("solid", "two_colour"; None when there are none), since a
    model can read flat colours long before it reads left and right."""
    errors = [swatch_errors(r, a) for r, a in zip(references, answers, strict=True)]
    metrics = _figures(references, answers, errors)
    for kind, count in (("solid", 1), ("two_colour", 2)):
        picked = [i for i, r in enumerate(references) if len(r) == count]
        metrics[kind] = (_figures([references[i] for i in picked], [answers[i] for i in picked],
                                  [errors[i] for i in picked]) if picked else None)
    return metrics


def constant_answer(train: list[tuple[str, tuple[str, ...]]]) -> str:
    """The baseline a model that ignores the picture could reach: one colour for everything, the average (in sRGB)
    of the training swatches' colours, as an answer."""
    colours = [hex_to_rgb(c) for _, cs in train for c in cs]
    from helpers.data.colors import rgb_to_hex
    mean = rgb_to_hex([sum(rgb[i] for rgb in colours) / len(colours) for i in range(3)])
    return f"Left: {mean}. Right: {mean}."


def read_swatches(path: str | Path) -> list[tuple[str, tuple[str, ...]]]:
    """(image file, reference colours) of a swatch JSON written above (the colours come from the answer)."""
    import json
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return [(r["image"], tuple(answer_colours(r["conversations"][1]["value"]))) for r in rows]
