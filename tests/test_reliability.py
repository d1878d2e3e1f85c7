"""Bad input never costs a learner their work: each case is the exact input that used to end in a traceback, a
silent default or lost work, and now ends in one message naming the file or setting (exit 2 for CLI commands)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from helpers.errors import TunebookError
from helpers.train.config import ConfigError, TrainConfig, from_dict, load_config


# ---- settings: type, range, choices, before any model is loaded ----

BAD_SETTINGS = [
    ("max_length", float("inf"), "max_length: must be a whole number, got inf"),
    ("max_length", 10.5, "max_length: must be a whole number, got 10.5"),
    ("data_path", 123, "data_path: must be a text string"),
    ("evaluation_inputs", 5, "evaluation_inputs: must be a list of text strings, got 5"),
    ("betas", ["a", "b"], "betas: must be two numbers in \\[0, 1\\)"),
    ("betas", [2, 3], "betas: must be two numbers in \\[0, 1\\)"),
    ("lora_target_modules", 5, "lora_target_modules: must be \"all-linear\" or a list"),
    ("optim", "nonsense_optim", "optim: must be auto or a transformers optimizer name"),
    ("lora_r", 2.5, "lora_r: must be a whole number, got 2.5"),
    ("dataloader_num_workers", -1, "dataloader_num_workers: must be at least 0, got -1"),
    ("evaluation_max_new_tokens", -1, "evaluation_max_new_tokens: must be positive, got -1"),
    ("weight_decay", -1, "weight_decay: must be at least 0, got -1"),
    ("loss_chunk", -5, "loss_chunk: must be at least 0, got -5"),
    ("lora_dropout", 5, "lora_dropout: must be in \\[0, 1\\), got 5"),
    ("pack", "maybe", "pack: must be true or false, got 'maybe'"),
    ("mode", "qlora4", "mode: must be one of qlora, lora, full"),
    ("template", "internlm3_chat", "template: unknown prompt template 'internlm3_chat'"),
    ("save_total_limit", 0, "save_total_limit: must be positive \\(or -1\\), got 0"),
]


@pytest.mark.parametrize("key,value,message", BAD_SETTINGS, ids=[f"{k}={v!r}" for k, v, _ in BAD_SETTINGS])
def test_a_wrong_setting_is_named_by_file_and_by_python(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=f"c.yaml: {message}"):
        from_dict({key: value}, str(tmp_path / "c.yaml"))
    data = tmp_path / "d.jsonl"
    data.write_text('{"conversation": [{"input": "q", "output": "a"}]}\n', encoding="utf-8")
    config = TrainConfig(data_path=str(data), mode="lora")   # built in Python / a notebook, then changed
    setattr(config, key, value)
    with pytest.raises(ConfigError, match=f"^{message}"):
        config.validate()


def test_a_folder_as_data_path_is_called_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="data_path: .* is a folder; give the .json/.jsonl file inside it"):
        TrainConfig(data_path=str(tmp_path), mode="lora").validate()


def test_integral_floats_and_yaml_spellings_still_convert():
    config = from_dict({"max_length": 1e3, "pack": "false", "evaluation_inputs": "hi", "betas": [0.9, 0.95]})
    assert (config.max_length, config.pack, config.evaluation_inputs, config.betas) == (1000, False, ["hi"],
                                                                                        (0.9, 0.95))


def test_non_utf8_configs_are_explained(tmp_path):
    for name in ("c.yaml", "c.py"):
        (tmp_path / name).write_bytes("lr: 0.1 # 学习率\n".encode("gbk") if name.endswith("yaml")
                                      else "lr = 0.1  # 学习率\n".encode("gbk"))
        with pytest.raises(ConfigError, match=f"{name}: the config is not UTF-8 text .*iconv -f GB18030"):
            load_config(tmp_path / name)


# ---- XTuner .py: arithmetic is evaluated, anything else is refused by name ----

def test_xtuner_arithmetic_is_evaluated_without_running_the_file(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("raise SystemExit('never run')\nbatch_size = 2\nlr = 2e-4 / 2\naccumulative_counts = 16 // batch_size\n"
                    "sequence_parallel_size = 2\naccumulative_counts *= sequence_parallel_size\nmax_length = 2 ** 10\n"
                    "max_epochs = -(-3)\nSYSTEM = 'a' + 'b'\n", encoding="utf-8")
    config = load_config(path)
    assert (config.batch_size, config.lr, config.accumulative_counts, config.max_length, config.max_epochs,
            config.system) == (2, 1e-4, 16, 1024, 3, "ab")


@pytest.mark.parametrize("line", ["lr = get_lr()", "max_length = 10 ** 10 ** 10", "batch_size = unknown_name * 2",
                                  "lr = 1 / 0", "max_epochs = [1][0]"])
def test_xtuner_expressions_tunebook_cannot_read_are_refused_by_name_and_line(tmp_path, line):
    path = tmp_path / "cfg.py"
    path.write_text(f"x = 1\n{line}\n", encoding="utf-8")
    setting = line.split(" =")[0]
    with pytest.raises(ConfigError, match=f"cfg.py:2: {setting} = .* is not a literal or \\+ - \\* / // \\*\\*"):
        load_config(path)


# ---- one run per output folder ----

def test_lock_is_reentrant_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    from helpers.io import LOCK_NAME, FolderBusy, folder_lock
    with folder_lock(tmp_path, "training") as held:
        with folder_lock(tmp_path, "training"):   # a notebook cell calling train() again in the same kernel
            pass
        assert json.loads((held / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()     # released
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid,
                                                      "what": "training of m", "since": "then"}))
        with pytest.raises(FolderBusy, match=f"in use by training of m \\(process {sleeper.pid} on"):
            with folder_lock(tmp_path, "training"):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    notes = []
    with folder_lock(tmp_path, "training", note=notes.append):   # the holder is dead now
        pass
    assert notes and f"left by process {sleeper.pid}" in notes[0] and "taking it over" in notes[0]
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "another-machine", "pid": 1, "what": "merge"}))
    with pytest.raises(FolderBusy, match="on another-machine"):   # cannot tell whether it lives: refuse
        with folder_lock(tmp_path, "training"):
            pass


def test_second_training_into_a_busy_folder_is_refused_before_loading(tiny_model_dir, tmp_path, monkeypatch,
                                                                      run_cli):
    import helpers.models.loading as models
    from helpers.io import LOCK_NAME
    monkeypatch.setattr(models, "load_prepared_model", lambda *a, **k: pytest.fail("a model was loaded"))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        data = tmp_path / "d.jsonl"
        data.write_text('{"conversation": [{"input": "q", "output": "a"}]}\n', encoding="utf-8")
        out = tmp_path / "run"
        out.mkdir()
        (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid,
                                                 "what": "training of other", "since": "now"}))
        (tmp_path / "c.yaml").write_text(f"model: {tiny_model_dir}\ndata_path: {data}\noutput_dir: {out}\n"
                                         "mode: lora\n", encoding="utf-8")
        code, _, err = run_cli("train", tmp_path / "c.yaml")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert code == 2 and "is in use by training of other" in err and "Traceback" not in err


# ---- disk and permissions ----

def test_unwritable_output_folder_is_named_with_the_fix(tmp_path, monkeypatch):
    """A read-only mount (EROFS), simulated: root, as in CI, could write into a chmod-ed folder anyway."""
    import errno
    import tempfile

    from helpers.io import check_writable
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(TunebookError, match="output_dir: cannot write into .*Read-only file system.*choose a folder"):
        check_writable(tmp_path / "run", "output_dir")
    (tmp_path / "file").write_text("x")
    with pytest.raises(TunebookError, match="output_dir: .*file is a file, not a folder"):
        check_writable(tmp_path / "file", "output_dir")


def test_not_enough_space_and_a_full_disk_while_saving_are_explained(tmp_path):
    import errno
    import shutil

    from helpers.io import check_writable, disk_full_explained
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(TunebookError, match="output_dir: .* needs about .* GB, and its disk has .* GB free"):
        check_writable(tmp_path / "run", "output_dir", needed_bytes=free * 2)
    for fault in (RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                               "file data/0: unexpected pos 4096 vs 2048"), OSError(errno.ENOSPC, "No space left")):
        with pytest.raises(TunebookError, match="is full .* while saving a checkpoint"):
            with disk_full_explained(tmp_path, "saving a checkpoint"):
                raise fault
    with pytest.raises(RuntimeError, match="something else"):   # other errors keep their traceback
        with disk_full_explained(tmp_path, "saving a checkpoint"):
            raise RuntimeError("something else")


# ---- the engine's own logs ----

def test_torn_log_lines_are_dropped_with_a_note_and_closed_before_the_next_append(tmp_path):
    from helpers.io import append_jsonl, read_jsonl
    from helpers.train.callbacks import trim_log
    log = tmp_path / "loss.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo', encoding="utf-8")
    notes = []
    assert read_jsonl(log, note=notes.append) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert notes == [f"note: {log}:3: dropped a torn log line (a killed run was writing it)"]
    append_jsonl(log, {"step": 3, "loss": 1.0})   # a resumed run goes on writing
    assert [e["step"] for e in read_jsonl(log, note=notes.append)] == [1, 2, 3]
    trim_log(log, 2)   # resume from checkpoint-2: the rewritten log holds only whole lines up to it
    assert log.read_text(encoding="utf-8") == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


# ---- code shipped with a model is never run unless asked ----

@pytest.fixture(scope="module")
def model_with_code(tiny_model_dir, tmp_path_factory):
    import shutil
    folder = tmp_path_factory.mktemp("coded") / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "modeling_evil.py").write_text("raise SystemExit('shipped code ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.slow
def test_shipped_code_is_noted_once_and_merge_drops_it(model_with_code, tmp_path, capsys):
    from _persona_adapter import train_persona_adapter

    from helpers.merge.merging import merge
    (tmp_path / "persona").mkdir()
    adapter = train_persona_adapter(model_with_code, tmp_path / "persona")
    out = capsys.readouterr().out
    assert out.count("ships Python code (modeling_evil.py); it is not run (trust_remote_code is off)") == 1
    merged = merge(model_with_code, adapter, tmp_path / "merged", progress=None).out_dir
    assert not list(merged.glob("*.py"))
    assert "auto_map" not in json.loads((merged / "config.json").read_text())


def test_an_unknown_model_type_is_refused_by_name(model_with_code, tmp_path):
    import shutil

    from helpers.models.loading import prepare_checkpoint
    folder = tmp_path / "m"
    shutil.copytree(model_with_code, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evilnet"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(TunebookError, match="model_type 'evilnet' is not an architecture transformers knows .*"
                                            "modeling_evil.py.*trust_remote_code: true only if you trust"):
        prepare_checkpoint(folder)


# ---- a kill between the last checkpoint and the publish ----

@pytest.mark.slow
def test_kill_after_the_last_checkpoint_publishes_it_without_an_extra_step(tiny_model_dir, tmp_path):
    """Resuming from the checkpoint at max_steps used to train step 9 of 8; now that checkpoint is the result,
    bit-identical to an uninterrupted run's adapter."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from helpers.io import read_jsonl
    from helpers.train.engine import train
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"conversation": [{"input": "q", "output": "an answer"}]}) + "\n"
                            for _ in range(40)), encoding="utf-8")

    def config(out):
        return from_dict(dict(model=str(tiny_model_dir), data_path=str(data), output_dir=str(out), max_length=64,
                              accumulative_counts=1, max_steps=8, save_steps=4, evaluation_inputs=[], logging_steps=1,
                              mode="lora", lora_r=8, lora_alpha=8, warmup_ratio=0.0, seed=3))

    class KilledBeforePublish(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            raise KeyboardInterrupt

    whole = train(config(tmp_path / "whole"), notebook=False)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "killed"), notebook=False, callbacks=[KilledBeforePublish()])
    assert not (tmp_path / "killed" / "adapter").exists()
    resumed = train(config(tmp_path / "killed"), notebook=False)
    assert resumed.steps == whole.steps == 8
    assert max(e["step"] for e in read_jsonl(tmp_path / "killed" / "loss.jsonl")) == 8
    first, second = (load_file(str(r.adapter_dir / "adapter_model.safetensors")) for r in (whole, resumed))
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)


# ---- no warning a learner cannot act on ----

def test_no_deepspeed_accelerator_warning_on_a_machine_without_a_gpu(tmp_path):
    import pathlib
    if any(pathlib.Path(n).exists() for n in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")):
        pytest.skip("this machine has a GPU device: DeepSpeed finds it and says nothing")
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    done = subprocess.run([sys.executable, "-m", "helpers", "make-tiny-model", str(tmp_path / "tiny")], env=env,
                          capture_output=True, text=True, cwd=pathlib.Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "real_accelerator" not in done.stderr + done.stdout and "WARNING" not in done.stderr


@pytest.mark.slow
def test_a_short_run_logs_the_first_step_after_warm_up_and_the_last(tiny_model_dir, tmp_path):
    from helpers.io import read_jsonl
    from helpers.train.engine import train
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"conversation": [{"input": "q", "output": "an answer"}]}) + "\n"
                            for _ in range(20)), encoding="utf-8")
    config = from_dict(dict(model=str(tiny_model_dir), data_path=str(data), output_dir=str(tmp_path / "run"),
                            max_length=64, accumulative_counts=1, max_steps=5, warmup_ratio=0.2, logging_steps=10,
                            save_steps=100, evaluation_inputs=[], mode="lora", lora_r=8, lora_alpha=8))
    train(config, notebook=False)
    logged = read_jsonl(tmp_path / "run" / "loss.jsonl")
    assert [e["step"] for e in logged] == [1, 2, 5]   # first (lr 0 in warm-up), first after warm-up, last
    assert logged[1]["learning_rate"] > 0
