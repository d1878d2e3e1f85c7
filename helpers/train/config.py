"""The training settings: one dataclass with the knobs of an XTuner config's settings block.

Defaults are the camp's `internlm2_chat_1_8b_qlora_alpaca_e3`. Load from YAML, from a dict, or from an
XTuner config .py file: its literal assignments (PART 1 settings, the LoRA dict) are read with `ast`;
the file is never executed, so a camp config can be brought along without mmengine or xtuner installed.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path

from helpers.errors import TunebookError
from helpers.io import ASSETS
from helpers.train.config_rules import ConfigError, check_all, convert




@dataclass
class TrainConfig:
    # -- model
    model: str = "internlm2-chat-1_8b"     # local folder, InternStudio share name, or hub id
    mode: str = "qlora"                    # qlora (NF4 base + LoRA) | lora (16/32-bit base + LoRA) | full
    dtype: str = "auto"                    # compute dtype: auto = bf16 on Ampere+, fp16 on T4/V100, fp32 on CPU
    trust_remote_code: bool = False        # never on silently; InternLM2 is converted to Llama instead
    gradient_checkpointing: bool | None = None  # None = on for qlora (saves activation memory, ~30% slower)
    # -- data
    data_path: str = ""                    # .json/.jsonl dataset (required)
    data_format: str = "auto"              # auto | conversation | openai | alpaca | colorist | sharegpt | pretrain
    template: str = "auto"                 # auto = the model's own (SmolLM2: chatml, else internlm2_chat); an
                                           # XTuner PROMPT_TEMPLATE name; or "hf" for the tokenizer's chat_template
    system: str = ""                       # system prompt for records without one; also used for chat samples
    general_answers: str = "data"          # data = train on the general records' answers as written; base = on the
                                           # base model's own answers to them (self-distillation, helpers.train.base_answers)
    max_length: int = 2048                 # tokens per sample / per packed row
    pack: bool = True                      # pack_to_max_length: steps see ~batch_size*max_length tokens per micro-batch
    batching: str = "auto"                 # how those tokens are batched: auto (fastest measured) | packed | grouped | padded
    # -- optimisation (one optimizer step = accumulative_counts micro-batches per device)
    batch_size: int = 1                    # per device: rows of max_length when packing, samples otherwise
    accumulative_counts: int = 16          # gradient accumulation
    max_epochs: float = 3
    max_steps: int = -1                    # > 0 overrides max_epochs
    lr: float = 2e-4                       # LoRA needs ~10x the full fine-tuning rate
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    max_norm: float = 1.0                  # gradient clipping
    warmup_ratio: float = 0.03             # linear warm-up share, then cosine to 0 (XTuner's schedule)
    optim: str = "auto"                    # auto = paged_adamw_32bit where bitsandbytes supports it, else adamw_torch
    loss_chunk: int = 256                  # loss over trained tokens in chunks of this many (0 = full logits)
    # -- LoRA (camp values)
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | str = "all-linear"  # all linear layers except the output head
    lora_top_layers: int = 0               # 0 = LoRA in every layer; N = only in the N layers nearest the output:
                                           # backward then stops there (much faster on CPU), the rest is frozen
    # -- checkpoints and chat samples
    save_steps: int = 500
    save_total_limit: int = 2              # keep this many checkpoints (-1 = all)
    evaluation_freq: int = 500             # chat samples every N steps (and at checkpoints, before and after)
    evaluation_inputs: list[str] = field(default_factory=lambda: ["请给我介绍五个上海的景点",
                                                                  "Please tell me five scenic spots in Shanghai"])
    evaluation_max_new_tokens: int = 600   # XTuner's EvaluateChatHook length
    logging_steps: int = 10
    report_to: str = "none"                # none | tensorboard | swanlab | trackio | wandb: the Trainer's logs also go
                                           # to that dashboard, its files under <output_dir>/logs (none: no extra
                                           # package; loss.jsonl and the live view are always there)
    seed: int = 0
    output_dir: str = "work/train"
    deepspeed: str | None = None           # None | zero2 | zero3 | path to a DeepSpeed JSON
    dataloader_num_workers: int = 0

    def validate(self) -> None:
        """Every setting's type and range (helpers.train.config_rules), then what the machine must have: run
        before anything heavy is loaded."""
        check_all(self)
        from helpers.train.dashboards import require_dashboard
        require_dashboard(self.report_to)
        if self.mode == "qlora":
            from helpers.models.loading import require_bitsandbytes
            try:
                require_bitsandbytes()
            except TunebookError as err:
                raise ConfigError(f"mode: {err}") from None

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

# XTuner settings-block names -> ours
XTUNER_NAMES = {
    "pretrained_model_name_or_path": "model", "alpaca_en_path": "data_path", "data_path": "data_path",
    "prompt_template": "template", "max_length": "max_length", "pack_to_max_length": "pack",
    "batch_size": "batch_size", "accumulative_counts": "accumulative_counts", "max_epochs": "max_epochs",
    "lr": "lr", "betas": "betas", "weight_decay": "weight_decay", "max_norm": "max_norm",
    "warmup_ratio": "warmup_ratio", "save_steps": "save_steps", "save_total_limit": "save_total_limit",
    "evaluation_freq": "evaluation_freq", "evaluation_inputs": "evaluation_inputs", "SYSTEM": "system",
    "dataloader_num_workers": "dataloader_num_workers",
}
# dataset_map_fn -> data format (None means the file is already in conversation format)
XTUNER_MAP_FNS = {"alpaca_map_fn": "alpaca", "openai_map_fn": "openai", "colors_map_fn": "colorist",
                  "pretrain_map_fn": "pretrain", "wizardlm_map_fn": "sharegpt", "default_map_fn": "default"}


EXAMPLE_CONFIG = ASSETS / "configs" / "camp_qlora.yaml"   # every setting, commented, with the camp's values


def unknown_setting(key: str, source: str) -> ConfigError:
    """The error for a name that is no setting, with the closest one (ours or XTuner's) when there is one."""
    import difflib
    close = [_TRAINER_NAMES[key]] if key in _TRAINER_NAMES else difflib.get_close_matches(
        key, list(FIELDS) + list(XTUNER_NAMES), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else "."
    return ConfigError(f"{source}: unknown setting {key}{hint} Every setting is listed, commented, in {EXAMPLE_CONFIG}")


# transformers' TrainingArguments names learners bring from other tutorials -> ours (suggested, not guessed)
_TRAINER_NAMES = {"learning_rate": "lr", "num_train_epochs": "max_epochs", "per_device_train_batch_size": "batch_size",
                  "gradient_accumulation_steps": "accumulative_counts", "max_grad_norm": "max_norm",
                  "model_name_or_path": "model", "warmup_steps": "warmup_ratio", "max_seq_length": "max_length"}


def ours(key: str, source: str) -> str:
    """A setting's name in TrainConfig: ours as given, XTuner's translated (prompt_template -> template, ...)."""
    if key in FIELDS:
        return key
    if key in XTUNER_NAMES:
        return XTUNER_NAMES[key]
    raise unknown_setting(key, source)


def from_dict(values: dict, source: str = "settings") -> TrainConfig:
    """Settings by our names or XTuner's, each converted and checked against helpers.train.config_rules."""
    config, given = TrainConfig(), {}
    for key, value in values.items():
        name = ours(str(key), source)
        if name in given and given[name] != key:
            raise ConfigError(f"{source}: {given[name]} and {key} are the same setting; keep one of them")
        given[name] = key
        setattr(config, name, convert(name, value, source))
    return config


RECIPES = ASSETS / "recipes"   # measured settings shipped with tunebook


def recipe_path(name: str) -> Path:
    path = RECIPES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
        raise ConfigError(f"no recipe {name!r}; shipped recipes: {known}")
    return path


def recipe_values(name: str) -> dict:
    """The settings of a shipped recipe (helpers/assets/recipes/<name>.yaml) as a dict, checked like a config."""
    import yaml
    path = recipe_path(name)
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    from_dict(values, str(path))   # unknown keys / wrong types fail here, naming the file
    return values


def _read_text(path: str | os.PathLike, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: the {what} is not UTF-8 text (byte {err.start}); save it as UTF-8, e.g. "
                          f"iconv -f GB18030 -t UTF-8 {path} > fixed{Path(path).suffix}") from None


def load_yaml(path: str | os.PathLike) -> TrainConfig:
    import yaml
    text = _read_text(path, "config")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return from_dict(values, str(path))


def load_xtuner(path: str | os.PathLike) -> TrainConfig:
    """Read an XTuner config .py without executing it: top-level settings are literals, PROMPT_TEMPLATE.x /
    SYSTEM_TEMPLATE.x, earlier names, and + - * / // ** over them (`lr = 2e-4 / 2`,
    `accumulative_counts *= sequence_parallel_size`); a setting tunebook reads that is anything else is refused by
    name and line, never silently replaced by a default."""
    text = _read_text(path, "config")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as err:
        raise ConfigError(f"{path}:{err.lineno}: not valid Python ({err.msg})") from None
    except (ValueError, RecursionError, MemoryError):
        raise ConfigError(f"{path}: not a config tunebook can read (too deeply nested)") from None
    names: dict = {}   # every readable top-level name, for later expressions
    values: dict = {}
    for node in tree.body:
        target, value = _assignment(node, names)
        if target is None:
            continue
        if value is not _UNREADABLE:
            names[target] = value
        if target in XTUNER_NAMES:
            if value is _UNREADABLE:
                raise ConfigError(f"{path}:{node.lineno}: {ast.get_source_segment(text, node)!s:.70} "
                                  "is not a literal or + - * / // ** over literals and earlier settings; tunebook "
                                  "never runs a config, so write the value itself")
            values[XTUNER_NAMES[target]] = value
    for call in ast.walk(tree):  # LoRA settings and the dataset map fn live in nested dict(...) calls
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "dict"):
            continue
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        if _name(keywords.get("type")) == "LoraConfig":
            for key, ours in (("r", "lora_r"), ("lora_alpha", "lora_alpha"), ("lora_dropout", "lora_dropout"),
                              ("target_modules", "lora_target_modules")):
                if key in keywords and (value := _xtuner_value(keywords[key], names)) is not _UNREADABLE \
                        and value is not None:
                    values[ours] = value
        if "dataset_map_fn" in keywords:
            map_fn = keywords["dataset_map_fn"]
            if isinstance(map_fn, ast.Constant) and map_fn.value is None:
                values.setdefault("data_format", "conversation")
            elif _name(map_fn) in XTUNER_MAP_FNS:
                values["data_format"] = XTUNER_MAP_FNS[_name(map_fn)]
        if _name(keywords.get("type")) == "BitsAndBytesConfig":
            values.setdefault("mode", "qlora")
    return from_dict(values, str(path))


_UNREADABLE = object()


def _name(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}


def _assignment(node, names: dict):
    """(name, value) of a top-level `name = ...` or `name op= ...`; (None, None) for anything else."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, _xtuner_value(node.value, names)
    if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        name = node.target.id
        combined = ast.BinOp(left=ast.Name(id=name, ctx=ast.Load()), op=node.op, right=node.value)
        return name, _xtuner_value(combined, names)
    return None, None


def _arithmetic(node, names: dict):
    """+ - * / // ** over numbers, strings (+ only) and earlier names; _UNREADABLE for anything else."""
    if isinstance(node, ast.Name):
        return names.get(node.id, _UNREADABLE)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arithmetic(node.operand, names)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
        return _UNREADABLE
    if not (isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC):
        return _xtuner_value(node, names) if not isinstance(node, (ast.BinOp, ast.UnaryOp)) else _UNREADABLE
    left, right = _arithmetic(node.left, names), _arithmetic(node.right, names)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
    strings = isinstance(node.op, ast.Add) and all(isinstance(v, str) for v in (left, right))
    if not (numbers or strings):
        return _UNREADABLE
    if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
        return _UNREADABLE  # 10 ** 10 ** 10 would hang the reader
    try:
        return _ARITHMETIC[type(node.op)](left, right)
    except (ZeroDivisionError, OverflowError):
        return _UNREADABLE


def _xtuner_value(node, names: dict | None = None):
    """Literals, PROMPT_TEMPLATE.x -> 'x', SYSTEM_TEMPLATE.x -> its text, arithmetic; else _UNREADABLE."""
    from helpers.encode.templates import SYSTEM_TEMPLATES
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Name)):
        return _arithmetic(node, names or {})
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "PROMPT_TEMPLATE":
            return node.attr
        if node.value.id == "SYSTEM_TEMPLATE":
            if node.attr not in SYSTEM_TEMPLATES:
                raise ConfigError(f"SYSTEM_TEMPLATE.{node.attr} is not an XTuner system template")
            return SYSTEM_TEMPLATES[node.attr]
    return _UNREADABLE


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """YAML (.yaml/.yml/.json) or XTuner (.py) config, then `key=value` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.suffix == ".py":
        config = load_xtuner(path)
    elif path.suffix in (".yaml", ".yml", ".json"):
        config = load_yaml(path)
    else:
        raise ConfigError(f"{path}: use a .yaml config or an XTuner .py config")
    return apply_overrides(config, overrides or [])


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    import yaml
    values = config.as_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = ours(key.strip(), "--set")
        try:
            values[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            values[key] = raw
        if isinstance(getattr(TrainConfig(), key), str) and values[key] is not None:
            values[key] = raw  # strings stay verbatim ("001" is a name, not a number)
    return from_dict(values, "--set")


def config_digest(config: TrainConfig, keys: tuple[str, ...]) -> str:
    import hashlib
    chosen = {k: config.as_dict()[k] for k in keys}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
