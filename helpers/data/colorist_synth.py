"""Offline stand-in for the Colorist dataset: named colours, slightly varied, described in English and Chinese.

Why: the real data (burkelibbey/colors, ~27k rows) needs the Hugging Face hub or ModelScope; a workshop without
internet, and the tests, still need Colorist-shaped records. Every record is marked `"synthetic": true`.

Each record is `{"description": "<Name>: <text>", "color": "#rrggbb", "synthetic": true}`; the name and an ASCII
colon come first (also for Chinese) so XTuner's colors_map_fn rule "keep the text after the first colon" applies.
The words in <text> (lightness, saturation, hue family, lighter/darker than the named colour) are computed from
the record's own -- slightly perturbed -- colour in CIE L*a*b*, so the description stays true to the hex.
"""
from __future__ import annotations

import colorsys
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from helpers.data.colors import hex_to_lab, hex_to_rgb, is_hex_colour, rgb_to_hex


@dataclass(frozen=True)
class NamedColour:
    lang: str    # "en" (CSS/X11 and common English names) or "zh" (Chinese traditional and everyday names)
    name: str
    hex: str


@lru_cache(maxsize=1)
def named_colours() -> tuple[NamedColour, ...]:
    """The table in helpers/assets/colour_names.tsv (lang, name, hex)."""
    text = resources.files("helpers").joinpath("assets/colour_names.tsv").read_text(encoding="utf-8")
    rows = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        lang, name, hex_colour = line.split("\t")
        if lang not in ("en", "zh") or not name or not is_hex_colour(hex_colour):
            raise ValueError(f"colour_names.tsv:{number}: bad row {line!r}")
        rows.append(NamedColour(lang, name, hex_colour.lower()))
    return tuple(rows)


# --------------------------------------------------------------------------- words from a colour

# Thresholds on CIE L* (lightness) and C*ab (chroma); about 2 units of either is a just-visible step.
_LIGHTNESS = ((20, "very_dark"), (40, "dark"), (60, "medium"), (80, "light"), (math.inf, "very_light"))
_CHROMA = ((6, "neutral"), (18, "grayish"), (35, "soft"), (60, "rich"), (math.inf, "vivid"))
# Hue families by HSV hue angle (degrees), the way people name hues; Lab hue is not evenly spaced by name.
# Cyan ends at 190° so sky blues (#87ceeb is 197°) are called blue, as people do.
_HUES = ((15, "red"), (45, "orange"), (70, "yellow"), (90, "yellow-green"), (160, "green"), (190, "cyan"),
         (250, "blue"), (270, "violet"), (320, "purple"), (345, "pink"), (360, "red"))

EN_WORDS = {
    "very_dark": "very dark", "dark": "dark", "medium": "mid-toned", "light": "light", "very_light": "very light",
    "neutral": "neutral", "grayish": "grayish", "soft": "soft", "rich": "rich", "vivid": "vivid",
}
ZH_LIGHTNESS = {"very_dark": "很深", "dark": "偏深", "medium": "明度适中", "light": "偏浅", "very_light": "很浅"}
ZH_CHROMA = {"neutral": "中性", "grayish": "偏灰", "soft": "柔和", "rich": "饱满", "vivid": "鲜艳"}
ZH_HUES = {"red": "红色", "orange": "橙色", "yellow": "黄色", "yellow-green": "黄绿色", "green": "绿色", "cyan": "青色",
           "blue": "蓝色", "violet": "蓝紫色", "purple": "紫色", "pink": "粉红色", "brown": "棕色", "olive": "橄榄色",
           "beige": "米色",
           "gray": "灰色", "white": "白色", "black": "黑色"}


def _band(value: float, bands) -> str:
    return next(name for limit, name in bands if value < limit)


def colour_words(hex_colour: str) -> dict[str, str]:
    """{"lightness", "chroma", "hue"} codes for '#rrggbb' (see EN_WORDS / ZH_* for the words)."""
    lightness, a, b = hex_to_lab(hex_colour)
    chroma = math.hypot(a, b)
    light, chroma_word = _band(lightness, _LIGHTNESS), _band(chroma, _CHROMA)
    if chroma_word == "neutral":
        hue = "white" if lightness >= 92 else "black" if lightness < 12 else "gray"
    else:
        r, g, b_ = (c / 255 for c in hex_to_rgb(hex_colour))
        hue = _band(colorsys.rgb_to_hsv(r, g, b_)[0] * 360, _HUES)
        # Names people use for dark or pale versions of some hue families.
        if hue == "orange" and lightness < 45 and chroma < 60:
            hue = "brown"
        elif hue in ("yellow", "yellow-green") and lightness < 60:
            hue = "olive"
        elif lightness >= 70 and (hue == "orange" and chroma < 35 or hue == "yellow" and chroma < 20):
            hue = "beige"
        elif hue == "red" and lightness >= 65 and chroma < 50:
            hue = "pink"
    return {"lightness": light, "chroma": chroma_word, "hue": hue}


def _relation(variant: str, base: str) -> str:
    """How the variant differs from its named colour: 'same', 'lighter', 'darker', 'stronger' or 'softer'."""
    (l1, a1, b1), (l2, a2, b2) = hex_to_lab(base), hex_to_lab(variant)
    d_light, d_chroma = l2 - l1, math.hypot(a2, b2) - math.hypot(a1, b1)
    if abs(d_light) < 2 and abs(d_chroma) < 4:
        return "same"
    if abs(d_light) >= 2 and abs(d_light) * 2 >= abs(d_chroma):
        return "lighter" if d_light > 0 else "darker"
    return "stronger" if d_chroma > 0 else "softer"


# --------------------------------------------------------------------------- descriptions

_EN_RELATION = {
    "same": [", very close to classic {name}", ", essentially {name}", ""],
    "lighter": [", a little lighter than {name}", ", a lighter take on {name}"],
    "darker": [", a little darker than {name}", ", a deeper take on {name}"],
    "stronger": [", a little more saturated than {name}", ", a bolder version of {name}"],
    "softer": [", a little more muted than {name}", ", a softer version of {name}"],
}
_ZH_RELATION = {
    "same": ["，几乎就是「{name}」", "，接近传统意义上的「{name}」", ""],
    "lighter": ["，比「{name}」略亮一些"], "darker": ["，比「{name}」略暗一些"],
    "stronger": ["，比「{name}」更鲜艳一些"], "softer": ["，比「{name}」更柔和一些"],
}
_EN_CHROMATIC = [
    "A {light}, {chroma} shade of {hue}{rel}.",
    "This is a {chroma} {hue} that looks {light}{rel}.",
    "A colour in the {hue} family, {light} and {chroma}{rel}.",
    "Think of a {light} {hue} with a {chroma} character{rel}.",
]
_EN_NEUTRAL = {
    "gray": ["A {light} neutral gray{rel}.", "This is a {light} gray with almost no colour cast{rel}."],
    "white": ["A clean, almost pure white{rel}.", "This is a bright white with barely any tint{rel}."],
    "black": ["A deep, almost pure black{rel}.", "This is a near-black with barely any tint{rel}."],
}
_ZH_CHROMATIC = [
    "一种{light}、{chroma}的{hue}{rel}。",
    "这是{chroma}的{hue}，色调{light}{rel}。",
    "{light}而{chroma}的{hue}{rel}。",
]
_ZH_NEUTRAL = {
    "gray": ["一种{light}的中性灰色{rel}。", "这是几乎不带色彩倾向的灰色，色调{light}{rel}。"],
    "white": ["一种近乎纯净的白色{rel}。", "这是几乎不带色调的明亮白色{rel}。"],
    "black": ["一种近乎纯黑的颜色{rel}。", "这是几乎不带色调的深黑色{rel}。"],
}


def describe(hex_colour: str, named: NamedColour, rng: random.Random) -> str:
    """The text after '<Name>: ' for `hex_colour`, a variant of the named colour, in the name's language."""
    words = colour_words(hex_colour)
    relation = _relation(hex_colour, named.hex)
    neutral = words["chroma"] == "neutral"
    if named.lang == "zh":
        rel = rng.choice(_ZH_RELATION[relation]).format(name=named.name)
        template = rng.choice(_ZH_NEUTRAL[words["hue"]] if neutral else _ZH_CHROMATIC)
        return template.format(light=ZH_LIGHTNESS[words["lightness"]], chroma=ZH_CHROMA[words["chroma"]],
                               hue=ZH_HUES[words["hue"]], rel=rel)
    rel = rng.choice(_EN_RELATION[relation]).format(name=named.name.lower())
    template = rng.choice(_EN_NEUTRAL[words["hue"]] if neutral else _EN_CHROMATIC)
    return template.format(light=EN_WORDS[words["lightness"]], chroma=EN_WORDS[words["chroma"]],
                           hue=words["hue"], rel=rel)


def _perturb(hex_colour: str, rng: random.Random) -> str:
    """A nearby colour: hue within ±5°, lightness ±0.06, saturation ×0.8–1.1 (HLS), rounded to 8-bit sRGB."""
    h, l, s = colorsys.rgb_to_hls(*(c / 255 for c in hex_to_rgb(hex_colour)))
    h = (h + rng.uniform(-5, 5) / 360) % 1.0
    l = min(1.0, max(0.0, l + rng.uniform(-0.06, 0.06)))
    s = min(1.0, max(0.0, s * rng.uniform(0.8, 1.1)))
    return rgb_to_hex([c * 255 for c in colorsys.hls_to_rgb(h, l, s)])


def synthetic_records(n: int, seed: int = 0) -> list[dict]:
    """`n` Colorist-style records, the same for the same (n, seed). Every named colour appears once, unchanged,
    before any gets a perturbed variant; exact duplicate records are never produced."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    rng = random.Random(seed)
    names = list(named_colours())
    records: list[dict] = []
    seen: set[tuple[str, str]] = set()
    first_pass, attempts = True, 0
    while len(records) < n:
        order = list(range(len(names)))
        rng.shuffle(order)
        for index in order:
            if len(records) >= n:
                break
            attempts += 1
            if attempts > 50 * n + len(names):  # cannot happen with the shipped table; guards an endless loop
                raise RuntimeError("could not produce enough distinct synthetic records")
            named = names[index]
            colour = named.hex if first_pass else _perturb(named.hex, rng)
            description = f"{named.name}: {describe(colour, named, rng)}"
            if (description, colour) in seen:
                continue
            seen.add((description, colour))
            records.append({"description": description, "color": colour, "synthetic": True})
        first_pass = False
    return records
