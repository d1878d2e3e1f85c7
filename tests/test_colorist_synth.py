import re

import pytest

from helpers.data.colorist_synth import (EN_WORDS, ZH_CHROMA, ZH_HUES, ZH_LIGHTNESS, colour_words, named_colours,
                                    synthetic_records)
from helpers.data.colors import is_hex_colour, parse_hex
from helpers.data.formats import conversations_from_records, load_conversations
from helpers.io import write_jsonl

HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def records():
    return synthetic_records(1000, seed=0)


def test_named_colour_table():
    table = named_colours()
    assert len(table) >= 300
    assert {c.lang for c in table} == {"en", "zh"}
    names = [c.name for c in table]
    assert len(names) == len(set(names))
    assert {"天蓝色", "胭脂红", "月白", "黛青"} <= set(names)


def test_css_names_match_the_css_table():
    # Our English rows that are CSS/X11 names must carry the CSS value (matplotlib ships the CSS4 table).
    from matplotlib.colors import CSS4_COLORS
    checked = 0
    for colour in named_colours():
        key = colour.name.lower().replace(" ", "")
        if colour.lang == "en" and key in CSS4_COLORS:
            assert colour.hex == CSS4_COLORS[key].lower(), colour
            checked += 1
    assert checked >= 135


def test_records_parse_and_validate(records):
    assert len(records) == 1000
    for record in records:
        assert set(record) == {"description", "color", "synthetic"} and record["synthetic"] is True
        assert is_hex_colour(record["color"]) and parse_hex(record["color"]) == record["color"]
        name, sep, text = record["description"].partition(": ")
        assert sep and name.strip() and text.strip() and ":" not in name
    langs = {"zh" if HAN.search(r["description"]) else "en" for r in records}
    assert langs == {"en", "zh"}
    # No exact duplicates; every named colour appears once unchanged before variants.
    assert len({(r["description"], r["color"]) for r in records}) == 1000
    assert {c.hex for c in named_colours()} <= {r["color"] for r in records}


def test_descriptions_match_their_own_colour(records):
    for record in records:
        words = colour_words(record["color"])
        text = record["description"].partition(": ")[2]
        if HAN.search(text):
            assert ZH_HUES[words["hue"]] in text, record
            if words["chroma"] != "neutral":
                assert ZH_LIGHTNESS[words["lightness"]] in text and ZH_CHROMA[words["chroma"]] in text, record
        else:
            assert words["hue"] in text, record
            if words["chroma"] != "neutral":
                assert EN_WORDS[words["lightness"]] in text and EN_WORDS[words["chroma"]] in text, record


@pytest.mark.parametrize("hex_colour, expected", [
    ("#ffffff", ("very_light", "neutral", "white")),
    ("#000000", ("very_dark", "neutral", "black")),
    ("#808080", ("medium", "neutral", "gray")),
    ("#ff0000", ("medium", "vivid", "red")),
    ("#87ceeb", ("light", "soft", "blue")),
    ("#8b4513", ("dark", "rich", "brown")),
    ("#808000", ("medium", "rich", "olive")),
    ("#f5f5dc", ("very_light", "grayish", "beige")),
    ("#ffb6c1", ("very_light", "soft", "pink")),
    ("#00ced1", ("light", "rich", "cyan")),
    ("#228b22", ("medium", "vivid", "green")),
])
def test_colour_words_known_colours(hex_colour, expected):
    words = colour_words(hex_colour)
    assert (words["lightness"], words["chroma"], words["hue"]) == expected


def test_deterministic_for_a_seed():
    assert synthetic_records(200, seed=7) == synthetic_records(200, seed=7)
    assert synthetic_records(200, seed=7) != synthetic_records(200, seed=8)
    assert synthetic_records(50, seed=7) == synthetic_records(200, seed=7)[:50]


def test_synthetic_file_loads_as_colorist_without_issues(tmp_path, records):
    path = tmp_path / "raw.jsonl"
    write_jsonl(path, records)
    loaded = load_conversations(path)
    assert loaded.format == "colorist" and loaded.issues == [] and len(loaded.conversations) == 1000
    assert conversations_from_records(records[:3])[0].turns[0].input == records[0]["description"].partition(": ")[2]


def test_bad_n():
    with pytest.raises(ValueError, match="n must be at least 1"):
        synthetic_records(0)
