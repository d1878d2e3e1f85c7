"""`python -m helpers <command>`: each command lives in its own module and builds its own argparse parser.

Commands are imported only when run, so `--help` here is instant and one broken optional dependency
cannot take the other commands down.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> ("module:function taking argv and returning an exit code", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "templates": ("helpers.encode.template_cli:main", "list prompt templates; render a conversation as training text"),
    "check-data": ("helpers.multimodal.check_llava:main", "validate a dataset file and show tokens, masks and packing"),
    "make-tiny-model": ("helpers.models.tiny:main", "build the offline tiny tokenizer + Llama model used by tests/CPU demo"),
    "train": ("helpers.train.engine:main", "train or resume from a YAML / XTuner .py config (torchrun-compatible)"),
    "train-llava": ("helpers.multimodal.llava_train:main", "LLaVA stage 1 (projector) / stage 2 (projector + LoRA) on images"),
    "merge-llava": ("helpers.multimodal.merge:main", "merge a LLaVA stage-2 adapter into a folder plain transformers loads"),
    "convert": ("helpers.models.internlm2.convert:main", "convert InternLM2 <-> Llama checkpoints (no remote code)"),
    "bench": ("helpers.bench:main", "benchmarks: train (vs the tutorials' recipe), merge, internlm2, persona (CPU recipe)"),
    "merge": ("helpers.merge.merging:main", "merge a (Q)LoRA adapter into its full-precision base model (checked, sharded)"),
    "export": ("helpers.share.export:main", "export a merged model: GGUF for llama.cpp + an Ollama Modelfile (stop words)"),
    "chat": ("helpers.chat.session:main", "chat in the terminal with the training template (XTuner chat keys: RESET, EXIT)"),
    "demo": ("helpers.chat.demo:main", "chat in a web page (streamlit): streaming, sampling sliders, base vs tuned"),
    "run-all": ("helpers.notebook.main_job:main", "the main job: run the notebooks end to end (README quick start)"),
    "evaluate": ("helpers.evaluate.run:main", "before vs after: persona identity + 复读机 rate, or Colorist ΔE00"),
    "upload": ("helpers.share.upload:main", "upload an adapter or merged model with its generated model card (HF / ModelScope)"),
    "env": ("helpers.env.report:main", "check Python, packages, GPU/CUDA, bitsandbytes, disk and model sources"),
}


def positive_int(text: str) -> int:
    """argparse type for counts: a whole number >= 1, with a message that says so."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return ("usage: python -m helpers <command> [options]\n\ncommands:\n" + "\n".join(lines)
            + "\n\nRun `python -m helpers <command> --help` for a command's options.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from helpers.env.shadow import cwd_shadow_warning
    warning = cwd_shadow_warning(sys_path0=sys.path[0] if sys.path else None)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name = COMMANDS[name][0].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    from helpers.errors import command
    try:
        return command(function)(rest)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
