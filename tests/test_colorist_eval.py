"""helpers.evaluate.colorist on hand-made answers: parse failures counted, ΔE00 from helpers.data.colors, tables and grids."""
import json
import statistics

import pytest

from helpers.data.colorist import ColoristDataError, load_colorist, split_heldout, write_colorist
from helpers.evaluate.colorist import colorist_report, colorist_table, read_colorist_heldout
from helpers.data.colors import delta_e
from helpers.encode.templates import SYSTEM_TEMPLATES

REFERENCES = ["#ff0000", "#00ff00", "#0000ff", "#66ccff"]
BEFORE = ["I have no idea.", "#00ee00", "blue, I think", "Try #6cf"]            # 2 of 4 hold a colour
AFTER = ["#ff0000", "It is #00fe00.", "#0000ff", "#66ccfe"]                    # all parse


def test_scores_count_parse_failures_and_use_ciede2000():
    report = colorist_report(["red", "green", "blue", "sky"], REFERENCES, AFTER, BEFORE, "base (adapter off)")
    before, after = report.before, report.after
    assert (before["parsed"], before["parse_rate"]) == (2, 0.5) and (after["parsed"], after["parse_rate"]) == (4, 1.0)
    assert before["delta_e"] == [None, delta_e("#00ff00", "#00ee00"), None, 0.0]   # '#6cf' is '#66ccff' exactly
    expected = [0.0, delta_e("#00ff00", "#00fe00"), 0.0, delta_e("#66ccff", "#66ccfe")]
    assert after["delta_e"] == expected
    assert after["delta_e_mean"] == pytest.approx(statistics.fmean(expected))
    assert after["delta_e_median"] == pytest.approx(statistics.median(expected))
    assert after["share_under_10"] == 1.0 and before["share_under_10"] == 1.0
    rows = report.records()
    assert rows[0] == {"description": "red", "reference": "#ff0000", "before": "I have no idea.", "before_parsed": None,
                       "before_delta_e": None, "after": "#ff0000", "after_parsed": "#ff0000", "after_delta_e": 0.0}
    assert rows[3]["before_parsed"] == "#66ccff"
    json.dumps(rows)
    assert repr(report) == "base (adapter off)\n" + report.table()      # a notebook's text form: no answer dump


def test_table_rows_and_formatting():
    report = colorist_report(["a", "b", "c", "d"], REFERENCES, AFTER, BEFORE)
    lines = report.table().splitlines()
    assert lines[0].split() == ["metric", "before", "after"]
    assert lines[2].split()[-2:] == ["50.0%", "100.0%"] and lines[3].split()[-2:] == ["2/4", "4/4"]
    mean_before = statistics.fmean([delta_e("#00ff00", "#00ee00"), 0.0])
    assert lines[4].split()[-2:] == [f"{mean_before:.2f}", f"{report.after['delta_e_mean']:.2f}"]
    assert lines[6].startswith("share ΔE00 < 10 (parsed answers)")
    none_parsed = colorist_table(None, colorist_report(["a"], ["#ff0000"], ["no colour"]).after).splitlines()
    assert none_parsed[0].split() == ["metric", "after"]
    assert [line.split()[-1] for line in none_parsed[2:]] == ["0.0%", "0/1", "—", "—", "—"]


def test_html_has_table_and_both_swatch_grids():
    html = colorist_report(["红 <b>", "green", "blue", "sky"], REFERENCES, AFTER, BEFORE, "base").html()
    assert html.startswith("<p>base</p><table")
    assert html.index("<h4>before</h4>") < html.index("<h4>after</h4>")
    assert "no colour: I have no idea." in html and "background-color:#00fe00" in html and "红 &lt;b&gt;" in html
    grid = colorist_report(["a"], ["#ff0000"], ["#ff0000"]).grid()
    assert grid.count("background-color:#ff0000") == 2 and "<h4>" not in grid


def test_mismatched_lists_are_refused():
    with pytest.raises(ValueError, match="4 references but 3 answers"):
        colorist_report(["a"] * 4, REFERENCES, AFTER[:3])


def test_read_heldout_gives_the_records_system_prompt(tmp_path):
    records, _, _ = load_colorist("synthetic", n_synthetic=30, seed=0)
    train, held = split_heldout(records, 5, seed=0)
    written = write_colorist(tmp_path / "colorist.jsonl", train, held)
    descriptions, references, systems = read_colorist_heldout(written["heldout"])
    assert len(descriptions) == len(references) == 5
    assert descriptions[0] == held[0]["description"].split(":", 1)[1].strip() and references[0] == held[0]["color"]
    assert systems == [SYSTEM_TEMPLATES["colorist"]] * 5


def test_read_heldout_refuses_a_file_that_is_not_colorist(tmp_path):
    path = tmp_path / "persona.heldout.jsonl"
    path.write_text(json.dumps({"conversation": [{"input": "你是谁？", "output": "我是小助手"}]}, ensure_ascii=False)
                    + "\n", encoding="utf-8")
    with pytest.raises(ColoristDataError, match=r"record 1: the reference answer '我是小助手' is not a hex colour"):
        read_colorist_heldout(path)
