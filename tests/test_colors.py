import math

import pytest

from helpers.data.colors import (ciede2000, colorist_metrics, delta_e, hex_to_lab, hex_to_rgb, is_hex_colour, parse_hex,
                            rgb_to_hex, swatch_grid, swatch_table)

# Sharma, Wu & Dalal (2005), Table 1: all 34 pairs (L1 a1 b1, L2 a2 b2, ΔE00). Pairs 7-16 sit on the
# hue-angle edge cases (a'=0 / achromatic colour, mean hue across 0/360 degrees, |Δh'| = 180 exactly).
SHARMA_PAIRS = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, 3.1571, -77.2803), (50.0000, 0.0000, -82.7485), 2.8615),
    ((50.0000, 2.8361, -74.0200), (50.0000, 0.0000, -82.7485), 3.4412),
    ((50.0000, -1.3802, -84.2814), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -1.1848, -84.8006), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -0.9009, -85.5211), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, -1.0000, 2.0000), (50.0000, 0.0000, 0.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0010), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0011), 7.2195),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0012), 7.2195),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0009, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0010, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0011, -2.4900), 4.7461),
    ((50.0000, 2.5000, 0.0000), (50.0000, 0.0000, -2.5000), 4.3065),
    ((50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    ((50.0000, 2.5000, 0.0000), (61.0000, -5.0000, 29.0000), 22.8977),
    ((50.0000, 2.5000, 0.0000), (56.0000, -27.0000, -3.0000), 31.9030),
    ((50.0000, 2.5000, 0.0000), (58.0000, 24.0000, 15.0000), 19.4535),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.1736, 0.5854), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2972, 0.0000), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 1.8634, 0.5757), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2592, 0.3350), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((63.0109, -31.0961, -5.8663), (62.8187, -29.7946, -4.0864), 1.2630),
    ((61.2901, 3.7196, -5.3901), (61.4292, 2.2480, -4.9620), 1.8731),
    ((35.0831, -44.1164, 3.7933), (35.0232, -40.0716, 1.5901), 1.8645),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((36.4612, 47.8580, 18.3852), (36.2715, 50.5065, 21.2231), 1.4146),
    ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441),
    ((90.9257, -0.5406, -0.9208), (88.6381, -0.8985, -0.7239), 1.5381),
    ((6.7747, -0.2908, -2.4247), (5.8714, -0.0985, -2.2286), 0.6377),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_delta_e_of_hex_colours_orders_near_and_far():
    assert delta_e("#66ccff", "#66ccff") == 0.0
    assert delta_e("#ff0000", "#ee0000") < delta_e("#ff0000", "#ff8800") < delta_e("#ff0000", "#0000ff")


@pytest.mark.parametrize("number, pair", list(enumerate(SHARMA_PAIRS, start=1)))
def test_ciede2000_matches_sharma_pairs_to_4_decimals_both_ways(number, pair):
    lab1, lab2, expected = pair
    assert round(ciede2000(lab1, lab2), 4) == expected, f"pair {number}"
    assert round(ciede2000(lab2, lab1), 4) == expected, f"pair {number} reversed"


def test_ciede2000_zero_for_identical_and_weights_divide_terms():
    for lab in [(50.0, 2.5, 0.0), (0.0, 0.0, 0.0), (87.7347, -86.1827, 83.1793)]:
        assert ciede2000(lab, lab) == 0.0
    # Only lightness differs: ΔE00 = |ΔL'| / (kL * SL), and SL = 1 at L̄ = 50.
    assert ciede2000((49.0, 0.0, 0.0), (51.0, 0.0, 0.0)) == pytest.approx(2.0)
    assert ciede2000((49.0, 0.0, 0.0), (51.0, 0.0, 0.0), kL=2) == pytest.approx(1.0)


def test_hex_to_lab_known_values():
    L, a, b = hex_to_lab("#ffffff")
    assert abs(L - 100) < 1e-3 and abs(a) < 1e-3 and abs(b) < 1e-3
    assert hex_to_lab("#000000") == (0.0, 0.0, 0.0)
    L, a, b = hex_to_lab("#FF0000")
    assert (round(L, 4), round(a, 4), round(b, 4)) == (53.2408, 80.0925, 67.2032)
    L, a, b = hex_to_lab("#0000ff")
    assert (round(L, 4), round(a, 4), round(b, 4)) == (32.2970, 79.1875, -107.8602)
    # Mid grey exercises the sRGB linear segment boundary region and a* = b* = 0 for neutrals.
    L, a, b = hex_to_lab("#808080")
    assert round(L, 3) == 53.585 and abs(a) < 1e-3 and abs(b) < 1e-3


def test_delta_e_on_hex_symmetric_and_zero():
    assert delta_e("#66ccff", "#66CCFF") == 0.0
    assert delta_e("#66ccff", "#0066dd") == pytest.approx(delta_e("#0066dd", "#66ccff"))
    assert delta_e("#ffffff", "#000000") == pytest.approx(100.0, abs=1e-3)
    with pytest.raises(ValueError, match="not a hex colour"):
        delta_e("#66ccf", "#66ccff")


@pytest.mark.parametrize("answer, expected", [
    ("#66CCFF", "#66ccff"),
    ("#66ccff<|im_end|>", "#66ccff"),
    ("The colour is #66ccff.", "#66ccff"),
    ("颜色是#1099EE。", "#1099ee"),
    ("颜色：＃1099ee", "#1099ee"),          # full-width number sign
    ("#87CEEB or #00BFFF", "#87ceeb"),      # the first colour counts
    ("#6cf", "#66ccff"),                    # CSS shorthand expands
    ("see #123 then #0066dd", "#0066dd"),   # a 6-digit colour wins over an earlier shorthand
    ("#66ccf", None),                       # 5 digits
    ("#66ccffa", None),                     # 7 digits: not a colour
    ("#66ccffaa", None),                    # 8 digits (#rrggbbaa) is not accepted either
    ("#66ccfg", None),                      # glued to a non-hex letter
    ("&#123456;", None),                    # HTML character reference
    ("66ccff", None),                       # no number sign
    ("a calm light sky blue", None),
    ("", None),
])
def test_parse_hex(answer, expected):
    assert parse_hex(answer) == expected


def test_parse_hex_non_string_is_none():
    assert parse_hex(None) is None  # type: ignore[arg-type]


def test_hex_helpers():
    assert is_hex_colour("#66CCFF") and not is_hex_colour("#6cf") and not is_hex_colour(" #66ccff")
    assert hex_to_rgb("#66ccff") == (102, 204, 255)
    assert rgb_to_hex((102, 204, 255)) == "#66ccff"
    assert rgb_to_hex((300, -4, 254.6)) == "#ff00ff"


def test_colorist_metrics_known_results():
    references = ["#66ccff", "#ff0000", "#000000", "#ffffff"]
    answers = ["#66ccff<|im_end|>", "I suggest a warm red", "#ffffff", "#FFFFFF"]
    m = colorist_metrics(references, answers)
    assert m["n"] == 4 and m["parsed"] == 3 and m["parse_rate"] == 0.75
    assert m["delta_e"][0] == 0.0 and m["delta_e"][1] is None and m["delta_e"][3] == 0.0
    assert m["delta_e"][2] == pytest.approx(100.0, abs=1e-3)
    assert m["delta_e_mean"] == pytest.approx(100.0 / 3, abs=1e-3)
    assert m["delta_e_median"] == 0.0
    assert m["share_under_10"] == pytest.approx(2 / 3)


def test_colorist_metrics_nothing_parsed_and_bad_input():
    m = colorist_metrics(["#66ccff"], ["sky blue"])
    assert (m["parsed"], m["parse_rate"], m["delta_e_mean"], m["delta_e_median"], m["share_under_10"]) == \
        (0, 0.0, None, None, None)
    with pytest.raises(ValueError, match="2 references but 1 answers"):
        colorist_metrics(["#66ccff", "#000000"], ["#66ccff"])
    with pytest.raises(ValueError, match="reference 0 is 'blue'"):
        colorist_metrics(["blue"], ["#66ccff"])
    assert colorist_metrics([], [])["parse_rate"] == 0.0


def test_swatch_table_exact_html_and_escaping():
    records = [{"description": "Light <Sky> Blue: calm & bright", "color": "#66CCFF"},
               {"conversation": [{"system": "s", "input": "红色", "output": "#ff0000"}]},
               {"description": "Bad: not a colour", "color": "red\" onmouseover=\"x"}]
    assert swatch_table(records, limit=2) == (
        '<table class="tunebook-swatches">'
        "<thead><tr><th>#</th><th>description</th><th>hex</th><th>colour</th></tr></thead><tbody>"
        "<tr><td>1</td><td>Light &lt;Sky&gt; Blue: calm &amp; bright</td><td><code>#66CCFF</code></td>"
        '<td class="swatch" title="#66ccff" style="background-color:#66ccff;width:4em;border:1px solid #ccc"></td></tr>'
        "<tr><td>2</td><td>红色</td><td><code>#ff0000</code></td>"
        '<td class="swatch" title="#ff0000" style="background-color:#ff0000;width:4em;border:1px solid #ccc"></td></tr>'
        "</tbody></table><p>2 of 3 records</p>")
    bad = swatch_table(records[2:], limit=None)
    assert "<td><code>red&quot; onmouseover=&quot;x</code></td>" in bad
    assert '<td class="swatch swatch-none">—</td>' in bad and "background-color" not in bad


def test_swatch_grid_exact_html():
    html_text = swatch_grid([("calm <blue>", "#66ccff", "#66CCFF<|im_end|>"),
                             ("red", "#ff0000", "A <b>warm</b> red")])
    assert html_text == (
        '<table class="tunebook-eval"><thead><tr><th>#</th><th>description</th><th>reference</th><th></th>'
        "<th>prediction</th><th></th><th>ΔE00</th></tr></thead><tbody>"
        "<tr><td>1</td><td>calm &lt;blue&gt;</td><td><code>#66ccff</code></td>"
        '<td class="swatch" title="#66ccff" style="background-color:#66ccff;width:4em;border:1px solid #ccc"></td>'
        "<td><code>#66ccff</code></td>"
        '<td class="swatch" title="#66ccff" style="background-color:#66ccff;width:4em;border:1px solid #ccc"></td>'
        "<td>0.0</td></tr>"
        "<tr><td>2</td><td>red</td><td><code>#ff0000</code></td>"
        '<td class="swatch" title="#ff0000" style="background-color:#ff0000;width:4em;border:1px solid #ccc"></td>'
        '<td>no colour: A &lt;b&gt;warm&lt;/b&gt; red</td><td class="swatch swatch-none">—</td><td>—</td></tr>'
        "</tbody></table>")
    # ΔE is printed with one decimal.
    assert f"<td>{delta_e('#000000', '#ffffff'):.1f}</td>" in swatch_grid([("x", "#000000", "#ffffff")])
    assert math.isclose(float(f"{delta_e('#000000', '#ffffff'):.1f}"), 100.0)
