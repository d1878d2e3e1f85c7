"""What the numbered notebooks share: the work folder, the CPU smoke profile, the model choice, HTML views, a form.

Notebooks hold narrative and calls; anything longer than a line or two lives here and is tested.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_GPU_MODEL = "internlm2-chat-1_8b"   # the camp's model; InternLM2 is converted to Llama once (no remote code)
DEFAULT_CPU_MODEL = "smollm2-135m-instruct"  # installs from PyPI; English only (helpers.models.pypi)
REPO_ROOT = Path(__file__).resolve().parents[2]   # a source checkout: notebooks/ and the main job's runs/ live here


def smoke() -> bool:
    """TUNEBOOK_SMOKE=1: the smoke profile (tiny random model, small data, few steps): tests only."""
    return os.environ.get("TUNEBOOK_SMOKE") == "1"


def profile() -> str:
    """Which defaults the notebooks use. smoke: TUNEBOOK_SMOKE=1 (tests; the tiny model). gpu: a CUDA GPU (the
    camp's internlm2-chat-1_8b and settings). cpu: everything else (SmolLM2-135M-Instruct and the CPU recipes:
    a real model that learns a persona in minutes)."""
    if smoke():
        return "smoke"
    return "gpu" if has_gpu() else "cpu"


def workdir() -> Path:
    """Shared by all notebooks: $TUNEBOOK_WORKDIR, else work/ beside the notebooks (the kernel's folder)."""
    path = Path(os.environ.get("TUNEBOOK_WORKDIR") or Path.cwd() / "work")
    path.mkdir(parents=True, exist_ok=True)
    return path


def other_workdirs_with(relative: str | Path) -> list[Path]:
    """Other work folders (notebooks/work, the main job's runs/<date>/work, newest first) that hold `relative`.

    JupyterLab and `quickstart.py run` keep separate work folders; a notebook that finds nothing in its own says
    where the other run's file is instead of silently making a default one."""
    here = workdir().resolve()
    runs = sorted((REPO_ROOT / "runs").glob("*/work"), reverse=True)
    found = []
    for folder in [REPO_ROOT / "notebooks" / "work", Path.cwd() / "work", *runs]:
        folder = folder.resolve()
        if folder != here and folder not in found and (folder / relative).exists():
            found.append(folder)
    return found


def elsewhere_note(relative: str | Path) -> str:
    """One line naming the newest other work folder holding `relative`, with how to use it; "" when none."""
    found = other_workdirs_with(relative)
    if not found:
        return ""
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (f"another work folder has one: {found[0] / relative}{more}; to use that run's files, set "
            f"TUNEBOOK_WORKDIR={found[0]} before starting Jupyter, or copy the file here")


# Where the notebooks keep what they make, one convention for all of them (and for helpers.notebook.defaults).
DATA_KINDS = ("persona", "colorist")


def data_file(data: str | Path) -> Path:
    """work/data/<kind>.jsonl for a kind the notebooks make (persona, colorist); any other value is a file path."""
    return workdir() / "data" / f"{data}.jsonl" if data in DATA_KINDS else Path(data)


def heldout_file(data: str | Path) -> Path:
    """The held-out questions written beside a data file (<stem>.heldout.jsonl)."""
    path = data_file(data)
    return path.with_name(f"{path.stem}.heldout.jsonl")


def train_dir_for(kind: str) -> Path:
    return workdir() / f"train-{kind}"


def merged_dir_for(kind: str) -> Path:
    return workdir() / f"merged-{kind}"


def train_config_from(parameters: dict, **given):
    """A TrainConfig from a notebook's parameters cell: each field whose UPPER-CASE name is set there (MAX_LENGTH ->
    max_length), then `given` (model, data_path, output_dir, ...). Unknown names are ignored: a parameters cell
    also holds notebook-only settings."""
    import dataclasses

    from helpers.train.config import TrainConfig
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {name: parameters[name.upper()] for name in names if name.upper() in parameters}
    return TrainConfig(**{**values, **given})


def has_gpu() -> bool:
    import torch
    return torch.cuda.is_available()


@dataclass
class ModelChoice:
    path: Path
    name: str
    tiny: bool
    why: str           # one sentence for the learner (Chinese)


def tiny_model(root: Path | None = None) -> Path:
    from helpers.models.tiny import make_tiny_model
    path = (root or workdir()) / "models" / "tiny"
    if not (path / "config.json").is_file():
        make_tiny_model(path, overwrite=True)
    return path


def choose_model(preference: str = "auto") -> ModelChoice:
    """auto: the camp model on a GPU, SmolLM2 on a CPU, the tiny model in the smoke profile; the offline tiny model
    whenever the chosen one cannot be had (said so, with the fix)."""
    from helpers.models.find import ModelNotFound, resolve_model
    from helpers.errors import TunebookError
    if preference not in ("auto", "tiny"):
        return ModelChoice(resolve_model(preference), preference, False, f"使用你指定的模型 {preference}。")
    if preference == "tiny" or smoke():
        return ModelChoice(tiny_model(), "tiny", True,
                           "冒烟配置（TUNEBOOK_SMOKE=1，测试专用）：使用离线 tiny 模型，流程完整但回答只是演示。")
    if not has_gpu():
        try:
            path = resolve_model(DEFAULT_CPU_MODEL)
        except TunebookError as err:   # offline and not cached yet: pip could not fetch the wheel
            return ModelChoice(tiny_model(), "tiny", True,
                               f"没有 GPU，本应使用 {DEFAULT_CPU_MODEL}，但它还没有下载过、现在也下载不了（详情见下）。"
                               "暂用离线 tiny 模型跑通流程（随机权重，回答没有意义）；联网后重跑本单元即可。\n"
                               f"{err}")
        return ModelChoice(path, DEFAULT_CPU_MODEL, False,
                           f"没有检测到 GPU：使用 {DEFAULT_CPU_MODEL}（1.35 亿参数的真实对话模型，从 PyPI 安装，"
                           f"已缓存在 {path}）。它只会英文，所以 CPU 上的自我认知数据用英文；"
                           f"要微调训练营的 {DEFAULT_GPU_MODEL}，请换到有 GPU 的环境（InternStudio / Colab GPU）。")
    try:
        path = resolve_model(DEFAULT_GPU_MODEL)
    except ModelNotFound as err:
        return ModelChoice(tiny_model(), "tiny", True,
                           f"检测到 GPU，但找不到 {DEFAULT_GPU_MODEL}（详情见下）。暂用 tiny 模型；"
                           f"设置 HF_ENDPOINT 或安装 modelscope 后重跑本单元。\n{err}")
    return ModelChoice(path, DEFAULT_GPU_MODEL, False,
                       f"检测到 GPU：使用训练营的 {DEFAULT_GPU_MODEL}（{path}）。它会被一次性转换为原生 Llama 结构，"
                       "无需 trust_remote_code，可直接用于最新版 transformers。")


# ---------------------------------------------------------------- the profiles' defaults (one table)

# What the notebooks (and helpers.notebook.defaults, for a notebook opened on its own) use in each profile. The cpu values
# are the shipped recipes (helpers/assets/recipes/<kind>_cpu.yaml), so notebook 03, the main job and
# `python -m helpers train <recipe>` train the same way.
SMOKE_TRAINING = dict(max_length=256, accumulative_counts=1, max_steps=80, lr=3e-3, lora_alpha=64, lora_dropout=0.0,
                      save_steps=40, evaluation_freq=40, evaluation_max_new_tokens=40, logging_steps=5)
PERSONA_DATA = {
    "smoke": dict(name="伍鲜同志", model_description="上海AI实验室书生·浦语的1.8B大模型", lang="zh", n=40, mix_ratio=0.6),
    "cpu": dict(name="Wu Xian", model_description="SmolLM2-135M-Instruct, a small open model by Hugging Face",
                lang="en", n=200, mix_ratio=0.2),
    "gpu": dict(name="伍鲜同志", model_description="上海AI实验室书生·浦语的1.8B大模型", lang="both", n=2000,
                mix_ratio=0.2),
}
COLORIST_DATA = {"smoke": dict(limit=600, synthetic_n=600, heldout=30),
                 "cpu": dict(limit=800, synthetic_n=800, heldout=40),
                 "gpu": dict(limit=None, synthetic_n=5000, heldout=100)}
QUESTIONS = {"persona": {"smoke": ["请介绍一下你自己", "Please introduce yourself", "请给我介绍五个上海的景点"],
                         "gpu": ["请介绍一下你自己", "Please introduce yourself", "请给我介绍五个上海的景点"]},
             "colorist": {"smoke": ["请给我一个像天空一样清澈透明的蓝色。"], "gpu": ["请给我一个像天空一样清澈透明的蓝色。"]}}


def persona_data_settings(which: str | None = None) -> dict:
    return dict(PERSONA_DATA[which or profile()])


def colorist_data_settings(which: str | None = None) -> dict:
    return dict(COLORIST_DATA[which or profile()])


def training_settings(kind: str = "persona", which: str | None = None) -> dict:
    """TrainConfig values of a profile for `kind` (persona / colorist), without model, data and output folder."""
    from helpers.train.config import TrainConfig, recipe_values
    which = which or profile()
    if which == "cpu":
        values = recipe_values(f"{kind if kind in ('persona', 'colorist') else 'persona'}_cpu")
        values.pop("model", None)
    else:
        values = dict(SMOKE_TRAINING) if which == "smoke" else {}
        kind_questions = QUESTIONS.get(kind, QUESTIONS["persona"])
        values["evaluation_inputs"] = list(kind_questions[which])
    defaults = TrainConfig()
    return {key: values.get(key, getattr(defaults, key)) for key in TRAINING_KEYS}


TRAINING_KEYS = ("mode", "dtype", "template", "system", "general_answers", "max_length", "batch_size",
                 "accumulative_counts", "max_epochs", "max_steps", "lr", "lora_r", "lora_alpha", "lora_dropout",
                 "lora_top_layers", "gradient_checkpointing", "save_steps", "evaluation_freq", "evaluation_inputs",
                 "evaluation_max_new_tokens", "logging_steps")


# ---------------------------------------------------------------- HTML views

def show(markup: str) -> None:
    from IPython.display import HTML, display
    display(HTML(markup))


def table_html(rows: list[dict], columns: list[str] | None = None, limit: int = 20) -> str:
    columns = columns or (list(rows[0]) if rows else [])
    head = "".join(f"<th style='text-align:left'>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left;white-space:pre-wrap'>{html.escape(str(r.get(c, '')))}"
                                   "</td>" for c in columns) + "</tr>" for r in rows[:limit])
    more = f"<p>…… 共 {len(rows)} 行，只显示前 {limit} 行</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def trained_spans_html(tokenizer, sample) -> str:
    """The sample's text with trained tokens highlighted (what the loss sees), special tokens kept."""
    from helpers.encode.encoding import IGNORE_INDEX
    parts, start = [], 0
    ids, labels = sample.input_ids, sample.labels
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            text = html.escape(tokenizer.decode(ids[start:i], skip_special_tokens=False,
                                                clean_up_tokenization_spaces=False))
            if labels[start] != IGNORE_INDEX:
                text = f"<mark style='background:#ffe08a'>{text}</mark>"
            parts.append(text)
            start = i
    return ("<pre style='white-space:pre-wrap;line-height:1.5'>" + "".join(parts) + "</pre>"
            "<p><mark style='background:#ffe08a'>黄色</mark> = 计算 loss 的 token（回答 + 结束符），其余只作为上下文。</p>")


# ---------------------------------------------------------------- a small form

def form(fields: dict, action, button: str = "生成", title: str = ""):
    """A form of text/int/float/choice fields and a button; `action(**values)` returns HTML to show below.

    fields: name -> (label, default) or (label, default, [choices]). Returns the widget; `run()` on it calls the
    action with the current values (so a headless run of the notebook works without clicking).
    """
    import ipywidgets as w
    controls = {}
    for name, spec in fields.items():
        label, default = spec[0], spec[1]
        style = {"description_width": "initial"}
        if len(spec) > 2:
            controls[name] = w.Dropdown(options=spec[2], value=default, description=label, style=style)
        elif isinstance(default, bool):
            controls[name] = w.Checkbox(value=default, description=label, style=style)
        elif isinstance(default, int):
            controls[name] = w.IntText(value=default, description=label, style=style)
        elif isinstance(default, float):
            controls[name] = w.FloatText(value=default, description=label, style=style)
        else:
            # continuous_update=False: one value message on change (blur/Enter). Per key, ipywidgets throttles a
            # widget's second value message until the kernel is idle, and a button click is not throttled, so a
            # quick click after typing used to reach the kernel before the last keys (the old name was used).
            controls[name] = w.Text(value=str(default), description=label, style=style, continuous_update=False)
    go = w.Button(description=button, button_style="primary")
    out = w.HTML()
    box = w.VBox(([w.HTML(f"<b>{html.escape(title)}</b>")] if title else []) + list(controls.values()) + [go, out])

    def run(*_):
        from helpers.errors import TunebookError
        go.disabled = True
        try:
            out.value = action(**{name: c.value for name, c in controls.items()})
        except TunebookError as err:
            out.value = f"<p style='color:#b00'>{html.escape(str(err))}</p>"
        finally:
            go.disabled = False
        return out.value

    go.on_click(run)
    box.run, box.controls, box.output, box.button = run, controls, out, go
    return box
