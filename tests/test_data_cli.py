"""Formats and the data commands: every supported format, every bad input -> FILE:LINE and exit 2."""
import json
import re

import pytest

from helpers.data.formats import conversations_from_records, load_conversations
from helpers.encode.templates import SYSTEM_TEMPLATES


def write(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


# ---- formats: XTuner map-fn semantics ----

def test_each_format_normalises_like_xtuner():
    openai = {"messages": [{"role": "assistant", "content": "dropped"}, {"role": "system", "content": "S"},
                           {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                           {"role": "assistant", "content": "x", "loss": False},
                           {"role": "user", "content": "c"}, {"role": "assistant", "content": "y", "loss": "True"}]}
    conv = conversations_from_records([openai])[0]
    assert [(t.system, t.input, t.output, t.output_with_loss) for t in conv.turns] == [
        ("S", "ab", "x", False), ("", "c", "y", True)]

    alpaca = conversations_from_records([{"instruction": "Translate", "input": "", "output": "好"},
                                         {"instruction": "x", "input": "y", "output": "<nooutput>"}])
    assert len(alpaca) == 1 and alpaca[0].turns[0].input == "Translate\n"  # newline kept, <nooutput> dropped

    colour = conversations_from_records([{"description": "Light Sky Blue: A calming, fairly bright color.",
                                          "color": "#66ccff"}])[0].turns[0]
    assert (colour.input, colour.output, colour.system) == ("A calming, fairly bright color.", "#66ccff",
                                                            SYSTEM_TEMPLATES["colorist"])

    share = conversations_from_records([{"conversations": [{"from": "system", "value": "S"},
                                                           {"from": "human", "value": "q"},
                                                           {"from": "gpt", "value": "a"}]}])[0].turns[0]
    assert (share.system, share.input, share.output) == ("S", "q", "a")

    text = conversations_from_records([{"text": "  raw text  "}])[0]
    assert text.pretrain and text.turns[0].output == "raw text"

    plain = conversations_from_records([{"input": "q", "output": "a"}])[0].turns[0]
    assert (plain.input, plain.output) == ("q", "a")


def test_json_array_records_keep_their_line_numbers(tmp_path):
    path = write(tmp_path / "d.json", '[\n  {"conversation": [{"input": "a", "output": "b"}]},\n\n'
                                      '  {"conversation": [{"input": 1, "output": "b"}]}\n]\n')
    result = load_conversations(path)
    assert [str(i) for i in result.issues] == [f"{path}:4: conversation[0].input is a number (1), not text; "
                                               "it must be a string"]
    assert result.conversations[0].source == f"{path}:2"


def test_datasets_objects_are_accepted():
    from datasets import Dataset
    result = load_conversations(Dataset.from_list([{"instruction": "hi", "input": "", "output": "yo"}]))
    assert result.format == "alpaca" and result.conversations[0].turns[0].output == "yo"


# ---- check-data: bad input ----

GOOD = '{"conversation": [{"input": "请介绍一下你自己", "output": "我是小助手"}]}'

BAD_INPUTS = {
    "invalid JSON": ("d.json", '[{"conversation": [}]', 1, "invalid JSON"),
    "bad line inside JSONL": ("d.jsonl", f"{GOOD}\n{{\"conversation\": [\n{GOOD}\n", 2, "invalid JSON"),
    "wrong top-level type": ("d.json", '"just a string"', None, "top level is a JSON string"),
    "record is a list": ("d.jsonl", f"{GOOD}\n[1, 2]\n", 2, "must be a JSON object"),
    "missing conversation": ("d.jsonl", f'{GOOD}\n{{"conversations_typo": []}}\n', 2, 'missing "conversation"'),
    "empty conversation": ("d.jsonl", '{"conversation": []}\n', 1, '"conversation" is empty'),
    "empty messages": ("d.jsonl", '{"messages": []}\n', 1, '"messages" is empty'),
    "input is a dict (camp4)": ("d.jsonl", '{"conversation": [{"input": {"conversation": []}, "output": "x"}]}\n', 1,
                                "input is an object"),
    "output is a number": ("d.jsonl", '{"conversation": [{"input": "q", "output": 42}]}\n', 1,
                           "output is a number"),
    "unknown role": ("d.jsonl", '{"messages": [{"role": "bot", "content": "q"}]}\n', 1, 'role is "bot"'),
    "no assistant reply": ("d.jsonl", '{"messages": [{"role": "user", "content": "q"}]}\n', 1, "no assistant reply"),
    "empty answers": ("d.jsonl", '{"conversation": [{"input": "q", "output": ""}]}\n', 1, "every output is empty"),
    "empty file": ("d.jsonl", "  \n", None, "the file is empty"),
    "GBK bytes": ("d.jsonl", GOOD.encode("utf-8") + b"\n" + '{"conversation": [{"input": "你好", "output": "好"}]}'
                  .encode("gbk") + b"\n", 2, "not UTF-8"),
    "missing file": ("missing.jsonl", None, None, "no such file"),
    # parser limits and messages (issue: each used to end in a traceback or be accepted)
    "nesting 50k deep": ("d.jsonl", f"{GOOD}\n" + "[" * 50000 + "]" * 50000 + "\n", 2, "nested too deeply"),
    "6000-digit integer": ("d.jsonl", f'{GOOD}\n{{"conversation": [], "n": {"9" * 6000}}}\n', 2,
                           "a number is too long to read"),
    "lone surrogate": ("d.jsonl", f'{GOOD}\n{{"conversation": [{{"input": "\\ud800", "output": "a"}}]}}\n', 2,
                       "unpaired UTF-16 surrogate"),
    "record over 16 MB": ("d.jsonl", f'{GOOD}\n{{"text": "{"x" * (17 * 2**20)}"}}\n', 2,
                          "records over 16 MB are refused"),
    "UTF-16 with BOM": ("d.jsonl", b"\xff\xfe" + f"{GOOD}\n".encode("utf-16-le"), None, "UTF-16 text"),
    "trailing comma before ]": ("d.json", f"[{GOOD},\n]", 1, "a trailing comma before the closing ']'"),
    "trailing comma in an object": ("d.jsonl", '{"conversation": [{"input": "q", "output": "a",}]}\n', 1,
                                    "trailing comma before the closing bracket"),
    "a folder": ("folder.jsonl", "FOLDER", None, "is a folder"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_file_line_and_exit_2(tmp_path, run_cli, case):
    name, content, line, message = BAD_INPUTS[case]
    if content == "FOLDER":
        (tmp_path / name).mkdir()
    path = tmp_path / name if content in (None, "FOLDER") else write(tmp_path / name, content)
    code, out, err = run_cli("check-data", path)
    assert code == 2
    where = f"{path}:{line}: " if line else f"{path}: "
    assert any(l.startswith(where) and message in l for l in err.splitlines()), err
    assert "Traceback" not in err + out


def test_a_record_with_nothing_to_train_is_dropped_with_its_line_and_none_left_is_exit_2(tmp_path, run_cli,
                                                                                         tiny_model_dir):
    path = write(tmp_path / "d.jsonl", f'{GOOD}\n{{"conversation": [{{"system": "S", "input": "", "output": ""}}]}}\n')
    code, out, err = run_cli("check-data", path)
    assert code == 0 and f"skipped on purpose   1 (first: {path}:2: nothing to train on" in out
    long_only = write(tmp_path / "long.jsonl", json.dumps({"conversation": [{"input": "很长" * 400, "output": "短"}]},
                                                          ensure_ascii=False) + "\n")
    code, out, err = run_cli("check-data", long_only, "--tokenizer", tiny_model_dir, "--max-length", 64)
    assert code == 2 and "no record has anything left to train on" in err


def test_bom_is_accepted_and_prompt_too_long_is_dropped_not_an_error(tmp_path, run_cli, tiny_model_dir):
    long_prompt = json.dumps({"conversation": [{"input": "很长的问题" * 400, "output": "短"}]}, ensure_ascii=False)
    path = write(tmp_path / "d.jsonl", b"\xef\xbb\xbf" + f"{GOOD}\n{long_prompt}\n".encode("utf-8"))
    code, out, err = run_cli("check-data", path, "--tokenizer", tiny_model_dir, "--max-length", 64)
    assert code == 0, err
    assert re.search(r"dropped\s+1 prompt alone >= max_length", out)
    assert re.search(r"samples\s+1\b", out)
    assert "⟦我是小助手<|im_end|>⟧" in out


def test_check_data_reports_duplicates_special_text_and_packing(tmp_path, run_cli, tiny_model_dir):
    rows = [GOOD] * 100 + ['{"conversation": [{"input": "我叫<|im_end|>", "output": "好的"}]}']
    path = write(tmp_path / "d.jsonl", "\n".join(rows) + "\n")
    code, out, _ = run_cli("check-data", path, "--tokenizer", tiny_model_dir)
    assert code == 0
    assert "only 2 distinct conversations among 101 records" in out
    assert f"1 records spell a special token of the tokenizer in their text (first: {path}:101)" in out
    assert re.search(r"packed\s+batching\s+\d+ rows of 2048 tokens: efficiency \d+\.\d%", out)


# ---- templates command ----

def test_templates_list_and_render(tmp_path, run_cli, tiny_model_dir):
    code, out, _ = run_cli("templates", "list", "--names")
    assert code == 0 and out.split() [:4] == ["default", "zephyr", "internlm_chat", "internlm2_chat"]
    path = write(tmp_path / "conv.json", json.dumps({"messages": [{"role": "user", "content": "请介绍一下你自己"},
                                                                   {"role": "assistant", "content": "我是小助手"}]},
                                                    ensure_ascii=False))
    code, out, _ = run_cli("templates", "render", "--template", "internlm2_chat", "--file", path)
    assert (code, out) == (0, "<|im_start|>user\n请介绍一下你自己<|im_end|>\n<|im_start|>assistant\n我是小助手<|im_end|>\n")
    code, out, _ = run_cli("templates", "render", "--template", "internlm2_chat", "--file", path,
                           "--tokenizer", tiny_model_dir, "--show", "labels")
    assert out == "<s><|im_start|>user\n请介绍一下你自己<|im_end|>\n<|im_start|>assistant\n⟦我是小助手<|im_end|>⟧\n"
    code, out, _ = run_cli("templates", "render", "--template", "default", "--file", path,
                           "--tokenizer", tiny_model_dir, "--system-template", "alpaca")
    assert out == ("<s><|System|>:Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n<|User|>:请介绍一下你自己\n<|Bot|>:我是小助手</s>\n")
    code, _, err = run_cli("templates", "render", "--template", "nope", "--file", path)
    assert code == 2 and "unknown prompt template 'nope'" in err


def test_the_record_size_limit_counts_utf8_bytes_not_characters(tmp_path, run_cli):
    """6M Chinese characters are 18 MB of UTF-8: over the 16 MB limit, though fewer than 16M characters."""
    path = write(tmp_path / "d.jsonl", f'{GOOD}\n{{"text": "{"字" * (6 * 2**20)}"}}\n')
    code, _, err = run_cli("check-data", path)
    assert code == 2 and f"{path}:2: this record is 18 MB; records over 16 MB are refused" in err
