"""Colour science for the Colorist task: find the hex colour in a model answer, measure how far it is from the
reference (CIEDE2000 in CIE L*a*b*), summarise a whole evaluation, and draw swatches in a notebook.

Written by hand on purpose: the only pieces needed are sRGB -> Lab (a dozen lines of published constants) and
the CIEDE2000 formula (~40 lines), checked against all 34 published test pairs in the tests. Pulling in
scikit-image or colour-science (large, not otherwise used) for these would cost learners an install.
"""
from __future__ import annotations

import html
import math
import re
import statistics
from typing import Iterable, Sequence

# --------------------------------------------------------------------------- parsing answers

# A '#' (or the full-width '＃' Chinese keyboards type) followed by exactly 6 or exactly 3 hex digits, not glued
# to letters/digits on either side: "#66ccffa" (7 digits) and "#66ccf" (5) are not colours, and "&#123456;" is an
# HTML character reference, not a colour.
_HEX_RE = re.compile(r"(?<![0-9A-Za-z&])[#＃]([0-9A-Fa-f]{6}|[0-9A-Fa-f]{3})(?![0-9A-Za-z_])")
_STRICT_HEX_RE = re.compile(r"#[0-9A-Fa-f]{6}")


def parse_hex(answer: str) -> str | None:
    """The first hex colour in a model answer, as lower-case '#rrggbb'; None when the answer names none.

    '#66CCFF', '#66ccff<|im_end|>' and 'The colour is #66ccff.' all give '#66ccff'.
    Choice: 3-digit CSS shorthand counts ('#6cf' -> '#66ccff') because CSS defines it as exactly that colour, so
    the answer did name a colour; but a 6-digit colour anywhere in the answer wins over a shorthand before it
    (a shorthand is more often something else, e.g. an issue number '#123'). Digits without '#', rgb(...) and
    colour names are not parsed: the Colorist task asks for a hex code.
    """
    if not isinstance(answer, str):
        return None
    shorthand = None
    for match in _HEX_RE.finditer(answer):
        digits = match.group(1).lower()
        if len(digits) == 6:
            return "#" + digits
        if shorthand is None:
            shorthand = "#" + "".join(ch * 2 for ch in digits)
    return shorthand


def is_hex_colour(text: str) -> bool:
    """True for exactly '#rrggbb' (either case) -- what a Colorist record's `color` must be."""
    return isinstance(text, str) and _STRICT_HEX_RE.fullmatch(text) is not None


def hex_to_rgb(hex_colour: str) -> tuple[int, int, int]:
    if not is_hex_colour(hex_colour):
        raise ValueError(f"{hex_colour!r} is not a hex colour like '#66ccff'")
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def rgb_to_hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{max(0, min(255, int(round(c)))):02x}" for c in rgb)


# --------------------------------------------------------------------------- sRGB -> CIE L*a*b*

# sRGB (IEC 61966-2-1) linear RGB -> XYZ with the D65 white, as tabulated by B. Lindbloom; its rows sum to the
# white point below, so #ffffff maps to L*=100, a*=b*=0 exactly.
_RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
D65_WHITE = (0.95047, 1.00000, 1.08883)
_EPSILON = 216 / 24389   # CIE: (6/29)^3, where the cube-root part of f(t) meets the linear part
_KAPPA = 24389 / 27


def _srgb_to_linear(channel: float) -> float:
    # IEC 61966-2-1 companding: linear segment near black, 2.4 power elsewhere.
    return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4


def _lab_f(t: float) -> float:
    return t ** (1 / 3) if t > _EPSILON else (_KAPPA * t + 16) / 116


def hex_to_lab(hex_colour: str) -> tuple[float, float, float]:
    """'#rrggbb' (sRGB) -> (L*, a*, b*) under D65/2°."""
    linear = [_srgb_to_linear(c / 255) for c in hex_to_rgb(hex_colour)]
    x, y, z = (sum(m * c for m, c in zip(row, linear)) / white for row, white in zip(_RGB_TO_XYZ, D65_WHITE))
    fx, fy, fz = _lab_f(x), _lab_f(y), _lab_f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


# --------------------------------------------------------------------------- CIEDE2000

def ciede2000(lab1: Sequence[float], lab2: Sequence[float], kL: float = 1, kC: float = 1, kH: float = 1) -> float:
    """CIEDE2000 colour difference, following Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference
    formula: implementation notes, supplementary test data, and mathematical observations", eqs. (1)-(22).
    About 1 is a just-noticeable difference; 10 and more reads as a clearly different colour."""
    L1, a1, b1 = lab1
    L2, a2, b2 = lab2
    c_bar7 = ((math.hypot(a1, b1) + math.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - math.sqrt(c_bar7 / (c_bar7 + 25 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    # eq. (7): hue angle in [0, 360), defined as 0 when a' = b = 0.
    h1p = 0.0 if a1p == 0 and b1 == 0 else math.degrees(math.atan2(b1, a1p)) % 360
    h2p = 0.0 if a2p == 0 and b2 == 0 else math.degrees(math.atan2(b2, a2p)) % 360

    d_lp = L2 - L1
    d_cp = c2p - c1p
    if c1p * c2p == 0:          # eq. (10): no hue difference when either colour is achromatic
        d_hp = 0.0
    elif abs(h2p - h1p) <= 180:
        d_hp = h2p - h1p
    elif h2p - h1p > 180:
        d_hp = h2p - h1p - 360
    else:
        d_hp = h2p - h1p + 360
    d_big_hp = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(d_hp / 2))

    l_bar = (L1 + L2) / 2
    c_bar_p = (c1p + c2p) / 2
    if c1p * c2p == 0:          # eq. (14): mean hue, taking the short way round the circle
        h_bar = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        h_bar = (h1p + h2p) / 2
    elif h1p + h2p < 360:
        h_bar = (h1p + h2p + 360) / 2
    else:
        h_bar = (h1p + h2p - 360) / 2

    t = (1 - 0.17 * math.cos(math.radians(h_bar - 30)) + 0.24 * math.cos(math.radians(2 * h_bar))
         + 0.32 * math.cos(math.radians(3 * h_bar + 6)) - 0.20 * math.cos(math.radians(4 * h_bar - 63)))
    d_theta = 30 * math.exp(-(((h_bar - 275) / 25) ** 2))
    c_bar_p7 = c_bar_p ** 7
    r_c = 2 * math.sqrt(c_bar_p7 / (c_bar_p7 + 25 ** 7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / math.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * c_bar_p
    s_h = 1 + 0.015 * c_bar_p * t
    r_t = -math.sin(math.radians(2 * d_theta)) * r_c

    dl, dc, dh = d_lp / (kL * s_l), d_cp / (kC * s_c), d_big_hp / (kH * s_h)
    return math.sqrt(dl * dl + dc * dc + dh * dh + r_t * dc * dh)


def delta_e(hex1: str, hex2: str) -> float:
    """CIEDE2000 between two '#rrggbb' sRGB colours."""
    return ciede2000(hex_to_lab(hex1), hex_to_lab(hex2))


# --------------------------------------------------------------------------- evaluation summary

CLOSE_DELTA_E = 10.0  # "same colour family" line used in the report: ΔE00 < 10


def colorist_metrics(references: list[str], answers: list[str]) -> dict:
    """Summarise answers against reference colours (e.g. before vs after training).

    Returns {"n", "parsed", "parse_rate", "delta_e_mean", "delta_e_median", "share_under_10", "delta_e"}:
    the ΔE00 statistics are over the parsed answers only ("parsed" says how many; None when none parsed);
    "delta_e" lists each answer's ΔE00 (None where no colour was found).
    """
    if len(references) != len(answers):
        raise ValueError(f"{len(references)} references but {len(answers)} answers; they must pair up one to one")
    per_answer: list[float | None] = []
    for index, (reference, answer) in enumerate(zip(references, answers)):
        if not isinstance(reference, str) or not is_hex_colour(reference.strip()):
            raise ValueError(f"reference {index} is {reference!r}, not a hex colour like '#66ccff'")
        predicted = parse_hex(answer)
        per_answer.append(None if predicted is None else delta_e(reference.strip(), predicted))
    found = [d for d in per_answer if d is not None]
    n = len(per_answer)
    return {
        "n": n,
        "parsed": len(found),
        "parse_rate": len(found) / n if n else 0.0,
        "delta_e_mean": statistics.fmean(found) if found else None,
        "delta_e_median": statistics.median(found) if found else None,
        "share_under_10": sum(d < CLOSE_DELTA_E for d in found) / len(found) if found else None,
        "delta_e": per_answer,
    }


# --------------------------------------------------------------------------- notebook HTML

def _swatch_cell(hex_colour: str | None) -> str:
    # Only a validated '#rrggbb' ever reaches the style attribute, so no text from data can inject CSS/HTML.
    if hex_colour is None or not is_hex_colour(hex_colour):
        return '<td class="swatch swatch-none">—</td>'
    colour = hex_colour.lower()
    return (f'<td class="swatch" title="{colour}" '
            f'style="background-color:{colour};width:4em;border:1px solid #ccc"></td>')


def _record_text(record: dict) -> tuple[str, str]:
    """(description, colour) from a Colorist record or an XTuner conversation record."""
    if "conversation" in record:
        turn = record["conversation"][0]
        return str(turn.get("input", "")), str(turn.get("output", ""))
    return str(record.get("description", "")), str(record.get("color", ""))


def swatch_table(records: Iterable[dict], limit: int | None = 20) -> str:
    """HTML table of (description, hex, swatch) for Colorist or conversation records; the first `limit` rows."""
    records = list(records)
    shown = records if limit is None else records[:limit]
    rows = []
    for number, record in enumerate(shown, start=1):
        description, colour = _record_text(record)
        valid = colour.strip() if is_hex_colour(colour.strip()) else None
        rows.append(f"<tr><td>{number}</td><td>{html.escape(description)}</td>"
                    f"<td><code>{html.escape(colour)}</code></td>{_swatch_cell(valid)}</tr>")
    note = f"<p>{len(shown)} of {len(records)} records</p>"
    return ('<table class="tunebook-swatches">'
            "<thead><tr><th>#</th><th>description</th><th>hex</th><th>colour</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{note}")


def swatch_grid(rows: Iterable[Sequence[str]]) -> str:
    """HTML evaluation grid from (description, reference hex, model answer) rows: both swatches and ΔE00.

    An answer with no colour shows its (escaped, shortened) text instead of a swatch and ΔE."""
    body = []
    for number, (description, reference, answer) in enumerate(rows, start=1):
        ref = reference.strip().lower() if is_hex_colour(reference.strip()) else None
        predicted = parse_hex(answer)
        if predicted is not None and ref is not None:
            shown, distance = f"<code>{predicted}</code>", f"{delta_e(ref, predicted):.1f}"
        else:
            text = answer if len(answer) <= 60 else answer[:60] + "…"
            shown, distance = f"no colour: {html.escape(text)}", "—"
        body.append(f"<tr><td>{number}</td><td>{html.escape(description)}</td>"
                    f"<td><code>{html.escape(reference)}</code></td>{_swatch_cell(ref)}"
                    f"<td>{shown}</td>{_swatch_cell(predicted)}<td>{distance}</td></tr>")
    return ('<table class="tunebook-eval">'
            "<thead><tr><th>#</th><th>description</th><th>reference</th><th></th><th>prediction</th><th></th>"
            "<th>ΔE00</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")
