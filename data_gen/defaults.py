"""Default datasets for a notebook opened on its own (03/04 without 01/02 run first): small and announced."""
from __future__ import annotations

from pathlib import Path

from helpers.errors import TunebookError


def ensure_data(kind: str, path: Path, smoke: bool = True) -> Path:
    """`path` if it exists; else write the default persona / Colorist set there and say so."""
    path = Path(path)
    if path.is_file():
        return path
    if kind == "persona":
        from data_gen.persona import PersonaFacts, generate_persona, write_persona_set
        persona_set = generate_persona(PersonaFacts(name="伍鲜同志", model_description="上海AI实验室书生·浦语的1.8B大模型"),
                                       n=40 if smoke else 2000, lang="zh" if smoke else "both", mix_with="builtin",
                                       mix_ratio=0.6 if smoke else 0.2)
        write_persona_set(persona_set, path)
    elif kind == "colorist":
        from helpers.colorist_data import load_colorist, split_heldout, write_colorist
        rows, source, _ = load_colorist("auto", limit=600 if smoke else None, n_synthetic=600 if smoke else 5000)
        write_colorist(path, *split_heldout(rows, 30 if smoke else 100))
    else:
        raise TunebookError(f"{path} does not exist; run 01_persona_data / 02_colorist_dataset first, or give a data file")
    print(f"{path} was missing: wrote the default {kind} dataset there (run the {kind} notebook to make your own)")
    return path


def ensure_adapter(kind: str, smoke: bool = True) -> Path:
    """The adapter 03_qlora_training writes (work/train-<kind>/adapter); trained now, small, if it is missing."""
    from helpers.notebook import choose_model, workdir
    from helpers.train_config import TrainConfig
    from helpers.training import train
    adapter = workdir() / f"train-{kind}" / "adapter"
    if (adapter / "tunebook.json").is_file():
        return adapter
    print(f"{adapter} not found: training one now with the {'smoke' if smoke else 'default'} settings "
          "(run 03_qlora_training to train your own)")
    data = ensure_data(kind, workdir() / "data" / f"{kind}.jsonl", smoke)
    settings = dict(max_length=256, accumulative_counts=1, max_steps=80, lr=3e-3, lora_alpha=64, lora_dropout=0.0,
                    save_steps=40, evaluation_freq=40) if smoke else {}
    question = {"persona": "请介绍一下你自己", "colorist": "请给我一个像天空一样清澈透明的蓝色。"}.get(kind, "你好")
    config = TrainConfig(model=str(choose_model("auto").path), data_path=str(data),
                         output_dir=str(adapter.parent), evaluation_inputs=[question], **settings)
    return train(config).adapter_dir


def find_adapter(kind: str, train_if_missing: bool) -> Path | None:
    """The adapter of an earlier 03 run for `kind`, a small one trained now (smoke profile), or None."""
    from helpers.notebook import workdir
    adapter = workdir() / f"train-{kind}" / "adapter"
    if (adapter / "tunebook.json").is_file():
        return adapter
    return ensure_adapter(kind, smoke=True) if train_if_missing else None
