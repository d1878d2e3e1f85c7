"""What notebook 05 calls: the profile's models and settings, the swatch set, before/after answers and tables."""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

from helpers.multimodal.swatches import QUESTIONS, draw, swatch_errors, swatch_metrics

# Per profile (helpers.notebook.cells.profile): smoke = tests (tiny LM), cpu = SmolLM2 + the tiny tower (measured on
# the project's 2-core machine, one run each, see README: stage 2 at 200 steps / lr 2e-3 gave both hexes on 30-40% of
# held-out two-colour swatches where 150 / 1e-3 gave 10%, and a lower ΔE00 median; a 0.4 two-colour share did not do
# better), gpu = the camp's models and LLaVA settings.
LLAVA_SETTINGS = {
    "smoke": dict(n_train=20, n_heldout=20, two_colour_share=0.2, max_length=128, batch_size=4,
                  stage1_steps=40, stage1_lr=3e-3, stage2_steps=200, stage2_lr=5e-3, lora_r=16, lora_alpha=32,
                  mode="lora"),
    "cpu": dict(n_train=400, n_heldout=40, two_colour_share=0.25, max_length=128, batch_size=8,
                stage1_steps=100, stage1_lr=1e-3, stage2_steps=200, stage2_lr=2e-3, lora_r=16, lora_alpha=32,
                mode="lora"),
    # camp: llava_internlm2_chat_1_8b_clip_vit_large_p14_336 (pretrain lr 1e-3; finetune QLoRA r 512, alpha 256,
    # lr 2e-4, batch 16); one epoch of the swatch set instead of LLaVA-Instruct
    "gpu": dict(n_train=5000, n_heldout=100, two_colour_share=0.25, max_length=2048, batch_size=16,
                stage1_steps=-1, stage1_lr=1e-3, stage2_steps=-1, stage2_lr=2e-4, lora_r=512, lora_alpha=256,
                mode="qlora"),
}


@dataclass
class LlavaParts:
    vision: Path
    lm: Path
    why: str


def llava_settings(which: str | None = None) -> dict:
    from helpers.notebook.cells import profile
    return dict(LLAVA_SETTINGS[which or profile()])


def choose_parts(which: str | None = None) -> LlavaParts:
    """Vision tower + LM for the profile: the camp's CLIP ViT-L/14-336 + InternLM2 on a GPU; on a CPU the tiny
    CLIP-shaped tower (made here, not pretrained) + SmolLM2 (or the tiny LM in the smoke profile)."""
    from helpers.models.find import resolve_model
    from helpers.multimodal.tower import CAMP_VISION, tiny_vision
    from helpers.notebook.cells import choose_model, profile, workdir
    which = which or profile()
    choice = choose_model("auto")
    if which == "gpu":
        try:
            vision = resolve_model(CAMP_VISION)
            return LlavaParts(vision, choice.path, f"训练营的视觉编码器 {CAMP_VISION}（{vision}）+ {choice.why}")
        except Exception as err:
            return LlavaParts(tiny_vision(workdir() / "models"), choice.path,
                              f"找不到 {CAMP_VISION}（{str(err).splitlines()[0]}），暂用本地的小视觉塔。{choice.why}")
    tower = tiny_vision(workdir() / "models")
    return LlavaParts(tower, choice.path, "视觉塔：本地初始化的小型 CLIP 结构（32 像素、16 个图像 token，随机权重、"
                                          "不是预训练模型；它看得到颜色和左右布局，正是色卡任务需要的）。" + choice.why)


def swatch_colours(limit: int) -> list[str]:
    """Colours for the swatches: 02's Colorist data when present, else the synthetic Colorist set."""
    from helpers.data.colorist import load_colorist
    from helpers.notebook.cells import data_file
    path = data_file("colorist")
    if path.is_file():
        from helpers.io import read_jsonl
        rows = read_jsonl(path)
        colours = [r["conversation"][0]["output"] for r in rows if "conversation" in r]
        if len(set(colours)) >= limit:
            return colours
    records, _, _ = load_colorist("synthetic", limit=limit)
    return [r["color"] for r in records]


def _png(colours: tuple[str, ...], size: int = 40) -> str:
    buffer = io.BytesIO()
    draw(colours, size).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _picture(colours: tuple[str, ...] | None, size: int = 40) -> str:
    if not colours:
        return "<span style='color:#999'>—</span>"
    return f"<img src='{_png(colours, size)}' width='{size}' height='{size}' style='border:1px solid #ccc'>"


def gallery_html(rows: list[tuple[str, tuple[str, ...]]], answers: list[str] | None = None, limit: int = 12) -> str:
    """Swatches (picture + the answer it is trained on) in a row of cards."""
    from helpers.multimodal.swatches import Swatch
    cards = []
    for index, (image, colours) in enumerate(rows[:limit]):
        text = answers[index] if answers else Swatch(colours, image).answer
        cards.append(f"<div style='display:inline-block;width:150px;margin:4px;vertical-align:top'>"
                     f"{_picture(colours, 48)}<br><small>{html.escape(text)}</small></div>")
    return "<div>" + "".join(cards) + "</div>"


def comparison_html(rows: list[tuple[str, tuple[str, ...]]], before: list[str], after: list[str],
                    limit: int = 12) -> str:
    """Held-out swatches: the picture, what the model drew from its answer before and after, ΔE00 each."""
    from helpers.multimodal.swatches import answer_colours
    body = []
    for (_, colours), old, new in list(zip(rows, before, after))[:limit]:
        cells = [_picture(colours)]
        for answer in (old, new):
            found = tuple(answer_colours(answer)[:len(colours)])
            errors = swatch_errors(colours, answer)
            cells.append(f"{_picture(found if len(found) == len(colours) else None)} "
                         f"<small>{html.escape(answer[:60])}<br>ΔE00 {' / '.join(f'{e:.0f}' for e in errors)}</small>")
        body.append("<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in cells) + "</tr>")
    return ("<table><tr><th>真实颜色</th><th>训练前的回答</th><th>训练后的回答</th></tr>" + "".join(body) + "</table>")


def metrics_table(before: dict, after: dict, constant: dict | None = None) -> str:
    """before / after (and the picture-blind baseline: the training colours' average for every swatch)."""
    def cell(m, kind, key, fmt):
        m = m if kind is None or m is None else m.get(kind)
        return "—" if m is None or m[key] is None else fmt.format(m[key])
    columns = [("before", before), ("after", after)] + ([("same colour", constant)] if constant else [])
    lines = [f"{'metric':<38}" + "".join(f"{name:>13}" for name, _ in columns), "-" * (38 + 13 * len(columns))]
    for label, kind, key, fmt in (("hex given (parse rate)", None, "parse_rate", "{:.0%}"),
                                  ("ΔE00 median (unparsed = 100)", None, "delta_e_median", "{:.1f}"),
                                  ("ΔE00 mean", None, "delta_e_mean", "{:.1f}"),
                                  ("share of colours with ΔE00 < 10", None, "share_under_10", "{:.0%}"),
                                  ("  solid swatches: ΔE00 median", "solid", "delta_e_median", "{:.1f}"),
                                  ("  two-colour: both hexes given", "two_colour", "parse_rate", "{:.0%}"),
                                  ("  two-colour: ΔE00 median", "two_colour", "delta_e_median", "{:.1f}")):
        lines.append(f"{label:<38}" + "".join(f"{cell(m, kind, key, fmt):>13}" for _, m in columns))
    if constant:
        lines.append("same colour = one answer for every picture (the training colours' average): what a model that "
                     "ignores the pixels could score")
    return "\n".join(lines)


def constant_metrics(train_rows, heldout_rows) -> dict:
    from helpers.multimodal.swatches import constant_answer
    answer = constant_answer(train_rows)
    return swatch_metrics([colours for _, colours in heldout_rows], [answer] * len(heldout_rows))


def evaluate(chat, folder: Path, rows: list[tuple[str, tuple[str, ...]]]) -> tuple[list[str], dict]:
    """Greedy answers to the first question for each held-out picture, and their swatch metrics."""
    from helpers.multimodal.llava_chat import answers
    from helpers.multimodal.swatches import ANSWER_SAMPLING
    got = answers(chat, [folder / image for image, _ in rows], QUESTIONS[0], ANSWER_SAMPLING)
    return got, swatch_metrics([colours for _, colours in rows], got)


def save_metrics(before: dict, after: dict, path: Path, constant: dict | None = None) -> str:
    """The before/after table, also written to `path` (the main job prints it at the end)."""
    from helpers.io import atomic_file
    table = metrics_table(before, after, constant)
    with atomic_file(path) as handle:
        handle.write(table + "\n")
    return table
