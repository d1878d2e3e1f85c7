"""What every training setting may hold: its type and its range or choices, checked before any model is loaded.

One table (RULES) instead of checks scattered through the engine: a wrong value ends in one line that names the
setting, what it must be and what it got, never in a traceback after the model has loaded. The same table
converts the forms YAML, `--set key=value` and XTuner's .py give (1e3 for an int, "true" for a bool).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from helpers.errors import TunebookError


class ConfigError(TunebookError):
    pass


# ---- value kinds: convert a loaded value or raise ValueError(what it must be) ----

def _whole(value) -> int:
    if isinstance(value, bool):
        raise ValueError("a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    raise ValueError("a whole number")


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("a finite number")
    return float(value)


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError("true or false")


def _text(value) -> str:
    if not isinstance(value, str):
        raise ValueError("a text string (quote it in YAML)")
    return value


def _optional(kind: Callable) -> Callable:
    def convert(value):
        return None if value is None else kind(value)
    return convert


def _texts(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("a list of text strings")


def _modules(value):
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ValueError('"all-linear" or a list of module names such as [q_proj, v_proj]')


def _betas(value) -> tuple[float, float]:
    numbers = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1 for v in value)
    if not numbers:
        raise ValueError("two numbers in [0, 1), e.g. [0.9, 0.999]")
    return float(value[0]), float(value[1])


# ---- ranges: None when fine, else what the value must be (a phrase) or an _Explained whole message ----

class _Explained(str):
    pass


def positive(v):
    return None if v > 0 else "positive"


def at_least(low):
    return lambda v: None if v >= low else f"at least {low}"


def fraction(v):
    return None if 0 <= v < 1 else "in [0, 1)"


def positive_or(special):
    return lambda v: None if v > 0 or v == special else f"positive (or {special})"


def one_of(*choices):
    """What the value must be; a mistyped one also gets the closest choice (tensorbord: did you mean tensorboard?)."""
    names = ", ".join(map(str, choices))

    def check(v):
        if v in choices:
            return None
        import difflib
        close = difflib.get_close_matches(str(v), [str(c) for c in choices], n=1, cutoff=0.6)
        if not close:
            return f"one of {names}"
        return _Explained(f"must be one of {names}, got {_shown(v)}; did you mean {close[0]}?")
    return check


def non_empty(v):
    return None if v.strip() else "set (it is empty)"


def _optimizers():
    from transformers.training_args import OptimizerNames
    return ("auto",) + tuple(o.value for o in OptimizerNames)


def _known_optimizer(v):
    return None if v in _optimizers() else ("auto or a transformers optimizer name, e.g. adamw_torch, "
                                            "paged_adamw_32bit")


def _data_formats(v):
    from helpers.data.formats import FORMATS
    return None if v == "auto" or v in FORMATS else f"auto or one of {', '.join(FORMATS)}"


def _batchings(v):
    from helpers.encode.packing import STRATEGIES
    return None if v == "auto" or v in STRATEGIES else f"auto or one of {', '.join(STRATEGIES)}"


def _modes(v):
    from helpers.models.loading import MODES
    return None if v in MODES else f"one of {', '.join(MODES)}"


def _dashboards(v):
    from helpers.train.dashboards import CHOICES
    return one_of(*CHOICES)(v)


def _template(v):
    from helpers.encode.chat_format import check_name
    try:
        check_name(v)
    except TunebookError as err:
        return _Explained(err)
    return None


# setting -> (kind, range or None)
RULES: dict[str, tuple[Callable, Callable | None]] = {
    "model": (_text, non_empty), "mode": (_text, _modes),
    "dtype": (_text, one_of("auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32")),
    "trust_remote_code": (_flag, None), "gradient_checkpointing": (_optional(_flag), None),
    "data_path": (_text, None), "data_format": (_text, _data_formats), "template": (_text, _template),
    "system": (_text, None), "general_answers": (_text, one_of("data", "base")),
    "max_length": (_whole, positive), "pack": (_flag, None), "batching": (_text, _batchings),
    "batch_size": (_whole, positive), "accumulative_counts": (_whole, positive),
    "max_epochs": (_number, at_least(0)), "max_steps": (_whole, positive_or(-1)),
    "lr": (_number, positive), "betas": (_betas, None), "weight_decay": (_number, at_least(0)),
    "max_norm": (_number, at_least(0)), "warmup_ratio": (_number, fraction), "optim": (_text, _known_optimizer),
    "loss_chunk": (_whole, at_least(0)),
    "lora_r": (_whole, positive), "lora_alpha": (_number, positive), "lora_dropout": (_number, fraction),
    "lora_target_modules": (_modules, None), "lora_top_layers": (_whole, at_least(0)),
    "save_steps": (_whole, positive), "save_total_limit": (_whole, positive_or(-1)),
    "evaluation_freq": (_whole, positive), "evaluation_inputs": (_texts, None),
    "evaluation_max_new_tokens": (_whole, positive), "logging_steps": (_whole, positive),
    "seed": (_whole, at_least(0)), "output_dir": (_text, non_empty), "deepspeed": (_optional(_text), None),
    "dataloader_num_workers": (_whole, at_least(0)), "report_to": (_text, _dashboards),
}


def convert(key: str, value, source: str | None = None):
    """`value` as setting `key` holds it; ConfigError naming source, setting, what it must be and what it got."""
    kind, in_range = RULES[key]
    where = f"{source}: " if source else ""
    try:
        value = kind(value)
    except ValueError as err:
        raise ConfigError(f"{where}{key}: must be {err}, got {_shown(value)}") from None
    problem = in_range(value) if in_range is not None and value is not None else None
    if isinstance(problem, _Explained):
        raise ConfigError(f"{where}{key}: {problem}")
    if problem:
        raise ConfigError(f"{where}{key}: must be {problem}, got {_shown(value)}")
    return value


def check_all(config, source: str | None = None) -> None:
    """Every setting of a TrainConfig (built in Python, a notebook or from a file) against RULES, then the ones
    that depend on each other or on the disk."""
    where = f"{source}: " if source else ""
    for key in RULES:
        setattr(config, key, convert(key, getattr(config, key), source))
    if config.max_steps <= 0 and config.max_epochs <= 0:
        raise ConfigError(f"{where}max_epochs / max_steps: set one of them to a positive number")
    if not config.data_path:
        raise ConfigError(f"{where}data_path: not set; point it at your .json/.jsonl dataset")
    data = Path(config.data_path)
    if data.is_dir():
        raise ConfigError(f"{where}data_path: {data} is a folder; give the .json/.jsonl file inside it")
    if not data.is_file():
        raise ConfigError(f"{where}data_path: {data} does not exist (relative paths start from {Path.cwd()})")
    if config.deepspeed and config.deepspeed not in ("zero2", "zero3") and not Path(config.deepspeed).is_file():
        raise ConfigError(f"{where}deepspeed: {config.deepspeed} is neither zero2, zero3 nor a JSON file")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
