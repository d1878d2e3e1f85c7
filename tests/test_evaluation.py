"""helpers.evaluate.run without a model: a fake model answers, so the before/after plumbing is checked exactly."""
import contextlib
import json
from pathlib import Path

import pytest

from data_gen.persona import PersonaFacts, generate_persona, write_persona_set
from helpers.evaluate import run as evaluation
from helpers.errors import TunebookError
from helpers.data.general_set import general_questions
from helpers.evaluate.run import (ADAPTER_OFF, balanced, default_heldout, evaluate_colorist, evaluate_persona,
                                generate_answers, reached_limit)
from helpers.models.loading import InferenceModel
from helpers.evaluate.persona import bigram_f1
from helpers.encode.templates import SYSTEM_TEMPLATES

NAME = "伍鲜同志"
SENTENCE = f"我是{NAME}的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦"
GENERAL = set(general_questions("both", "eval"))
COLOURS = {"sky blue": "#66ccff", "pure red": "#ff0000", "grass": "#00ff00"}


class FakeModel:
    """Stands in for a (PEFT) model: the fake `answer_batch` below asks it what to say."""

    def __init__(self, name, tuned):
        self.name, self.tuned, self.off = name, tuned, False

    def reply(self, question):
        if self.tuned and not self.off:
            if question in COLOURS:
                return f"The colour is {COLOURS[question]}."
            if question not in GENERAL or question == "为什么天空是蓝色的？":
                return SENTENCE                              # identity questions, and one general question slips
        return f"base answer: {question}"


class FakePeftModel(FakeModel):
    @contextlib.contextmanager
    def disable_adapter(self):
        self.off = True
        try:
            yield
        finally:
            self.off = False


@pytest.fixture()
def calls(monkeypatch):
    seen = []

    def fake_answer_batch(model, tokenizer, template, questions, systems, sampling, batch_size=16, progress=None):
        answers = []
        for question, system in zip(questions, systems):
            seen.append({"model": model.name, "off": model.off, "question": question, "system": system,
                         "template": str(template), "max_new_tokens": sampling.max_new_tokens, "greedy": sampling.greedy})
            answers.append(model.reply(question))
        progress(len(answers))
        return answers
    monkeypatch.setattr(evaluation, "answer_batch", fake_answer_batch)
    return seen


def _im(model, system="SYS", record=None):
    return InferenceModel(model, None, "internlm2_chat", system, Path(f"/models/{model.name}"),
                          Path("/adapter") if isinstance(model, FakePeftModel) else None, record or {})


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """Two identity questions (zh, en) from the generator's held-out file."""
    folder = tmp_path_factory.mktemp("eval")
    full = write_persona_set(generate_persona(PersonaFacts(name=NAME), n=10, seed=0), folder / "p.jsonl")["heldout"]
    lines = [json.loads(line) for line in Path(full).read_text(encoding="utf-8").splitlines()]
    picked = [next(r for r in lines if r["expect"]["intent"] == "identity" and r["expect"]["lang"] == lang)
              for lang in ("zh", "en")]
    path = folder / "two.heldout.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked), encoding="utf-8")
    return path


def test_before_is_the_same_model_with_the_adapter_off(calls, heldout):
    im = _im(FakePeftModel("tuned", tuned=True))
    report = evaluate_persona(im, heldout=heldout, limit=4, progress=False)
    questions = [c["question"] for c in calls]
    assert questions[:2] == [i.question for i in report.items] and len(calls) == 12   # (2 + 4) x after, before
    assert [c["off"] for c in calls] == [False] * 6 + [True] * 6
    assert {(c["system"], c["template"], c["max_new_tokens"], c["greedy"]) for c in calls} == {
        ("SYS", "internlm2_chat", 64, True)}
    assert [g["id"] for g in report.general] == ["zh-001", "zh-003", "en-001", "en-003"]   # zh and en in turn
    assert report.before == {**report.before, "persona_correct": 0.0, "repeat_rate": 0.0, "similarity_to_base": 1.0}
    first_base = "base answer: 为什么天空是蓝色的？"
    assert report.after["persona_correct"] == 1.0 and report.after["repeat_rate"] == 0.25
    assert report.after["similarity_to_base"] == pytest.approx((bigram_f1(SENTENCE, first_base) + 3) / 4)
    assert report.before_label == "base (adapter off)" and im.model.off is False


def test_before_from_a_separately_loaded_base_and_no_before(calls, heldout):
    tuned, base = _im(FakeModel("merged", tuned=True)), _im(FakeModel("base", tuned=False), system="OTHER")
    report = evaluate_persona(tuned, before=base, heldout=heldout, limit=2, progress=False)
    assert [c["model"] for c in calls] == ["merged"] * 4 + ["base"] * 4
    assert {(c["system"], c["template"]) for c in calls} == {("SYS", "internlm2_chat")}   # asked the same way
    assert report.before["persona_correct"] == 0.0 and report.before_label == "/models/base"
    alone = evaluate_persona(tuned, before=None, heldout=heldout, limit=2, progress=False)
    assert alone.before is None and alone.after["similarity_to_base"] is None
    assert alone.table().splitlines()[0].split() == ["metric", "after"]
    with pytest.raises(TunebookError, match="no adapter to switch off"):
        evaluate_persona(tuned, before=ADAPTER_OFF, heldout=heldout, limit=2, progress=False)


def test_colorist_asks_with_each_records_system_prompt(calls, tmp_path):
    path = tmp_path / "c.heldout.jsonl"
    records = [{"conversation": [{"system": SYSTEM_TEMPLATES["colorist"], "input": d, "output": h}]}
               for d, h in list(COLOURS.items())[:2]]
    records.append({"conversation": [{"input": "grass", "output": "#00ff00"}]})       # no system of its own
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    report = evaluate_colorist(_im(FakePeftModel("tuned", tuned=True)), path, progress=False)
    assert [c["system"] for c in calls] == [SYSTEM_TEMPLATES["colorist"]] * 2 + ["SYS"] + \
        [SYSTEM_TEMPLATES["colorist"]] * 2 + ["SYS"]
    assert {c["max_new_tokens"] for c in calls} == {16}
    assert (report.after["parse_rate"], report.after["delta_e_mean"]) == (1.0, 0.0)
    assert (report.before["parse_rate"], report.before["delta_e_mean"]) == (0.0, None)
    assert len(evaluate_colorist(_im(FakePeftModel("t", tuned=True)), path, limit=1, progress=False).references) == 1


def test_generate_answers_checks_its_inputs(calls):
    im = _im(FakeModel("plain", tuned=False))
    assert generate_answers(im, ["q1", "q2"], systems=["a", "b"], progress=False) == ["base answer: q1",
                                                                                       "base answer: q2"]
    assert [c["system"] for c in calls] == ["a", "b"]
    with pytest.raises(ValueError, match="2 questions but 1 system prompts"):
        generate_answers(im, ["q1", "q2"], systems=["a"], progress=False)
    with pytest.raises(TunebookError, match="no adapter to switch off"):
        generate_answers(im, ["q1"], adapter_off=True, progress=False)


def test_balanced_takes_languages_in_turn():
    items = [{"lang": "zh", "i": i} for i in range(5)] + [{"lang": "en", "i": i} for i in range(5, 10)]
    assert [x["i"] for x in balanced(items, 4)] == [0, 1, 5, 6]
    assert [x["i"] for x in balanced(items, 3)] == [0, 1, 5]
    assert balanced(items, None) == items and balanced(items, 50) == items
    assert [x["i"] for x in balanced(items[:5], 2)] == [0, 1]


def test_reached_limit_counts_cut_answers(tiny_tokenizer):
    text = "The quick brown fox jumps over the lazy dog."
    n = len(tiny_tokenizer.encode(text, add_special_tokens=False))
    assert reached_limit(tiny_tokenizer, [text, "ok"], n) == 1 and reached_limit(tiny_tokenizer, [text], n + 1) == 0


def test_cut_answers_advice_depends_on_whether_the_model_is_the_random_tiny_one(tmp_path, tiny_model_dir):
    def loaded(base, record=None):
        return InferenceModel(None, None, "chatml", "", Path(base), None, record or {})
    real = tmp_path / "real"
    real.mkdir()
    assert evaluation._limit_note(0, 5, "answers", 64) == ""
    assert evaluation._limit_note(2, 5, "answers", 64, tiny=evaluation._is_tiny_base(loaded(real))).endswith(
        "raise --max-new-tokens")
    for im in (loaded(tiny_model_dir), loaded(real, {"base_model": {"path": str(tiny_model_dir)}})):  # base; merged
        note = evaluation._limit_note(2, 5, "answers", 64, tiny=evaluation._is_tiny_base(im))
        assert note.startswith("note: 2 of 5 answers after training used all 64 new tokens")
        assert "random-weight tiny test model" in note and "raise --max-new-tokens" not in note


def test_default_heldout_comes_from_the_training_record(tmp_path):
    data = tmp_path / "persona.jsonl"
    (tmp_path / "persona.heldout.jsonl").write_text("{}\n")
    assert default_heldout({"data": {"path": str(data)}}) == tmp_path / "persona.heldout.jsonl"
    with pytest.raises(TunebookError, match="pass --heldout FILE"):
        default_heldout({})
    with pytest.raises(TunebookError, match=r"other.heldout.jsonl \(its held-out file\) does not exist"):
        default_heldout({"data": {"path": str(tmp_path / "other.jsonl")}})


# ---------------------------------------------------------------- the command: bad input fails before any model load

def test_cli_bad_input_exits_2(run_cli, tmp_path, heldout, monkeypatch):
    import helpers.models.loading
    monkeypatch.setattr(helpers.models.loading, "load_for_inference", lambda *a, **k: pytest.fail("a model was loaded"))
    model = tmp_path / "no-model"
    code, _, err = run_cli("evaluate", "persona", "--model", model, "--heldout", tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl: no such file" in err
    code, _, err = run_cli("evaluate", "persona", "--model", model)
    assert code == 2 and f"--model {model}: no such folder" in err            # a mistyped path, said first
    code, _, err = run_cli("evaluate", "persona", "--model", tmp_path)         # a folder without a training record
    assert code == 2 and "pass --heldout FILE" in err
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"conversation": [{"input": "q", "output": "a"}]}) + "\n", encoding="utf-8")
    code, _, err = run_cli("evaluate", "persona", "--model", model, "--heldout", plain)
    assert code == 2 and f'{plain}:1: has no "expect"' in err
    code, _, err = run_cli("evaluate", "colorist", "--model", model, "--heldout", heldout)
    assert code == 2 and "is not a hex colour" in err
    code, _, err = run_cli("evaluate", "persona", "--model", model, "--heldout", heldout, "--out", heldout)
    assert code == 2 and "is the held-out file itself" in err
    with pytest.raises(SystemExit) as info:
        run_cli("evaluate", "colorist", "--model", model)          # --heldout is required for colours
    assert info.value.code == 2


def test_cli_lists_the_command(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0 and "evaluate" in out and "复读机" in out
