"""Every CLI command against a corpus of malformed files, configs and arguments, in-process through its main(argv):
each ends with exit 2 and a message naming the file or setting, never a traceback, and publishes nothing."""
from __future__ import annotations

import codecs
import contextlib
import io
import json
from pathlib import Path

import pytest

GOOD = '{"conversation": [{"input": "q", "output": "a"}]}'


def _data(ctx, name: str, content) -> Path:
    path = ctx / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _config(ctx, body: str, name: str = "c.yaml", encoding: str = "utf-8") -> Path:
    path = ctx / name
    path.write_bytes(body.format(model=ctx.model, data=ctx / "good.jsonl", out=ctx / "run").encode(encoding))
    return path


BASE_YAML = "model: {model}\ndata_path: {data}\noutput_dir: {out}\nmode: lora\n"


def _train_setting(line: str):
    return lambda ctx: ("train", [_config(ctx, BASE_YAML + line + "\n")])


def _check(name: str, content):
    return lambda ctx: ("check-data", [_data(ctx, name, content)])


# id -> (build(ctx) -> (command, argv), what the message must contain)
CORPUS = {
    # check-data: data files
    "data invalid JSON": (_check("d.json", '[{"conversation": [}]'), "d.json:1: invalid JSON"),
    "data bad JSONL line": (_check("d.jsonl", GOOD + "\n{\n"), "d.jsonl:2: invalid JSON"),
    "data top-level string": (_check("d.json", '"text"'), "top level is a JSON string"),
    "data record is a list": (_check("d.jsonl", GOOD + "\n[1]\n"), "d.jsonl:2: a record must be a JSON object"),
    "data empty file": (_check("d.jsonl", " \n"), "the file is empty"),
    "data GBK": (_check("d.jsonl", '{"conversation": [{"input": "你", "output": "好"}]}\n'.encode("gbk")),
                 "not UTF-8"),
    "data UTF-16": (_check("d.jsonl", codecs.BOM_UTF16_LE + (GOOD + "\n").encode("utf-16-le")), "UTF-16 text"),
    "data nesting": (_check("d.jsonl", GOOD + "\n" + "[" * 50000 + "]" * 50000 + "\n"), "nested too deeply"),
    "data digits": (_check("d.jsonl", GOOD + '\n{"n": ' + "9" * 6000 + "}\n"), "a number is too long"),
    "data surrogate": (_check("d.jsonl", GOOD + '\n{"conversation": [{"input": "\\ud800", "output": "a"}]}\n'),
                       "unpaired UTF-16 surrogate"),
    "data trailing comma": (_check("d.json", f"[{GOOD},]"), "trailing comma"),
    "data output is a number": (_check("d.jsonl", '{"conversation": [{"input": "q", "output": 1}]}\n'),
                                "output is a number"),
    "data unknown format": (_check("d.jsonl", '{"question": "q"}\n'), "cannot tell the data format"),
    "data no answers": (_check("d.jsonl", '{"messages": [{"role": "user", "content": "q"}]}\n'),
                        "no assistant reply"),
    "data missing file": (lambda ctx: ("check-data", [ctx / "nope.jsonl"]), "nope.jsonl: no such file"),
    "data unknown template": (lambda ctx: ("check-data", [ctx / "good.jsonl", "--template", "internlm3_chat"]),
                              "unknown prompt template 'internlm3_chat'"),
    # train: settings of the wrong type or range, broken config files
    "train max_length inf": (_train_setting("max_length: .inf"), "max_length: must be a whole number"),
    "train max_length 10.5": (_train_setting("max_length: 10.5"), "max_length: must be a whole number"),
    "train data_path 123": (lambda ctx: ("train", [_config(ctx, "model: {model}\ndata_path: 123\n")]),
                            "data_path: must be a text string"),
    "train evaluation_inputs 5": (_train_setting("evaluation_inputs: 5"), "evaluation_inputs: must be a list"),
    "train betas letters": (_train_setting("betas: [a, b]"), "betas: must be two numbers"),
    "train betas too big": (_train_setting("betas: [2, 3]"), "betas: must be two numbers"),
    "train target modules 5": (_train_setting("lora_target_modules: 5"), "lora_target_modules: must be"),
    "train optim": (_train_setting("optim: nonsense_optim"), "optim: must be auto or a transformers optimizer"),
    "train lora_r 2.5": (_train_setting("lora_r: 2.5"), "lora_r: must be a whole number"),
    "train workers -1": (_train_setting("dataloader_num_workers: -1"), "dataloader_num_workers: must be at least 0"),
    "train new tokens -1": (_train_setting("evaluation_max_new_tokens: -1"), "evaluation_max_new_tokens: must be"),
    "train weight_decay -1": (_train_setting("weight_decay: -1"), "weight_decay: must be at least 0"),
    "train loss_chunk -5": (_train_setting("loss_chunk: -5"), "loss_chunk: must be at least 0"),
    "train lora_dropout 5": (_train_setting("lora_dropout: 5"), "lora_dropout: must be in [0, 1)"),
    "train unknown setting": (_train_setting("learning_rate: 1"), "unknown setting learning_rate"),
    "train invalid YAML": (lambda ctx: ("train", [_config(ctx, "lr: [1\n")]), "c.yaml:"),
    "train YAML list": (lambda ctx: ("train", [_config(ctx, "- a\n- b\n")]), "expected a mapping of settings"),
    "train GBK YAML": (lambda ctx: ("train", [_config(ctx, BASE_YAML + "system: 你好\n", encoding="gbk")]),
                       "the config is not UTF-8 text"),
    "train XTuner call": (lambda ctx: ("train", [_config(ctx, "lr = get_lr()\n", "c.py")]),
                          "c.py:1: lr = get_lr() is not a literal"),
    "train XTuner syntax": (lambda ctx: ("train", [_config(ctx, "lr = (\n", "c.py")]), "not valid Python"),
    "train missing config": (lambda ctx: ("train", [ctx / "none.yaml"]), "config file not found"),
    "train data_path folder": (lambda ctx: ("train", [_config(ctx, "model: {model}\ndata_path: " + str(ctx)
                                                      + "\nmode: lora\n")]), "is a folder"),
    "train output_dir is a file": (lambda ctx: ("train", [_config(ctx, "model: {model}\ndata_path: {data}\n"
                                                          "mode: lora\noutput_dir: " + str(ctx / "good.jsonl"))]),
                                   "output_dir: "),
    "train bad --set": (lambda ctx: ("train", [_config(ctx, BASE_YAML), "--set", "nonsense"]), "expected key=value"),
    # merge / convert / chat / evaluate: bad folders
    "merge missing adapter": (lambda ctx: ("merge", [ctx.model, ctx / "no-adapter", ctx / "merged"]),
                              "adapter_config.json"),
    "merge damaged adapter config": (lambda ctx: ("merge", [ctx.model, ctx.broken_adapter, ctx / "merged"]),
                                     "adapter_config.json:1: damaged adapter config"),
    "merge missing base": (lambda ctx: ("merge", [ctx / "no-base", ctx.broken_adapter, ctx / "merged"]),
                           "no-base"),
    "convert not internlm2": (lambda ctx: ("convert", ["internlm2-to-llama", ctx.model, ctx / "converted"]),
                              "not an InternLM2 checkpoint"),
    "convert missing src": (lambda ctx: ("convert", ["internlm2-to-llama", ctx / "nothing", ctx / "converted"]),
                            "no config.json here"),
    "chat damaged config": (lambda ctx: ("chat", [ctx.broken_model]), "config.json:1: damaged model config"),
    "evaluate missing model": (lambda ctx: ("evaluate", ["persona", "--model", ctx / "no-model"]), "no-model"),
    "make-tiny-model under a file": (lambda ctx: ("make-tiny-model", [ctx / "good.jsonl" / "tiny"]),
                                     "a file is in the way"),
    # data_gen
    "persona out under a file": (lambda ctx: ("data_gen.persona", ["--name", "伍鲜", "--n", "20", "--out",
                                                                   ctx / "good.jsonl" / "p.jsonl"]),
                                 "a file is in the way"),
    "replace_name invalid input": (lambda ctx: ("data_gen.replace_name", [_data(ctx, "r.json", "[{"), ctx / "r2.json",
                                                                          "--old", "a", "--new", "b"]),
                                   "r.json:1"),
    "colorist local missing": (lambda ctx: ("data_gen.colorist", ["--source", "local", "--path", ctx / "none.jsonl",
                                                                  "--out", ctx / "colors.jsonl"]), "none.jsonl"),
}

OUTPUTS = ("run/adapter", "merged", "converted", "colors.jsonl", "r2.json")


class Context(type(Path())):
    """The test folder, with a few prepared inputs as attributes."""


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, tiny_model_dir):
    folder = Context(tmp_path_factory.mktemp("fuzz"))
    (folder / "good.jsonl").write_text(GOOD + "\n", encoding="utf-8")
    folder.model = tiny_model_dir
    folder.broken_adapter = folder / "adapter"
    folder.broken_adapter.mkdir()
    (folder.broken_adapter / "adapter_config.json").write_text('{"r": 8,', encoding="utf-8")
    folder.broken_model = folder / "model"
    folder.broken_model.mkdir()
    (folder.broken_model / "config.json").write_text("{", encoding="utf-8")
    return folder


def _run(command: str, argv: list) -> tuple[int, str]:
    import importlib

    from helpers.cli import main as helpers_main
    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if command.startswith("data_gen."):
                code = importlib.import_module(command).main(argv)
            else:
                code = helpers_main([command, *argv])
        except SystemExit as exit_:   # argparse
            code = exit_.code
    return code, out.getvalue() + err.getvalue()


@pytest.mark.slow
def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 40


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CORPUS))
def test_malformed_input_ends_in_one_message_and_exit_2(ctx, case, monkeypatch):
    import helpers.models.loading as models
    monkeypatch.setattr(models, "load_prepared_model", lambda *a, **k: pytest.fail("a model was loaded"))
    build, message = CORPUS[case]
    command, argv = build(ctx)
    code, text = _run(command, argv)
    assert code == 2, text
    assert message in text, text
    assert "Traceback" not in text
    assert not [name for name in OUTPUTS if (ctx / name).exists()]          # nothing published
    assert not list(ctx.glob(".*.tmp")) and not list(ctx.glob(".*.staging"))  # nothing half-written left
