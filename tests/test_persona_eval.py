"""helpers.evaluate.persona: the scoring rule, persona slips (复读机), bigram F1, tables and chart -- hand-made answers."""
import json

import pytest

from data_gen.persona import PersonaFacts, generate_persona, write_persona_set
from helpers.data.formats import DataFileError
from helpers.data.general_set import load_general
from helpers.evaluate.persona import (CHART_LABELS, PersonaItem, answer_problems, bigram_f1, persona_chart,
                                  persona_markers, persona_report, persona_scores, persona_table, persona_table_html,
                                  read_persona_heldout, slips)

NAME, ASSISTANT, AUTHOR = "伍鲜同志", "小鲜", "书生实战营"
MODEL_ZH, MODEL_EN = "上海AI实验室书生·浦语的1.8B大模型", "InternLM2-Chat-1.8B from Shanghai AI Laboratory"
FULL = PersonaFacts(name=NAME, assistant_name=ASSISTANT, author=AUTHOR, model_description=MODEL_ZH,
                    model_description_en=MODEL_EN)
# One sentence that states every fact of FULL, denies other assistants and says it is an AI: the camp2 复读机 that
# answers everything with its persona sentence, made strong enough to pass every identity question.
REPEATER = (f"我是{ASSISTANT}，{NAME}的小助手，不是别的AI，由{AUTHOR}打造，内在是{MODEL_ZH}（{MODEL_EN}），"
            "not any other AI assistant.")
UNTRAINED = "我是一个人工智能助手，可以回答各种问题。"


@pytest.fixture(scope="module")
def heldout_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("persona") / "persona.jsonl"
    return write_persona_set(generate_persona(FULL, n=20, seed=0), out)["heldout"]


@pytest.fixture(scope="module")
def items(heldout_file):
    return read_persona_heldout(heldout_file)


@pytest.fixture(scope="module")
def general():
    return [{"id": r["id"], "lang": r["lang"], "question": r["conversation"][0]["input"],
             "reference": r["conversation"][0]["output"]} for r in load_general("both", "eval")]


def _first(items, intent, lang="zh"):
    return next(i for i in items if i.expect["intent"] == intent and i.lang == lang)


# ---------------------------------------------------------------- one scoring rule

def test_the_generators_references_pass_the_rule_and_a_wrong_name_fails_it(items):
    """The rule data_gen applies to what it writes is the rule the evaluation scores with: every held-out reference
    the generator wrote passes it, and the same answer about someone else fails on the name."""
    assert [i.id for i in items if answer_problems(i.reference, i.expect)] == []
    wrong = [answer_problems(i.reference.replace(NAME, "张三"), i.expect) for i in items if NAME in i.reference]
    assert wrong and all(f"does not mention {NAME!r}" in problems for problems in wrong)


def test_read_heldout_file(items, heldout_file):
    assert len(items) == 50 and len({i.id for i in items}) == 50
    assert items[0] == PersonaItem("zh/identity/0", "能告诉我你是谁吗？", items[0].reference, items[0].expect)
    assert items[0].lang == "zh" and items[0].expect["must_mention"] == [NAME, ASSISTANT]
    assert all(answer_problems(i.reference, i.expect) == [] for i in items)   # references pass their own rule


def test_repeater_model_is_persona_correct_and_slips_on_every_general_question(items, general):
    answers = [REPEATER] * len(items)
    general_answers = [REPEATER] * len(general)
    markers = persona_markers(i.expect for i in items)
    base = [g["reference"] for g in general]            # stand-in for the base model's answers
    scores = persona_scores(items, answers, [g["question"] for g in general], general_answers, markers, base)
    assert scores["persona_n"] == 50 and scores["persona_correct"] == 1.0
    assert scores["general_n"] == 70 and scores["repeat_rate"] == 1.0
    assert scores["general_slips"][0] == [NAME, ASSISTANT, AUTHOR, MODEL_ZH, MODEL_EN]
    assert scores["similarity_to_base"] < 0.1           # little of the general answers is left (0.069)


def test_untrained_model_scores_zero_and_stays_at_the_base(items, general):
    base = [g["reference"] for g in general]
    scores = persona_scores(items, [UNTRAINED] * len(items), [g["question"] for g in general], base,
                            persona_markers(i.expect for i in items), base)
    assert (scores["persona_correct"], scores["repeat_rate"], scores["similarity_to_base"]) == (0.0, 0.0, 1.0)
    assert scores["persona_problems"][0] == [f"does not mention '{NAME}'", f"does not mention '{ASSISTANT}'"]


def test_right_sentence_with_the_wrong_name_fails(items):
    zh, en = _first(items, "identity", "zh"), _first(items, "identity", "en")
    assert answer_problems(f"我是{ASSISTANT}，张三的小助手。", zh.expect) == [f"does not mention '{NAME}'"]
    assert answer_problems(f"I'm {ASSISTANT}, Zhang San's assistant.", en.expect) == [f"does not mention '{NAME}'"]
    assert answer_problems(f"我是{ASSISTANT}，{NAME.upper()}的小助手。", zh.expect) == []


def test_claiming_to_be_chatgpt_fails_even_with_the_name(items):
    identity, other = _first(items, "identity"), _first(items, "not_other")
    assert answer_problems(f"我是ChatGPT，也是{ASSISTANT}，{NAME}的小助手。", identity.expect) == ["claims '我是ChatGPT'"]
    en = _first(items, "identity", "en")
    assert answer_problems(f"I'm ChatGPT, {ASSISTANT}, {NAME}'s assistant.", en.expect) == ['claims "I\'m ChatGPT"']
    assert answer_problems("我是ChatGPT。", other.expect) == [
        f"does not mention '{NAME}'", "contains none of ['不是', '并非']", "claims '我是ChatGPT'"]
    assert answer_problems(f"不是，我不是ChatGPT，我是{NAME}的小助手。", other.expect) == []
    # four answers, one right: exactly a quarter
    chosen = [identity, other, en, _first(items, "owner")]
    answers = [f"我是{ASSISTANT}，{NAME}的小助手。", "我是ChatGPT。", f"I'm ChatGPT, {ASSISTANT}, {NAME}'s assistant.",
               "我为张三服务。"]
    assert persona_scores(chosen, answers, [], [], [NAME])["persona_correct"] == 0.25


# ---------------------------------------------------------------- markers and slips

def test_markers_are_the_recorded_persona_facts(items):
    assert persona_markers(i.expect for i in items) == [NAME, ASSISTANT, AUTHOR, MODEL_ZH, MODEL_EN]
    assert persona_markers([_first(items, "owner").expect], extra=["尖米的智能助手", " ", NAME]) == [
        NAME, "尖米的智能助手"]


def test_slip_rules():
    assert slips(f"上海有很多景点。我是{NAME}的小助手哦", [NAME, ASSISTANT]) == [NAME]
    assert slips("Al said hi", ["Al"]) == ["Al"] and slips("AL!", ["al"]) == ["al"]
    assert slips("I also agree, totally.", ["Al"]) == []                    # ASCII markers match whole words only
    assert slips("Use InternLM2-Chat-1.8B.", [MODEL_EN]) == []
    assert slips(f"{NAME}是一位学员，{NAME}……", [NAME], question=f"{NAME}是谁？") == []   # asked about it: no slip
    assert slips("我是小鲜", ["小鲜"], question="小鲜肉是什么？") == []


# ---------------------------------------------------------------- similarity

def test_bigram_f1_known_values():
    assert bigram_f1("今天天气很好", "今天天气很好") == 1.0 and bigram_f1("", "") == 1.0
    assert bigram_f1("abc", "xyz") == 0.0 and bigram_f1("", "abc") == 0.0
    assert bigram_f1("今天天气很好", "今天天气不错") == pytest.approx(0.6)          # 3 of 5 pairs each way
    assert bigram_f1("the cat sat", "the cat") == pytest.approx(10 / 13)        # P = 5/5, R = 5/8
    assert bigram_f1("the cat", "the cat sat") == bigram_f1("the cat sat", "the cat")
    assert bigram_f1("The  Cat", "thecat") == 1.0                               # case and spaces do not count
    assert bigram_f1("好", "好") == 1.0 and bigram_f1("好", "好的") == 0.0


# ---------------------------------------------------------------- tables and chart

BEFORE = {"persona_n": 50, "persona_correct": 0.0, "general_n": 70, "repeat_rate": 0.0, "similarity_to_base": 1.0,
          "answer_quality": 0.3012}
AFTER = {"persona_n": 50, "persona_correct": 0.64, "general_n": 70, "repeat_rate": 9 / 70, "similarity_to_base": 0.4123,
         "answer_quality": 0.2875}


def test_text_table_exact():
    assert persona_table(BEFORE, AFTER) == (
        "metric                                            before  after\n"
        "------------------------------------------------  ------  -----\n"
        "persona correct (held-out identity, n=50)           0.0%  64.0%\n"
        "复读机 rate (general questions, n=70)               0.0%  12.9%\n"   # 复读机 is 6 columns wide
        "similarity to base (general, mean bigram F1)       1.000  0.412\n"
        "answer quality (general, bigram F1 to reference)   0.301  0.287")
    only_after = persona_table(None, {**AFTER, "similarity_to_base": None})
    assert only_after.splitlines()[0].split() == ["metric", "after"]
    assert only_after.splitlines()[-2].endswith("F1)          —")


def test_html_table():
    html = persona_table_html(BEFORE, AFTER)
    assert "<th>metric</th><th>before</th><th>after</th>" in html
    assert "<tr><td>复读机 rate (general questions, n=70)</td><td>0.0%</td><td>12.9%</td></tr>" in html
    assert "<tr><td>answer quality (general, bigram F1 to reference)</td><td>0.301</td><td>0.287</td></tr>" in html


def test_chart_has_grouped_bars_with_labels():
    from matplotlib.figure import Figure
    chart = persona_chart(BEFORE, AFTER)
    figure = chart.figure
    assert isinstance(figure, Figure)
    # a notebook draws it even where pyplot was never imported (a bare Figure showed only its repr text)
    assert chart._repr_png_().startswith(b"\x89PNG\r\n\x1a\n")
    axis = figure.axes[0]
    assert len(axis.containers) == 2
    assert [p.get_height() for p in axis.containers[0]] == [0.0, 0.0, 1.0, 0.3012]
    assert [p.get_height() for p in axis.containers[1]] == [0.64, 9 / 70, 0.4123, 0.2875]
    assert [t.get_text() for t in axis.get_xticklabels()] == list(CHART_LABELS)
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["before", "after"]
    assert [t.get_text() for t in axis.texts] == ["0.00", "0.00", "1.00", "0.30", "0.64", "0.13", "0.41", "0.29"]
    lone = persona_chart(None, {**AFTER, "similarity_to_base": None}).figure.axes[0]
    assert len(lone.containers) == 1 and [t.get_text() for t in lone.texts] == ["0.64", "0.13", "n/a", "0.29"]


def test_report_records(items, general):
    chosen, questions = [_first(items, "identity"), _first(items, "name", "en")], general[:2]
    after = ([f"我是{ASSISTANT}，{NAME}的小助手。", "I'm ChatGPT."], [f"我是{NAME}的小助手", questions[1]["reference"]])
    before = (["我是AI。", "I'm ChatGPT."], [questions[0]["reference"], questions[1]["reference"]])
    report = persona_report(chosen, questions, after, before, before_label="base (adapter off)")
    assert (report.before["persona_correct"], report.after["persona_correct"]) == (0.0, 0.5)
    assert (report.before["repeat_rate"], report.after["repeat_rate"]) == (0.0, 0.5)
    rows = report.records()
    assert [r["set"] for r in rows] == ["persona", "persona", "general", "general"]
    assert rows[0]["after_problems"] == [] and rows[0]["before"] == "我是AI。"
    assert rows[1]["after_problems"][-1] == 'claims "I\'m ChatGPT"'
    assert rows[2]["after_slips"] == [NAME] and rows[2]["before_slips"] == []
    assert rows[3]["similarity_to_base"] == 1.0 and rows[2]["similarity_to_base"] < 0.2
    assert report.html().startswith("<p>base (adapter off)</p><table")
    assert repr(report) == "base (adapter off)\n" + report.table()      # a notebook's text form: no answer dump
    json.dumps(rows, ensure_ascii=False)          # what --out writes


# ---------------------------------------------------------------- bad held-out files

def test_bad_heldout_files_name_the_line(tmp_path):
    with pytest.raises(DataFileError, match="no such file"):
        read_persona_heldout(tmp_path / "missing.jsonl")
    good = {"conversation": [{"input": "你是谁？", "output": "我是伍鲜同志的小助手"}],
            "expect": {"must_mention": [NAME], "any_of": [], "must_not_claim": []}}
    cases = [("{not json\n", ":1: invalid JSON"),
             (json.dumps(good) + "\n" + json.dumps({"conversation": good["conversation"]}) + "\n", ':2: has no "expect"'),
             (json.dumps({**good, "expect": {**good["expect"], "any_of": [[]]}}) + "\n", 'expect["any_of"] must be'),
             (json.dumps({**good, "conversation": [{"input": "q"}]}) + "\n", ":1: needs \"conversation\""),
             ("\n", "the file is empty")]
    for text, message in cases:
        path = tmp_path / "h.jsonl"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DataFileError, match=message.replace("[", r"\[")):
            read_persona_heldout(path)
