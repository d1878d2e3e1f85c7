"""The shipped general zh+en set: size, language balance, a fixed eval split that never reaches training data."""
import json

import pytest

from helpers.data.formats import DataFileError, load_conversations
from helpers.data.general_set import GENERAL_SET_PATH, general_questions, load_general, training_record


def _question(record):
    return record["conversation"][0]["input"]


def test_size_languages_and_split_counts():
    records = load_general(split="all")
    assert len(records) == 172
    by = {(lang, split): len(load_general(lang=lang, split=split))
          for lang in ("zh", "en") for split in ("train", "eval")}
    assert by == {("zh", "train"): 51, ("zh", "eval"): 35, ("en", "train"): 51, ("en", "eval"): 35}
    assert len({r["id"] for r in records}) == 172


def test_train_and_eval_are_disjoint_and_default_is_train():
    train, evals = load_general(), load_general(split="eval")
    assert {r["split"] for r in train} == {"train"}
    assert not {r["id"] for r in train} & {r["id"] for r in evals}
    assert not {_question(r) for r in train} & {_question(r) for r in evals}
    assert set(general_questions()) == {_question(r) for r in evals}
    # the camp configs' evaluation questions are part of the held-back split
    assert "请给我介绍五个上海的景点" in general_questions("zh")
    assert "Please tell me five scenic spots in Shanghai" in general_questions("en")


def test_file_reads_cleanly_and_holds_no_identity_talk_or_braces():
    result = load_conversations(GENERAL_SET_PATH)
    assert (result.format, result.records, result.issues) == ("conversation", 172, [])
    for record in load_general(split="all"):
        turn = record["conversation"][0]
        text = turn["input"] + turn["output"]
        assert not any(marker in text for marker in ("As an AI", "I'm an AI", "AI assistant", "作为AI", "作为一个AI",
                                                    "语言模型", "我是")), record["id"]
        assert "{" not in text and "}" not in text, record["id"]
        assert record["lang"] == record["id"][:2]


def test_training_record_strips_metadata():
    record = load_general()[0]
    assert training_record(record) == {"conversation": record["conversation"]}


def test_bad_arguments_and_broken_file(tmp_path):
    with pytest.raises(ValueError, match="lang must be"):
        load_general(lang="fr")
    with pytest.raises(ValueError, match="split must be"):
        load_general(split="test")
    broken = tmp_path / "g.jsonl"
    good = {"id": "zh-1", "lang": "zh", "split": "train", "conversation": [{"input": "q", "output": "a"}]}
    broken.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "zh-2", "split": "dev"}) + "\n",
                      encoding="utf-8")
    with pytest.raises(DataFileError, match=r"g\.jsonl:2: split must be one of"):
        load_general(path=broken)
