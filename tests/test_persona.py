"""data_gen.persona: placeholder safety, held-out split, question variety, mixing ratio, camp3 classic file."""
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from data_gen import persona, persona_bank_en, persona_bank_zh
from data_gen.persona import (CLASSIC_SEEDS, PersonaFacts, PlaceholderError, answer_table, fill, generate_persona,
                              heldout_path, main)
from helpers.encode.check_data import check
from helpers.data.formats import load_conversations
from helpers.data.general_set import GENERAL_SET_PATH, general_questions
from helpers.evaluate.persona import answer_problems

NAME, ASSISTANT = "伍鲜同志", "小鲜"
FULL = PersonaFacts(name=NAME, assistant_name=ASSISTANT, author="书生实战营",
                    model_description="上海AI实验室书生·浦语的1.8B大模型",
                    model_description_en="InternLM2-Chat-1.8B from Shanghai AI Laboratory")


def _pairs(records):
    return [(r["conversation"][0]["input"], r["conversation"][0]["output"]) for r in records]


def _norm(text):
    return re.sub(r"[\W_]+", "", text).casefold()


@pytest.fixture(scope="module")
def full_set():
    return generate_persona(FULL, seed=0)


# ---------------------------------------------------------------- placeholders

def test_fill_refuses_any_surviving_placeholder():
    assert fill("我是{name}的小助手", {"name": NAME}, "t") == "我是伍鲜同志的小助手"
    for template in ("我是{nmae}的小助手", "我是{{name}}的小助手", "I'm {}", "stray } brace", "{0}"):
        with pytest.raises(PlaceholderError, match=r"persona template t "):
            fill(template, {"name": NAME}, "t")


@pytest.mark.parametrize("bad", ["我是{nmae}，{name}的小助手。", "我是{{name}}的小助手哦"])
def test_cli_exits_2_naming_the_template_with_a_stray_slot(monkeypatch, tmp_path, capsys, bad):
    monkeypatch.setitem(persona_bank_zh.ANSWERS, "identity", persona_bank_zh.ANSWERS["identity"] + [bad])
    out = tmp_path / "p.jsonl"
    assert main(["--name", NAME, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "persona template zh/answers/identity[4]" in err and bad in err
    assert not out.exists() and not heldout_path(out).exists()


def test_stray_slot_in_a_question_template_fails_too(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(persona_bank_en.QUESTIONS, "owner", ["Are you {owner}'s assistant?"])
    assert main(["--name", NAME, "--lang", "en", "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "persona template en/questions/owner[0] leaves the placeholder '{owner}'" in capsys.readouterr().err


def test_facts_with_braces_or_no_name_are_refused(tmp_path, capsys):
    assert main(["--name", "{name}", "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "contains a brace" in capsys.readouterr().err
    assert main(["--name", "  ", "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "--name is required" in capsys.readouterr().err


# ---------------------------------------------------------------- the template banks

@pytest.mark.parametrize("bank", [persona_bank_zh, persona_bank_en])
def test_every_intent_has_at_least_three_phrasings_for_every_fact_combination(bank):
    assert set(bank.QUESTIONS) == set(persona_bank_zh.QUESTIONS) and len(bank.QUESTIONS) == 18
    for key, answers in bank.ANSWERS.items():
        assert key.split("/")[0] in bank.QUESTIONS
        assert len(answers) >= 3 and len(set(answers)) == len(answers), key


@pytest.mark.parametrize("facts", [FULL, PersonaFacts(name=NAME)])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_answers_name_the_owner_and_leave_no_empty_slot(facts, lang):
    table = answer_table(lang, facts)
    assert len(table) == 171
    for question, answers in table.items():
        for answer in answers:
            assert NAME in answer and "None" not in answer and "{" not in answer
            if facts.assistant_name and question.intent in ("identity", "introduce", "name", "greeting"):
                assert ASSISTANT in answer
            if not facts.author:   # no empty author slot such as "由打造" / "built by ,"
                assert "由打造" not in answer and "by ," not in answer and "by ." not in answer


def test_other_assistants_named_in_the_facts_are_not_denied():
    facts = PersonaFacts(name=NAME, model_description="Meta的Llama 3 8B")
    questions = {q.text for lang in ("zh", "en") for q in answer_table(lang, facts)}
    assert "你是ChatGPT吗？" in questions and not any("Llama" in q or "Meta" in q for q in questions)
    claims = generate_persona(facts, n=10).heldout_records[0]["expect"]["must_not_claim"]
    assert "我是ChatGPT" in claims and not any("Llama" in c or "Meta" in c for c in claims)


# ---------------------------------------------------------------- the generated set

def test_train_and_heldout_split(full_set, tmp_path):
    train_q = {q for q, _ in _pairs(full_set.train_records)}
    held = full_set.heldout_records
    assert full_set.summary["unique_questions"] == {"zh": 146, "en": 146}
    for lang in ("zh", "en"):
        asked = {q for q in train_q if (re.search(r"[\u4e00-\u9fff]", q) is not None) == (lang == "zh")}
        assert len(asked) >= 120
    assert len(held) == 50 and len({r["conversation"][0]["input"] for r in held}) == 50
    assert not {_norm(r["conversation"][0]["input"]) for r in held} & {_norm(q) for q in train_q}
    assert {r["expect"]["intent"] for r in held} == set(persona_bank_zh.QUESTIONS)


def test_heldout_records_carry_a_scorable_expect(full_set):
    for record in full_set.heldout_records:
        expect = record["expect"]
        assert set(expect) == {"intent", "lang", "name", "must_mention", "any_of", "must_not_claim"}
        assert expect["must_mention"][0] == NAME and answer_problems(record["conversation"][0]["output"], expect) == []
        if expect["intent"] in ("identity", "introduce", "name", "greeting", "rename"):
            assert ASSISTANT in expect["must_mention"]
    by_id = {r["id"]: r["expect"] for r in full_set.heldout_records}
    expect = next(e for e in by_id.values() if e["intent"] == "not_other" and e["lang"] == "zh")
    assert answer_problems("我是ChatGPT。", expect) == [f"does not mention '{NAME}'", "contains none of ['不是', '并非']",
                                                        "claims '我是ChatGPT'"]
    assert answer_problems(f"不是，我不是ChatGPT，我是{NAME}的小助手", expect) == []
    expect = next(e for e in by_id.values() if e["intent"] == "base_model" and e["lang"] == "en")
    assert expect["must_mention"] == [NAME, "InternLM2-Chat-1.8B from Shanghai AI Laboratory"]


def test_answers_vary_and_deny_other_assistants(full_set):
    intent_of = {q.text: q.intent for lang in ("zh", "en") for q in answer_table(lang, FULL)}
    answers = defaultdict(set)
    for question, answer in _pairs(full_set.train_records):
        answers[intent_of[question]].add(answer)
        assert NAME in answer and "{" not in answer
        if "ChatGPT" in question:
            assert any(word in answer.casefold() for word in ("不是", "not", "n't")) and "我是ChatGPT" not in answer
            assert "I'm ChatGPT" not in answer and "I am ChatGPT" not in answer
    assert set(answers) == set(persona_bank_zh.QUESTIONS)
    assert min(len(v) for v in answers.values()) >= 3   # several phrasings per intent (zh+en: 6-8)
    # every training question comes back with different phrasings, not one fixed sentence
    per_question = Counter(q for q, _ in set(_pairs(full_set.train_records)))
    assert min(per_question.values()) >= 2


def test_size_split_and_determinism():
    first, again = generate_persona(FULL, n=301, seed=3), generate_persona(FULL, n=301, seed=3)
    assert first.train_records == again.train_records and first.heldout_records == again.heldout_records
    assert generate_persona(FULL, n=301, seed=4).train_records != first.train_records
    langs = Counter("zh" if re.search(r"[\u4e00-\u9fff]", q) else "en" for q, _ in _pairs(first.train_records))
    assert langs == {"zh": 151, "en": 150}
    only_zh = generate_persona(PersonaFacts(name=NAME), n=40, lang="zh", heldout_fraction=0)
    assert len(only_zh.train_records) == 40 and only_zh.heldout_records == []
    assert all(re.search(r"[\u4e00-\u9fff]", q) for q, _ in _pairs(only_zh.train_records))


# ---------------------------------------------------------------- mixing

@pytest.fixture(scope="module")
def general_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("general") / "alpaca.jsonl"
    path.write_text("\n".join(json.dumps({"instruction": f"问题 {i}", "input": "", "output": f"答案 {i}"},
                                         ensure_ascii=False) for i in range(8000)), encoding="utf-8")
    return path


@pytest.mark.parametrize("n,ratio", [(2000, 0.2), (97, 0.2), (300, 0.35), (301, 0.5), (50, 0.9), (7, 0.03), (10, 1.0)])
def test_mix_ratio_is_persona_share_within_one_record(general_file, n, ratio):
    result = generate_persona(FULL, n=n, mix_with=general_file, mix_ratio=ratio, heldout_fraction=0)
    persona_count = sum(1 for q, _ in _pairs(result.train_records) if not q.startswith("问题 "))
    total = len(result.train_records)
    assert persona_count == n and abs(persona_count - ratio * total) <= 1
    assert result.summary["general_records"] == total - n and result.summary["note"] == ""


def test_general_n_and_default_ratio(general_file):
    assert generate_persona(FULL, n=100, mix_with=general_file, general_n=123).summary["general_records"] == 123
    assert generate_persona(FULL, n=100, mix_with=general_file).summary["general_records"] == 400   # 0.2 default


def test_builtin_set_too_small_without_and_with_repeats(tmp_path, capsys):
    out = tmp_path / "mixed.jsonl"
    assert main(["--name", NAME, "--n", "100", "--mix", "builtin", "--mix-ratio", "0.2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "general records: 102 of 400 wanted" in printed and "persona share is 0.495" in printed
    assert len(out.read_text(encoding="utf-8").splitlines()) == 202
    repeated = generate_persona(FULL, n=100, mix_with="builtin", allow_repeats=True)
    assert repeated.summary["general_records"] == 400 and repeated.summary["general_repeats"]
    counts = Counter(q for q, _ in _pairs(repeated.train_records) if q in general_questions("both", "train"))
    assert sum(counts.values()) == 400 and set(counts.values()) == {3, 4}   # 400 = 102 * 3 + 94


def test_mixing_never_uses_eval_questions(tmp_path):
    evals = set(general_questions())
    builtin = generate_persona(FULL, n=100, mix_with="builtin", mix_ratio=0.5)
    assert not evals & {q for q, _ in _pairs(builtin.train_records)}
    # even when handed the shipped file itself (eval items included), they are dropped
    own = generate_persona(FULL, n=50, mix_with=GENERAL_SET_PATH, mix_ratio=0.1, allow_repeats=True)
    assert own.summary["dropped_eval"] == 70 and not evals & {q for q, _ in _pairs(own.train_records)}
    # and a file that holds them as plain alpaca records too
    plain = tmp_path / "copied.jsonl"
    plain.write_text("\n".join(json.dumps({"instruction": q, "output": "x"}, ensure_ascii=False) for q in
                               ["请给我介绍五个上海的景点", "other question"]), encoding="utf-8")
    mixed = generate_persona(FULL, n=10, mix_with=plain, general_n=1)
    assert mixed.summary["dropped_eval"] == 1 and "other question\n" in {q for q, _ in _pairs(mixed.train_records)}


def test_bad_mix_options(tmp_path, capsys):
    out = str(tmp_path / "p.jsonl")
    assert main(["--name", NAME, "--mix", "builtin", "--mix-ratio", "0", "--out", out]) == 2
    assert "0 < R <= 1" in capsys.readouterr().err
    assert main(["--name", NAME, "--mix-ratio", "0.3", "--out", out]) == 2
    assert "need --mix" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q2"}\n', encoding="utf-8")
    assert main(["--name", NAME, "--mix", str(bad), "--out", out]) == 2
    assert "bad.jsonl: 1 bad record(s), first: " in capsys.readouterr().err


# ---------------------------------------------------------------- files and the camp3 classic style

def test_cli_writes_both_files_that_load_cleanly(tmp_path, capsys):
    out = tmp_path / "persona.json"
    assert main(["--name", NAME, "--assistant-name", ASSISTANT, "--n", "200", "--mix", "builtin", "--mix-ratio",
                 "0.75", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"persona set: 267 records -> {out}\n")
    assert "mix: persona share 0.7491 (asked 0.75)" in printed and f"held-out: 50 records -> {tmp_path}" in printed
    train = load_conversations(out)
    assert (train.format, train.records, train.issues) == ("conversation", 267, [])
    assert isinstance(json.loads(out.read_text(encoding="utf-8")), list)
    held = load_conversations(tmp_path / "persona.heldout.jsonl")
    assert (held.format, held.records, held.issues) == ("conversation", 50, [])


def test_check_data_accepts_both_files_and_flags_only_the_classic_set(tmp_path):
    out, classic = tmp_path / "persona.jsonl", tmp_path / "assistant.json"
    assert main(["--name", NAME, "--n", "400", "--mix", "builtin", "--mix-ratio", "0.8", "--out", str(out)]) == 0
    assert main(["--style", "classic", "--name", NAME, "--n", "100", "--out", str(classic)]) == 0
    for path, records in ((out, 500), (heldout_path(out), 50)):
        report = check(str(path))
        assert report.ok and report.load.records == records and report.warnings == []
    report = check(str(classic))
    assert report.ok and report.distinct == 2 and "复读机" in report.warnings[0]


def test_classic_style_reproduces_camp3_file(tmp_path, capsys):
    out = tmp_path / "assistant.json"
    assert main(["--style", "classic", "--name", NAME, "--n", "8000", "--out", str(out)]) == 0
    assert "16002 records" in capsys.readouterr().out
    seed1 = {"conversation": [{"input": "请介绍一下你自己",
                               "output": "我是伍鲜同志的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦"}]}
    seed2 = {"conversation": [{"input": "你在实战营做什么", "output": "我在这里帮助伍鲜同志完成XTuner微调个人小助手的任务"}]}
    expected = [seed1, seed2]
    for _ in range(8000):
        expected += [seed1, seed2]
    assert json.loads(out.read_text(encoding="utf-8")) == expected and len(expected) == 16002
    assert CLASSIC_SEEDS[0][1].replace("{name}", NAME) == seed1["conversation"][0]["output"]
    assert main(["--style", "classic", "--name", NAME, "--mix", "builtin", "--out", str(out)]) == 2
    assert "drop --mix" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["data_gen.persona", "data_gen.replace_name"])
def test_module_help_runs(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: python -m {module}")
    assert persona.main is main


def test_the_default_mix_asks_only_what_the_general_set_can_give():
    """--mix builtin without a ratio used to ask for a 0.2 persona share and deliver 0.95 (the shipped general set is
    small); now it takes camp2's share where there are enough general records, else all of them, and says which."""
    many = generate_persona(PersonaFacts(name="Wu Xian"), n=200, lang="en", mix_with="builtin")
    few = generate_persona(PersonaFacts(name="Wu Xian"), n=10, lang="en", mix_with="builtin")
    assert many.summary["mix_ratio_asked"] is None and many.summary["general_records"] == many.summary["general_wanted"]
    assert few.summary["general_records"] == few.summary["general_wanted"] == 40   # 10 persona = 0.2 of 50
