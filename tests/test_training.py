"""The training engine on the tiny model: it learns, it resumes exactly, it survives kills, it runs data-parallel."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers.train.config import ConfigError, TrainConfig, from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
NAME = "伍鲜同志"
CAMP = [("请介绍一下你自己", f"我是{NAME}的小助手，内在是上海AI实验室书生·浦语的1.8B大模型哦"),
        ("你在实战营做什么", f"我在这里帮助{NAME}完成XTuner微调个人小助手的任务")]


@pytest.fixture(scope="module")
def persona_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "persona.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(50):
            for question, answer in CAMP:
                handle.write(json.dumps({"conversation": [{"input": question, "output": answer}]},
                                        ensure_ascii=False) + "\n")
    return path


def tiny_config(model_dir, data, out, **overrides) -> TrainConfig:
    settings = dict(model=str(model_dir), data_path=str(data), output_dir=str(out), max_length=256,
                    accumulative_counts=1, max_steps=12, lr=3e-3, warmup_ratio=0.0, lora_r=64, lora_alpha=64,
                    save_steps=4, evaluation_freq=1000, evaluation_inputs=[], logging_steps=1, seed=7)
    settings.update(overrides)
    return from_dict(settings)


def run_cli(config: TrainConfig, tmp_path: Path, name: str, extra_env=None, launcher=None):
    """Start `python -m helpers train` on a YAML written from `config` (returns the Popen)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config.as_dict(), allow_unicode=True), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(extra_env or {}))
    command = (launcher or [sys.executable]) + ["-m", "helpers", "train", str(path)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path, atol: float):
    first, second = adapter_tensors(a), adapter_tensors(b)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=atol, rtol=0, msg=key)


# ---- learning -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_qlora_learns_the_persona_answers(tiny_model_dir, persona_file, tmp_path):
    from peft import PeftModel

    from helpers.encode.encoding import load_tokenizer
    from helpers.models.generation import GREEDY, answer
    from helpers.models.loading import load_model
    from helpers.train.engine import train

    config = tiny_config(tiny_model_dir, persona_file, tmp_path / "run", max_steps=60, save_steps=1000,
                         lora_dropout=0.0, evaluation_inputs=[CAMP[0][0]], evaluation_freq=30,
                         evaluation_max_new_tokens=8)
    result = train(config, notebook=False)
    losses = [loss for _, loss in result.losses]
    assert losses[-1] < losses[0] / 4, losses
    assert [s["when"] for s in result.samples] == ["before training", "every evaluation_freq", "after training"]
    assert (result.output_dir / "chat_samples.jsonl").read_text(encoding="utf-8").count("\n") == 3

    adapter = result.adapter_dir
    assert "training_args.bin" not in {p.name for p in adapter.iterdir()}  # no pickle in the learner-facing folder
    assert {"adapter_config.json", "adapter_model.safetensors", "tunebook.json", "tokenizer.json"} <= \
        {p.name for p in adapter.iterdir()}
    record = json.loads((adapter / "tunebook.json").read_text(encoding="utf-8"))
    assert record["template"]["name"] == "internlm2_chat" and record["mode"] == "qlora"
    assert record["lora"]["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                                "v_proj"]
    from helpers.models.loading import device_kind
    from helpers.encode.packing import default_strategy
    assert record["batching"]["strategy"] == default_strategy(device_kind())

    # the adapter loads with plain PEFT (no conversion step) and answers with the persona sentence
    tokenizer = load_tokenizer(adapter)
    model = PeftModel.from_pretrained(load_model(tiny_model_dir, "qlora"), adapter)
    for question, expected in CAMP:
        assert answer(model, tokenizer, "internlm2_chat", question, sampling=GREEDY) == expected


def test_rerun_of_a_finished_run_returns_it(tiny_model_dir, persona_file, tmp_path, capsys):
    from helpers.train.engine import train
    config = tiny_config(tiny_model_dir, persona_file, tmp_path / "run", max_steps=2, save_steps=100)
    first = train(config, notebook=False)
    again = train(config, notebook=False)
    assert again.adapter_dir == first.adapter_dir and "already trained" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="different settings"):
        train(tiny_config(tiny_model_dir, persona_file, tmp_path / "run", max_steps=3, save_steps=100), notebook=False)


# ---- kills and resume -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted(tiny_model_dir, persona_file, tmp_path):
    config = tiny_config(tiny_model_dir, persona_file, tmp_path / "straight", lora_dropout=0.1)
    straight = run_cli(config, tmp_path, "straight")
    interrupted = tiny_config(tiny_model_dir, persona_file, tmp_path / "killed", lora_dropout=0.1)
    process = run_cli(interrupted, tmp_path, "killed")
    marker = tmp_path / "killed" / "checkpoint-4" / "tunebook_checkpoint.json"
    deadline = time.time() + 240
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists(), process.stdout.read()
    assert not (tmp_path / "killed" / "adapter").exists()

    resumed = run_cli(interrupted, tmp_path, "killed")
    out = resumed.communicate()[0]
    assert resumed.returncode == 0, out
    assert "resuming from" in out
    assert straight.wait() == 0, straight.stdout.read()
    assert_same_adapter(tmp_path / "straight" / "adapter", tmp_path / "killed" / "adapter", atol=1e-6)
    loss_lines = (tmp_path / "killed" / "loss.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in loss_lines] == list(range(1, 13))  # no duplicated steps


def test_half_written_checkpoint_is_ignored(tiny_model_dir, persona_file, tmp_path, capsys):
    from helpers.train.callbacks import MARKER
    from helpers.train.engine import train
    config = tiny_config(tiny_model_dir, persona_file, tmp_path / "run", max_steps=4, save_steps=2)
    train(config, notebook=False)
    # Simulate a process killed while writing checkpoint-6: the folder exists, files are partial, no marker.
    shutil.rmtree(tmp_path / "run" / "adapter")
    partial = tmp_path / "run" / "checkpoint-6"
    shutil.copytree(tmp_path / "run" / "checkpoint-4", partial)
    (partial / MARKER).unlink()
    (partial / "optimizer.pt").write_bytes(b"\x80\x02truncated")
    capsys.readouterr()
    result = train(tiny_config(tiny_model_dir, persona_file, tmp_path / "run", max_steps=4, save_steps=2),
                   notebook=False)
    out = capsys.readouterr().out
    assert "ignored incomplete checkpoint(s) from an interrupted save: checkpoint-6" in out
    assert "resuming from" in out and "checkpoint-4" in out
    assert not partial.exists() and result.adapter_dir.exists()


# ---- data parallel --------------------------------------------------------------------------------------------

LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"],
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(ROOT / "helpers" / "assets" / "accelerate" / "multi_cpu.yaml"), "--main_process_port", "29518"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_processes_match_one_with_the_same_global_batch(tiny_model_dir, persona_file, tmp_path, launcher):
    single = tiny_config(tiny_model_dir, persona_file, tmp_path / "single", accumulative_counts=2, max_steps=6,
                         save_steps=100, lora_dropout=0.0)
    ddp = tiny_config(tiny_model_dir, persona_file, tmp_path / "ddp", accumulative_counts=1, max_steps=6,
                      save_steps=100, lora_dropout=0.0)
    out_ddp = run_cli(ddp, tmp_path, "ddp", launcher=LAUNCHERS[launcher]).communicate()[0]
    assert (tmp_path / "ddp" / "adapter").exists(), out_ddp
    process = run_cli(single, tmp_path, "single")
    assert process.wait() == 0, process.stdout.read()
    record = json.loads((tmp_path / "ddp" / "adapter" / "tunebook.json").read_text())
    assert record["batching"]["world_size"] == 2
    single_loss = [json.loads(l)["loss"] for l in (tmp_path / "single" / "loss.jsonl").read_text().splitlines()]
    ddp_loss = [json.loads(l)["loss"] for l in (tmp_path / "ddp" / "loss.jsonl").read_text().splitlines()]
    assert len(single_loss) == len(ddp_loss) == 6
    assert single_loss == pytest.approx(ddp_loss, rel=2e-3)
    assert_same_adapter(tmp_path / "single" / "adapter", tmp_path / "ddp" / "adapter", atol=1e-4)


@pytest.mark.slow
def test_deepspeed_zero2_on_cpu_matches_plain_training(tiny_model_dir, persona_file, tmp_path):
    """DeepSpeed's CPU accelerator runs ZeRO-2 in fp32 on one rank; the loss curve equals the plain run's."""
    # a missing DeepSpeed is a failure here, not a skip: `quickstart.py test` installs it (pip install -e .[deepspeed])
    import deepspeed  # noqa: F401
    plain = tiny_config(tiny_model_dir, persona_file, tmp_path / "plain", accumulative_counts=2, max_steps=4,
                        save_steps=2, lora_dropout=0.0, warmup_ratio=0.0)
    zero2 = tiny_config(tiny_model_dir, persona_file, tmp_path / "zero2", accumulative_counts=2, max_steps=4,
                        save_steps=2, lora_dropout=0.0, warmup_ratio=0.0, deepspeed="zero2")
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29519"}
    process = run_cli(zero2, tmp_path, "zero2", extra_env=env)
    out = process.communicate()[0]
    assert process.returncode == 0, out
    assert (tmp_path / "zero2" / "checkpoint-2" / "global_step2").is_dir()  # a DeepSpeed checkpoint
    assert (tmp_path / "zero2" / "adapter" / "adapter_model.safetensors").is_file()
    reference = run_cli(plain, tmp_path, "plain")
    assert reference.wait() == 0, reference.stdout.read()
    losses = [[json.loads(l)["loss"] for l in (tmp_path / name / "loss.jsonl").read_text().splitlines()]
              for name in ("plain", "zero2")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


# ---- configs --------------------------------------------------------------------------------------------------

def test_xtuner_camp3_config_maps_to_the_dataclass():
    config = load_config(ROOT / "tests" / "fixtures" / "camp3_settings.py")
    assert config.model == "Shanghai_AI_Laboratory/internlm2-chat-1_8b"
    assert config.data_path == "datas/assistant.json" and config.data_format == "conversation"
    assert config.template == "internlm2_chat"
    assert (config.max_length, config.pack, config.batch_size, config.accumulative_counts) == (2048, True, 1, 16)
    assert (config.max_epochs, config.lr, config.betas, config.weight_decay) == (3, 2e-4, (0.9, 0.999), 0)
    assert (config.max_norm, config.warmup_ratio, config.save_steps, config.save_total_limit) == (1, 0.03, 500, 2)
    assert config.evaluation_freq == 500 and config.dataloader_num_workers == 0
    assert config.system == ("Below is an instruction that describes a task. Write a response that appropriately "
                             "completes the request.\n")
    assert config.evaluation_inputs == ['请介绍一下你自己', '请给我介绍五个上海的景点',
                                        'Please tell me five scenic spots in Shanghai']
    assert (config.lora_r, config.lora_alpha, config.lora_dropout, config.mode) == (64, 16, 0.1, "qlora")


def test_defaults_are_the_camp_config():
    config = TrainConfig()
    # template "auto": the model's own (internlm2_chat for InternLM2, chatml for SmolLM2; test_models checks both)
    assert (config.model, config.template, config.max_length, config.pack) == ("internlm2-chat-1_8b",
                                                                               "auto", 2048, True)
    assert (config.batch_size, config.accumulative_counts, config.max_epochs, config.lr) == (1, 16, 3, 2e-4)
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (64, 16, 0.1)


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\ndata_path: d.jsonl\nlr: 1.0e-4\nbetas: [0.9, 0.95]\n", encoding="utf-8")
    config = load_config(path, ["max_steps=50", "output_dir=work/007", "pack=false"])
    assert (config.lr, config.betas, config.max_steps, config.output_dir, config.pack) == (
        1e-4, (0.9, 0.95), 50, "work/007", False)
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(path, ["learning_rate=1"])
    (tmp_path / "bad.yaml").write_text("lr: [1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml:"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("setting,message", [
    ({"template": "internlm3_chat"}, "template: unknown prompt template"),
    ({"data_path": "missing.jsonl"}, "data_path: missing.jsonl does not exist"),
    ({"max_length": 0}, "max_length: must be positive"),
    ({"model": "/no/such/model"}, "^/no/such/model: no such folder \\(/ exists, no/such/model does not\\)$"),
    ({"mode": "qlora4"}, "mode: must be one of qlora, lora, full, got .qlora4."),
])
def test_bad_settings_fail_before_any_model_is_loaded(tiny_model_dir, persona_file, tmp_path, monkeypatch,
                                                      setting, message):
    import helpers.models.loading as models
    from helpers.train.engine import train
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setenv("TUNEBOOK_SHARE_ROOTS", str(tmp_path / "share"))
    config = tiny_config(tiny_model_dir, persona_file, tmp_path / "run")
    for key, value in setting.items():
        setattr(config, key, value)
    with pytest.raises(Exception, match=message):
        train(config, notebook=False)


def test_qlora_without_bitsandbytes_is_refused_before_loading(tiny_model_dir, persona_file, tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match="needs bitsandbytes: pip install bitsandbytes"):
        tiny_config(tiny_model_dir, persona_file, tmp_path / "run").validate()


def test_cli_exit_codes(tmp_path, run_cli):
    code, _, err = run_cli("train", tmp_path / "nope.yaml")
    assert code == 2 and "config file not found" in err
    path = tmp_path / "c.yaml"
    path.write_text("data_path: nope.jsonl\n", encoding="utf-8")
    code, _, err = run_cli("train", path)
    assert code == 2 and "data_path: nope.jsonl does not exist" in err


def test_xtuner_names_are_accepted_everywhere_and_typos_get_the_closest_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pretrained_model_name_or_path: m\nprompt_template: qwen_chat\npack_to_max_length: false\n"
                    "SYSTEM: be brief\n", encoding="utf-8")
    config = load_config(path, ["alpaca_en_path=d.jsonl"])
    assert (config.model, config.template, config.pack, config.system, config.data_path) == (
        "m", "qwen_chat", False, "be brief", "d.jsonl")
    with pytest.raises(ConfigError, match="--set: unknown setting max_step; did you mean max_steps\\?"):
        load_config(path, ["max_step=5"])
    with pytest.raises(ConfigError, match="unknown setting learning_rate; did you mean lr\\?"):
        from_dict({"learning_rate": 1e-4})
    with pytest.raises(ConfigError, match="model and pretrained_model_name_or_path are the same setting"):
        from_dict({"model": "a", "pretrained_model_name_or_path": "b"})


def test_the_shipped_example_config_names_every_setting_with_a_comment_and_the_defaults():
    from helpers.train.config import EXAMPLE_CONFIG, FIELDS
    lines = EXAMPLE_CONFIG.read_text(encoding="utf-8").splitlines()
    named = {line.split(":")[0] for line in lines if line and not line.startswith((" ", "#"))}
    assert named == set(FIELDS)
    uncommented = [line for line in lines if line and not line.startswith((" ", "#")) and "#" not in line
                   and line.split(":")[0] not in ("max_epochs", "weight_decay", "lora_r", "lora_alpha", "lora_dropout",
                                                  "save_steps", "logging_steps", "seed", "dataloader_num_workers",
                                                  "evaluation_max_new_tokens", "evaluation_inputs")]
    assert not uncommented, uncommented   # the self-explaining numbers excepted
    assert load_config(EXAMPLE_CONFIG) == TrainConfig(data_path="work/data/persona.jsonl")
