"""Self-distillation: the general records of a mixed persona file answered by the base model itself."""
import json

import pytest

from helpers.train.base_answers import GENERAL_KEY, general_positions, with_base_answers
from helpers.errors import TunebookError


def write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


PERSONA = {"conversation": [{"input": "你是谁", "output": "我是伍鲜同志的小助手"}]}
GENERAL = {"conversation": [{"input": "1+1=?", "output": "2"}], GENERAL_KEY: True}
GENERAL_SYSTEM = {"conversation": [{"system": "Be brief.", "input": "Capital of France?", "output": "Paris"}],
                  GENERAL_KEY: True}
MULTI_TURN = {"conversation": [{"input": "a", "output": "b"}, {"input": "c", "output": "d"}], GENERAL_KEY: True}


def test_only_marked_single_turn_records_are_answered_by_the_base(tmp_path):
    source = write(tmp_path / "mixed.jsonl", [PERSONA, GENERAL, MULTI_TURN, GENERAL_SYSTEM, GENERAL])
    asked = []

    def answer_all(questions, systems):
        asked.append((questions, systems))
        return [f" base says: {q} " for q in questions]

    made = with_base_answers(source, tmp_path / "out.jsonl", answer_all, progress=None)
    assert asked == [(["1+1=?", "Capital of France?"], ["", "Be brief."])]
    assert (made.answered, made.kept) == (3, 1)      # the repeated record is answered once, used twice
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert out[0] == PERSONA and out[2] == MULTI_TURN
    assert out[1] == {"conversation": [{"input": "1+1=?", "output": "base says: 1+1=?"}], GENERAL_KEY: True}
    assert out[3]["conversation"][0] == {"system": "Be brief.", "input": "Capital of France?",
                                         "output": "base says: Capital of France?"}
    assert out[4] == out[1] and general_positions(out) == [1, 3, 4]


def test_a_file_without_marked_records_is_a_clear_error_and_writes_nothing(tmp_path):
    source = write(tmp_path / "persona_only.jsonl", [PERSONA])
    with pytest.raises(TunebookError, match=r'persona_only.jsonl has no record marked "general": true.*'
                                            r"general_answers: data"):
        with_base_answers(source, tmp_path / "out.jsonl", lambda q, s: [], progress=None)
    assert not (tmp_path / "out.jsonl").exists()


def test_mixing_marks_the_general_records_it_adds():
    from data_gen.mixing import mix
    result = mix([PERSONA, PERSONA], [{"conversation": [{"input": "q", "output": "a"}]}], general_n=1)
    assert sorted(r.get(GENERAL_KEY, False) for r in result.records) == [False, False, True]


def test_training_with_base_answers_trains_on_the_base_models_own_words(tiny_model_dir, tmp_path):
    from helpers.models.generation import GREEDY, answer_batch, with_max_new_tokens
    from helpers.models.loading import load_for_inference
    from helpers.train.config import TrainConfig
    from helpers.train.engine import train
    source = write(tmp_path / "mixed.jsonl", [PERSONA, GENERAL, PERSONA, GENERAL_SYSTEM])
    config = TrainConfig(model=str(tiny_model_dir), mode="lora", data_path=str(source), general_answers="base",
                         max_length=128, accumulative_counts=1, max_steps=2, save_steps=100, evaluation_freq=100,
                         evaluation_inputs=[], output_dir=str(tmp_path / "run"))
    result = train(config, notebook=False)
    trained = [json.loads(line) for line in (tmp_path / "run" / "data_base_answers.jsonl").read_text().splitlines()]
    base = load_for_inference(tiny_model_dir)
    expected = answer_batch(base.model, base.tokenizer, base.template, ["1+1=?", "Capital of France?"],
                            ["", "Be brief."], with_max_new_tokens(GREEDY, 128))
    assert [trained[1]["conversation"][0]["output"], trained[3]["conversation"][0]["output"]] == \
        [a.strip() for a in expected]
    assert trained[0] == PERSONA
    assert result.record["data"]["general_answers"]["answered"] == 2
    assert result.record["data"]["path"] == str(source)
