"""The small general instruction set shipped with tunebook: `helpers/assets/general_zh_en.jsonl`.

172 everyday questions with short, checked answers (86 Chinese, 86 English: science, maths, code, writing, advice,
translation, Shanghai/China), nothing about the assistant itself. Each record is XTuner conversation JSON plus
metadata that loaders ignore:

    {"id": "zh-011", "lang": "zh" | "en", "split": "train" | "eval", "topic": "shanghai",
     "conversation": [{"input": "<question>", "output": "<answer>"}]}

The split keeps two uses apart:
  train  102 items that may be mixed into persona data so the model keeps answering ordinary questions normally
         (the camp2 lesson's remedy for a model that answers everything with its persona sentence, "复读机")
  eval   70 fixed items (35 zh, 35 en, including the camp configs' "请给我介绍五个上海的景点" / "Please tell me
         five scenic spots in Shanghai") that the evaluation asks to measure how often a fine-tuned model answers
         an unrelated question with persona talk; they must never be trained on, so load_general() hands them out
         only when asked for split="eval" explicitly.
It is a demo-sized set: enough for CPU runs and for measuring, far too small to carry a real mix (use a larger
general dataset file for that; data_gen.persona says how many records a mix needs).
"""
from __future__ import annotations

from pathlib import Path

from helpers.data.formats import DataFileError, Issue, read_records
from helpers.io import ASSETS

GENERAL_KEY = "general"   # data_gen.mixing marks every general record it mixes in; general_answers: base reads it
GENERAL_SET_PATH = ASSETS / "general_zh_en.jsonl"
LANGS = ("zh", "en")
SPLITS = ("train", "eval")


def load_general(lang: str = "both", split: str = "train", path: str | Path = GENERAL_SET_PATH) -> list[dict]:
    """Records of the shipped general set, in file order.

    lang: "zh", "en" or "both". split: "train" (the default: safe to mix into training data), "eval" (the held-back
    questions for measuring the 复读机 rate; never train on them) or "all".
    """
    if lang not in ("both", *LANGS):
        raise ValueError(f"lang must be 'zh', 'en' or 'both', not {lang!r}")
    if split not in ("all", *SPLITS):
        raise ValueError(f"split must be 'train', 'eval' or 'all', not {split!r}")
    records = _read(Path(path))
    return [r for r in records if (lang == "both" or r["lang"] == lang) and (split == "all" or r["split"] == split)]


def general_questions(lang: str = "both", split: str = "eval") -> list[str]:
    """The question texts of one split (by default the evaluation questions)."""
    return [r["conversation"][0]["input"] for r in load_general(lang=lang, split=split)]


def training_record(record: dict) -> dict:
    """The record without its metadata: what goes into a training file (same shape as every other record there)."""
    return {"conversation": [dict(turn) for turn in record["conversation"]]}


def _read(path: Path) -> list[dict]:
    """Parse and check the file; a broken asset is a packaging bug, so every problem names FILE:LINE."""
    records, ids = [], set()
    for item in read_records(path):
        if isinstance(item, Issue):
            raise DataFileError(item.where, item.message)
        problem = _problem(item.value, ids)
        if problem:
            raise DataFileError(item.where, problem)
        ids.add(item.value["id"])
        records.append(item.value)
    return records


def _problem(record: dict, seen_ids: set[str]) -> str:
    if not isinstance(record, dict):
        return "a record must be a JSON object"
    if record.get("lang") not in LANGS:
        return f"lang must be one of {LANGS}, not {record.get('lang')!r}"
    if record.get("split") not in SPLITS:
        return f"split must be one of {SPLITS}, not {record.get('split')!r}"
    if not isinstance(record.get("id"), str) or record["id"] in seen_ids:
        return f"id {record.get('id')!r} is missing or repeated"
    turns = record.get("conversation")
    if (not isinstance(turns, list) or len(turns) != 1 or not isinstance(turns[0], dict)
            or not all(isinstance(turns[0].get(k), str) and turns[0][k].strip() for k in ("input", "output"))):
        return "conversation must be one turn with non-empty input and output strings"
    return ""
