"""The training settings: one dataclass with the knobs of an XTuner config's settings block.

Defaults are the camp's `internlm2_chat_1_8b_qlora_alpaca_e3`. Load from YAML, from a dict, or from an
XTuner config .py file: its literal assignments (PART 1 settings, the LoRA dict) are read with `ast`;
the file is never executed, so a camp config can be brought along without mmengine or xtuner installed.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from helpers.errors import TunebookError
from helpers.io import ASSETS


class ConfigError(TunebookError):
    pass


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
    seed: int = 0
    output_dir: str = "work/train"
    deepspeed: str | None = None           # None | zero2 | zero3 | path to a DeepSpeed JSON
    dataloader_num_workers: int = 0

    def validate(self) -> None:
        """Checks that need no model or GPU: run before anything heavy is loaded."""
        from helpers.data.formats import FORMATS
        from helpers.models.loading import MODES
        from helpers.encode.packing import STRATEGIES
        from helpers.encode.templates import AUTO_TEMPLATE, HF_TEMPLATE, get_template
        if self.mode not in MODES:
            raise ConfigError(f"mode: unknown {self.mode!r}; choose one of: {', '.join(MODES)}")
        if self.template not in (HF_TEMPLATE, AUTO_TEMPLATE):
            try:
                get_template(self.template)
            except TunebookError as err:
                raise ConfigError(f"template: {err}") from None
        if not self.data_path:
            raise ConfigError("data_path: not set; point it at your .json/.jsonl dataset")
        if not Path(self.data_path).is_file():
            raise ConfigError(f"data_path: {self.data_path} does not exist (relative paths start from {Path.cwd()})")
        if self.data_format != "auto" and self.data_format not in FORMATS:
            raise ConfigError(f"data_format: unknown {self.data_format!r}; choose auto or one of {', '.join(FORMATS)}")
        for name in ("max_length", "batch_size", "accumulative_counts", "save_steps", "evaluation_freq",
                     "logging_steps", "lora_r"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.general_answers not in ("data", "base"):
            raise ConfigError(f"general_answers: must be data (answers as written) or base (the base model's own), "
                              f"got {self.general_answers!r}")
        if self.lora_top_layers < 0:
            raise ConfigError(f"lora_top_layers: must be 0 (every layer) or a number of layers, got "
                              f"{self.lora_top_layers}")
        if self.max_steps <= 0 and self.max_epochs <= 0:
            raise ConfigError("max_epochs / max_steps: set one of them to a positive number")
        if self.lr <= 0:
            raise ConfigError(f"lr: must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.batching not in ("auto",) + STRATEGIES:
            raise ConfigError(f"batching: unknown {self.batching!r}; choose auto or one of {', '.join(STRATEGIES)}")
        if self.mode == "qlora":
            from helpers.models.loading import require_bitsandbytes
            try:
                require_bitsandbytes()
            except TunebookError as err:
                raise ConfigError(f"mode: {err}") from None
        if self.deepspeed and self.deepspeed not in ("zero2", "zero3") and not Path(self.deepspeed).is_file():
            raise ConfigError(f"deepspeed: {self.deepspeed} is neither zero2, zero3 nor a JSON file")

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


def from_dict(values: dict, source: str = "settings") -> TrainConfig:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    config = TrainConfig()
    for key, value in values.items():
        setattr(config, key, _coerce(key, value, source))
    return config


def _coerce(key: str, value, source: str):
    default = getattr(TrainConfig(), key)
    if key == "betas":
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise ConfigError(f"{source}: betas must be two numbers, got {value!r}")
        return (float(value[0]), float(value[1]))
    if key == "evaluation_inputs":
        return [value] if isinstance(value, str) else [str(v) for v in value]
    if key == "lora_target_modules":
        return value if isinstance(value, str) else list(value)
    if value is None or default is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int) and not isinstance(default, bool):
            as_float = float(value)
            return int(as_float) if as_float == int(as_float) else as_float
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} must be a {type(default).__name__}, got {value!r}") from None
    return value


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


def load_yaml(path: str | os.PathLike) -> TrainConfig:
    import yaml
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return from_dict(values, str(path))


def load_xtuner(path: str | os.PathLike) -> TrainConfig:
    """Read an XTuner config .py without executing it."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as err:
        raise ConfigError(f"{path}:{err.lineno}: not valid Python ({err.msg})") from None
    values: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in XTUNER_NAMES:
                value = _xtuner_value(node.value)
                if value is not _UNREADABLE:
                    values[XTUNER_NAMES[name]] = value
    for call in ast.walk(tree):  # LoRA settings and the dataset map fn live in nested dict(...) calls
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "dict"):
            continue
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        if _name(keywords.get("type")) == "LoraConfig":
            for key, ours in (("r", "lora_r"), ("lora_alpha", "lora_alpha"), ("lora_dropout", "lora_dropout"),
                              ("target_modules", "lora_target_modules")):
                if key in keywords and (value := _xtuner_value(keywords[key])) is not _UNREADABLE and value is not None:
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


def _xtuner_value(node):
    """Literals, PROMPT_TEMPLATE.x -> 'x', SYSTEM_TEMPLATE.x -> its text; anything else is skipped."""
    from helpers.encode.templates import SYSTEM_TEMPLATES
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError):
        pass
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
        key = key.strip()
        if key not in FIELDS:
            raise ConfigError(f"--set {key}: unknown setting; known: {', '.join(FIELDS)}")
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
