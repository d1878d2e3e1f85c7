"""Default datasets and adapters for a notebook opened on its own (03/04 without 01/02 run first): announced, with
the current profile's settings (helpers.notebook.cells: smoke / cpu / gpu)."""
from __future__ import annotations

from pathlib import Path

from helpers.errors import TunebookError


def ensure_data(kind: str, path: Path, which: str | None = None) -> Path:
    """`path` if it exists; else write the profile's default persona / Colorist set there and say so."""
    from helpers.notebook.cells import colorist_data_settings, elsewhere_note, persona_data_settings, workdir
    path = Path(path)
    if path.is_file():
        return path
    relative = _inside(path, workdir())
    elsewhere = elsewhere_note(relative) if relative else ""
    if kind == "persona":
        from data_gen.persona import PersonaFacts, generate_persona, write_persona_set
        s = persona_data_settings(which)
        persona_set = generate_persona(PersonaFacts(name=s["name"], model_description=s["model_description"]),
                                       n=s["n"], lang=s["lang"], mix_with="builtin", mix_ratio=s["mix_ratio"])
        write_persona_set(persona_set, path)
    elif kind == "colorist":
        from helpers.data.colorist import load_colorist, split_heldout, write_colorist
        s = colorist_data_settings(which)
        rows, source, _ = load_colorist("auto", limit=s["limit"], n_synthetic=s["synthetic_n"])
        write_colorist(path, *split_heldout(rows, s["heldout"]))
    else:
        raise TunebookError(f"{path} does not exist; run 01_persona_data / 02_colorist_dataset first, or give a data file")
    print(f"{path} was missing: wrote the default {kind} dataset there (run the {kind} notebook to make your own)")
    if elsewhere:
        print(elsewhere)
    return path


def _inside(path: Path, folder: Path) -> Path | None:
    """`path` relative to `folder`, or None when it lies elsewhere (a file the learner named)."""
    try:
        return path.resolve().relative_to(folder.resolve())
    except ValueError:
        return None


def ensure_adapter(kind: str, which: str | None = None) -> Path:
    """The adapter 03_qlora_training writes (work/train-<kind>/adapter); trained now with the profile's settings
    if it is missing."""
    from helpers.notebook.cells import (choose_model, data_file, elsewhere_note, profile, train_dir_for,
                                        training_settings, workdir)
    from helpers.train.config import TrainConfig
    from helpers.train.engine import train
    adapter = train_dir_for(kind) / "adapter"
    if (adapter / "tunebook.json").is_file():
        return adapter
    which = which or profile()
    print(f"{adapter} not found: training one now with the {which} profile's settings "
          "(run 03_qlora_training to train your own)")
    elsewhere = elsewhere_note(_inside(adapter, workdir()))
    if elsewhere:
        print(elsewhere)
    data = ensure_data(kind, data_file(kind), which)
    config = TrainConfig(model=str(choose_model("auto").path), data_path=str(data), output_dir=str(adapter.parent),
                         **training_settings(kind, which))
    return train(config).adapter_dir


def find_adapter(kind: str, train_if_missing: bool) -> Path | None:
    """The adapter of an earlier 03 run for `kind`, one trained now (profile settings), or None."""
    from helpers.notebook.cells import train_dir_for
    adapter = train_dir_for(kind) / "adapter"
    if (adapter / "tunebook.json").is_file():
        return adapter
    return ensure_adapter(kind) if train_if_missing else None
