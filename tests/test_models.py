"""Model resolution and loading: share layouts, clear failures, InternLM2 through the converter, remote-code warning."""
import json
import sys
from pathlib import Path

import pytest

from helpers.models.loading import compute_dtype, warn_remote_code
from helpers.models.find import ModelNotFound, resolve_model

ROOT = Path(__file__).resolve().parents[1]


def test_resolution_order_local_then_share(tmp_path, monkeypatch, tiny_model_dir):
    assert resolve_model(tiny_model_dir) == tiny_model_dir
    share = tmp_path / "share" / "Shanghai_AI_Laboratory"
    (share / "internlm2-chat-1_8b").mkdir(parents=True)
    (share / "internlm2-chat-1_8b" / "config.json").write_text("{}")
    monkeypatch.setenv("TUNEBOOK_SHARE_ROOTS", str(share))
    # a learner's name, the hub id and the ModelScope id all find the InternStudio copy
    for name in ("internlm2-chat-1_8b", "internlm/internlm2-chat-1_8b", "Shanghai_AI_Laboratory/internlm2-chat-1_8b"):
        assert resolve_model(name) == share / "internlm2-chat-1_8b"


def test_the_camps_visual_encoder_is_found_in_the_internstudio_share(tmp_path, monkeypatch):
    # the camp's lesson: VISUAL_ENCODER=/root/share/new_models/openai/clip-vit-large-patch14-336
    from helpers.models.find import KNOWN_MODELS, SHARE_ROOTS
    assert "/root/share/new_models/openai" in SHARE_ROOTS
    assert KNOWN_MODELS["clip-vit-large-patch14-336"][0] == "openai/clip-vit-large-patch14-336"
    share = tmp_path / "openai" / "clip-vit-large-patch14-336"
    share.mkdir(parents=True)
    (share / "config.json").write_text("{}")
    monkeypatch.setenv("TUNEBOOK_SHARE_ROOTS", str(tmp_path / "openai"))
    assert resolve_model("openai/clip-vit-large-patch14-336") == share


def test_not_found_lists_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBOOK_SHARE_ROOTS", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as info:
        resolve_model("internlm2-chat-7b")
    message = str(info.value)
    assert "local path internlm2-chat-7b: does not exist" in message
    assert f"InternStudio share {tmp_path / 'nowhere' / 'internlm2-chat-7b'}: not there" in message
    assert "Hugging Face hub internlm/internlm2-chat-7b:" in message
    assert "ModelScope Shanghai_AI_Laboratory/internlm2-chat-7b:" in message
    assert "HF_ENDPOINT" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        resolve_model(tmp_path / "empty")


def test_compute_dtype_auto_follows_the_device():
    import torch
    if not torch.cuda.is_available():
        expected = torch.float32
    else:
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert compute_dtype("auto") == expected
    assert compute_dtype("bf16") == torch.bfloat16
    with pytest.raises(Exception, match="unknown dtype"):
        compute_dtype("fp8")


def test_remote_code_warning_names_the_files(tmp_path, capsys):
    (tmp_path / "modeling_internlm2.py").write_text("")
    (tmp_path / "tokenization_internlm2.py").write_text("")
    warn_remote_code(tmp_path)
    out = capsys.readouterr().out
    assert "trust_remote_code=True runs Python code" in out
    assert "modeling_internlm2.py, tokenization_internlm2.py" in out


def test_input_gradients_stay_exact_after_an_eval_forward(tiny_model_dir):
    """bitsandbytes repacks NF4 weights for CPU inference on the first eval forward; afterwards training forwards
    must still give exact input gradients (helpers.models.loading.keep_4bit_trainable)."""
    import bitsandbytes as bnb
    import torch

    from helpers.models.loading import load_model
    model = load_model(tiny_model_dir, "qlora")
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        model(torch.tensor([[1, 5, 7, 9]], device=device))
    model.train()
    layer = model.model.layers[0].mlp.down_proj
    assert isinstance(layer, bnb.nn.Linear4bit)
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    x = torch.randn(2, 3, layer.in_features, device=device, requires_grad=True)
    layer(x.to(layer.compute_dtype or x.dtype)).float().pow(2).sum().backward()
    expected = x.detach().clone().requires_grad_(True)
    (expected @ weight.t()).pow(2).sum().backward()
    tolerance = 1e-4 if layer.compute_dtype in (None, torch.float32) else 5e-2  # bf16 compute on GPU
    torch.testing.assert_close(x.grad, expected.grad, atol=tolerance, rtol=tolerance)


@pytest.mark.slow
def test_qlora_trains_an_internlm2_checkpoint_without_remote_code(tmp_path):
    """The loader converts an InternLM2-layout folder to Llama once, then QLoRA runs end to end on CPU."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _internlm2_fakes import train_sp_model, write_internlm2_checkpoint

    from helpers.train.config import from_dict
    from helpers.train.engine import train

    (tmp_path / "sp").mkdir()
    sp = train_sp_model(tmp_path / "sp" / "tokenizer.model", add_dummy_prefix=True)
    source = tmp_path / "internlm2-chat-tiny"
    write_internlm2_checkpoint(source, sp, intermediate_size=256)
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"conversation": [{"input": "请介绍一下你自己", "output": "我是小助手"}]},
                                         ensure_ascii=False) for _ in range(8)) + "\n", encoding="utf-8")
    config = from_dict(dict(model=str(source), data_path=str(data), output_dir=str(tmp_path / "run"), max_length=128,
                            accumulative_counts=1, max_steps=3, save_steps=100, evaluation_inputs=["请介绍一下你自己"],
                            evaluation_max_new_tokens=4, logging_steps=1))
    result = train(config, notebook=False)
    record = result.record
    assert record["base_model"]["path"] == str(source)
    assert record["base_model"]["loaded_path"] != str(source)
    assert json.loads((Path(record["base_model"]["loaded_path"]) / "config.json").read_text())["model_type"] == "llama"
    assert record["lora"]["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                                "v_proj"]
    assert len(result.losses) == 3 and len(result.samples) == 2


def test_lora_on_the_top_layers_only(tiny_model_dir):
    from helpers.errors import TunebookError
    from helpers.models.loading import LoraSettings, apply_lora, load_model
    model = load_model(tiny_model_dir, "lora", "fp32")
    layers = model.config.num_hidden_layers
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0, top_layers=1))
    with_lora = {name.split(".layers.")[1].split(".")[0] for name, _ in peft_model.named_parameters()
                 if "lora_A" in name}
    assert with_lora == {str(layers - 1)}
    linear = {n.split(".")[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert "lm_head" not in linear and {"q_proj", "down_proj"} <= linear
    with pytest.raises(TunebookError, match=f"lora_top_layers: {layers + 1} is more than the model's {layers}"):
        apply_lora(load_model(tiny_model_dir, "lora", "fp32"), LoraSettings(top_layers=layers + 1))


def test_auto_template_is_the_models_own(tiny_model_dir, tmp_path):
    import json
    import shutil

    from helpers.models.find import model_template, resolve_template
    from helpers.models.pypi import MARKER
    assert model_template(tiny_model_dir) == "internlm2_chat"
    assert resolve_template("auto", tiny_model_dir).name == "internlm2_chat"
    assert resolve_template(None, tiny_model_dir).name == "internlm2_chat"
    assert resolve_template("qwen_chat", tiny_model_dir).prompt.stop_words == ("<|im_end|>", "<|endoftext|>")
    smol = tmp_path / "smol"
    shutil.copytree(tiny_model_dir, smol)
    (smol / MARKER).write_text(json.dumps({"template": "chatml"}))
    assert resolve_template("auto", smol).name == "chatml"


def test_a_mistyped_local_path_is_one_line_with_the_closest_sibling(tiny_model_dir, tmp_path, run_cli):
    typo = tiny_model_dir.parent / (tiny_model_dir.name[:-1])   # "mode" for "model"
    with pytest.raises(ModelNotFound) as info:
        resolve_model(typo)
    assert str(info.value) == f"{typo}: no such folder; did you mean {tiny_model_dir}?"
    for command in (["chat", typo], ["merge", typo, tmp_path / "adapter", tmp_path / "out"]):
        code, _, err = run_cli(*command)
        assert code == 2 and err.strip().splitlines() == [f"error: {typo}: no such folder; did you mean "
                                                          f"{tiny_model_dir}?"], err


def test_only_the_is_gradient_checkpointing_deprecation_is_silenced_where_models_are_built():
    """Training, chat, the demo and evaluate all import helpers.models.loading; transformers' deprecation of
    is_gradient_checkpointing (asked by its Trainer and by PEFT) is hidden there, any other FutureWarning is not."""
    import subprocess
    import sys
    code = ("import warnings, helpers.models.loading\n"
            "warnings.warn('`is_gradient_checkpointing` is deprecated and will be removed in v6.', FutureWarning)\n"
            "warnings.warn('something else is deprecated', FutureWarning)\n")
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and "FutureWarning: something else is deprecated" in done.stderr
    assert "is_gradient_checkpointing" not in done.stderr
