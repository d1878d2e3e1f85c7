"""report_to: a tiny run writes TensorBoard event files under <output_dir>/logs; bad values and missing packages are
refused in one line before a model loads."""
import json
import os

import pytest

from helpers.train.config import ConfigError, TrainConfig, from_dict


def _persona(tmp_path):
    data = tmp_path / "persona.jsonl"
    row = {"conversation": [{"input": "你是谁", "output": "我是伍鲜同志的小助手"}]}
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for _ in range(8)), encoding="utf-8")
    return data


def test_report_to_tensorboard_writes_train_loss_events_under_output_dir_logs(tiny_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from helpers.train.engine import train
    out = tmp_path / "run"
    config = from_dict(dict(model=str(tiny_model_dir), data_path=str(_persona(tmp_path)), output_dir=str(out),
                            mode="lora", max_length=64, accumulative_counts=1, max_steps=3, save_steps=100,
                            evaluation_inputs=[], logging_steps=1, report_to="tensorboard"))
    before = os.environ.get("TENSORBOARD_LOGGING_DIR")
    train(config, notebook=False)
    assert os.environ.get("TENSORBOARD_LOGGING_DIR") == before   # the run's folder does not leak into the next run
    events = sorted((out / "logs").glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in out.rglob("*"))
    accumulator = EventAccumulator(str(out / "logs"))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3]
    assert not list(out.glob("runs"))   # transformers' default runs/<date_host> folder is not used


def test_a_mistyped_report_to_is_refused_with_the_closest_choice(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("report_to: tensorbord\n", encoding="utf-8")
    from helpers.train.config import load_config
    with pytest.raises(ConfigError, match=r"c\.yaml: report_to: must be one of none, tensorboard, swanlab, trackio, "
                                          r"wandb, got 'tensorbord'; did you mean tensorboard\?"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"report_to: must be one of none, tensorboard, swanlab, trackio, wandb, "
                                          r"got 'mlflow'$"):
        from_dict({"report_to": "mlflow"})


def test_a_missing_dashboard_package_is_one_line_before_the_model_loads(tmp_path, monkeypatch, run_cli):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "swanlab" else real(name, *a))
    config = TrainConfig(model=str(tmp_path / "no-model-here"), data_path=str(_persona(tmp_path)),
                         output_dir=str(tmp_path / "run"), mode="lora", report_to="swanlab")
    with pytest.raises(ConfigError, match=r"^report_to: swanlab needs the swanlab package, which is not installed: "
                                          r"pip install swanlab \(or set report_to: none\)$"):
        config.validate()
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(f"model: {tmp_path / 'no-model-here'}\ndata_path: {_persona(tmp_path)}\nmode: lora\n"
                         f"output_dir: {tmp_path / 'run'}\nreport_to: swanlab\n", encoding="utf-8")
    code, _, err = run_cli("train", yaml_path)
    assert code == 2 and err.strip().splitlines() == [
        "error: report_to: swanlab needs the swanlab package, which is not installed: pip install swanlab "
        "(or set report_to: none)"]
