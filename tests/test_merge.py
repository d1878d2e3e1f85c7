"""Merge: exact arithmetic vs PEFT, dtype kept, shard streaming, refusals before work, atomic output, format travels."""
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
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from _persona_adapter import CAMP, train_persona_adapter  # noqa: E402

from helpers.merge.lora import AdapterMismatch, UnsupportedAdapter  # noqa: E402
from helpers.merge.merging import merge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IM_END = 5  # <|im_end|> in the tiny tokenizer


def quiet(_message):
    pass


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return train_persona_adapter(tiny_model_dir, tmp_path_factory.mktemp("persona"))


@pytest.fixture(scope="module")
def merged(tiny_model_dir, adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "out"
    return merge(tiny_model_dir, adapter, out, progress=quiet)


def all_tensors(folder: Path) -> dict:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def peft_model(base_dir, adapter_dir, dtype=torch.float32):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype), adapter_dir).eval()


def copy_base(src: Path, dst: Path, dtype=None, max_shard_size=None, eos=(2,)) -> Path:
    """The tiny base re-saved (another dtype / several shards) with a generation_config that stops at EOS only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype or torch.float32)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(dst, **kwargs)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    (dst / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": list(eos),
                                                            "pad_token_id": 3}))
    return dst


# ---- what a merge produces ------------------------------------------------------------------------------------

def test_qlora_adapter_merged_into_full_precision_base_matches_peft(tiny_model_dir, adapter, merged):
    """The QLoRA adapter merged into the fp32 base: logits equal fp32 base + adapter (PEFT) within 1e-4, greedy
    answers are the persona answers, exactly as the unmerged adapter gives them."""
    from transformers import AutoModelForCausalLM

    from helpers.encode.encoding import load_tokenizer
    from helpers.models.generation import GREEDY, answer, prompt_ids
    assert merged.dtype == "float32" and merged.lora_modules == 14 and merged.tensors == 21
    assert merged.weight_check["lora_merged"] == 14 and merged.weight_check["max_abs_diff"] == 0.0
    assert merged.logits_check["max_abs_diff"] < 1e-4
    tokenizer = load_tokenizer(merged.out_dir)
    reference = peft_model(tiny_model_dir, adapter)
    model = AutoModelForCausalLM.from_pretrained(merged.out_dir).eval()
    ids = torch.tensor([prompt_ids(tokenizer, "internlm2_chat", [], CAMP[1][0]) + list(range(10, 40))])
    with torch.no_grad():
        difference = (model(ids).logits - reference(ids).logits).abs().max().item()
    assert difference < 1e-4
    for question, expected in CAMP:
        assert answer(model, tokenizer, "internlm2_chat", question, sampling=GREEDY) == expected
        assert answer(reference, tokenizer, "internlm2_chat", question, sampling=GREEDY) == expected


def test_merged_folder_records_where_it_came_from(tiny_model_dir, adapter, merged):
    from helpers.models.loading import config_hash
    from helpers.encode.templates import to_jinja
    record = json.loads((merged.out_dir / "tunebook.json").read_text(encoding="utf-8"))
    source = record["merged_from"]
    assert source["base"]["path"] == str(tiny_model_dir) and source["base"]["config_hash"] == config_hash(tiny_model_dir)
    assert source["adapter"]["path"] == str(adapter.resolve()) and source["adapter"]["r"] == 64
    assert source["adapter"]["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                                   "v_proj"]
    assert source["template"]["name"] == "internlm2_chat" and source["system"] == "" and source["dtype"] == "float32"
    assert source["logits_check"]["probe"] == "请介绍一下你自己" and source["weight_check"]["tensors"] == 21
    assert record["mode"] == "qlora" and record["template"]["name"] == "internlm2_chat"  # the training record kept
    tokenizer_config = json.loads((merged.out_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    template = tokenizer_config.get("chat_template") or (merged.out_dir / "chat_template.jinja").read_text("utf-8")
    assert template == to_jinja("internlm2_chat")
    assert json.loads((merged.out_dir / "config.json").read_text())["dtype"] == "float32"


def test_bf16_base_stays_bf16_and_generation_config_stops_at_im_end(tiny_model_dir, adapter, tmp_path):
    base = copy_base(tiny_model_dir, tmp_path / "bf16", dtype=torch.bfloat16)
    assert json.loads((base / "config.json").read_text())["dtype"] == "bfloat16"
    result = merge(base, adapter, tmp_path / "out", device="cpu", progress=quiet)
    assert result.dtype == "bfloat16"
    assert json.loads((result.out_dir / "config.json").read_text())["dtype"] == "bfloat16"
    tensors, base_tensors = all_tensors(result.out_dir), all_tensors(base)
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    # the arithmetic, recomputed here: (W + alpha/r * B @ A) in fp32, rounded once to bf16
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    key = "model.layers.1.self_attn.v_proj"
    expected = (base_tensors[f"{key}.weight"].float() + (64 / 64) * (
        lora[f"base_model.model.{key}.lora_B.weight"] @ lora[f"base_model.model.{key}.lora_A.weight"])).bfloat16()
    assert torch.equal(tensors[f"{key}.weight"], expected)
    assert torch.equal(tensors["model.norm.weight"], base_tensors["model.norm.weight"])
    assert json.loads((result.out_dir / "generation_config.json").read_text())["eos_token_id"] == [2, IM_END]
    check = result.logits_check
    assert 0 < check["max_abs_diff"] <= check["tolerance"] == pytest.approx(0.1 * check["logit_scale"])


def test_multi_shard_streaming_equals_peft_merge_and_unload(tiny_model_dir, adapter, tmp_path):
    """A base in several shards (safetensors, and pickled .bin read with weights_only) merged into several output
    shards gives bit-identical weights to peft's in-memory merge_and_unload."""
    base = copy_base(tiny_model_dir, tmp_path / "sharded", max_shard_size="200KB")
    assert len(list(base.glob("*.safetensors"))) > 3
    result = merge(base, adapter, tmp_path / "out", max_shard_size="300KB", progress=quiet)
    files = sorted(p.name for p in result.out_dir.glob("*.safetensors"))
    assert result.shards == len(files) > 3 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((result.out_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert all(p.stat().st_size <= 300_000 + 4096 for p in result.out_dir.glob("*.safetensors"))
    expected = peft_model(tiny_model_dir, adapter).merge_and_unload().state_dict()
    got = all_tensors(result.out_dir)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    pickled = tmp_path / "pickled"  # the same base as .bin shards
    pickled.mkdir()
    weight_map = {}
    for number, file in enumerate(sorted(base.glob("*.safetensors")), start=1):
        name = f"pytorch_model-{number:05d}.bin"
        part = load_file(str(file))
        torch.save(part, pickled / name)
        weight_map.update(dict.fromkeys(part, name))
    (pickled / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for extra in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(base / extra, pickled / extra)
    from_bin = merge(pickled, adapter, tmp_path / "out_bin", progress=quiet)
    for name, tensor in all_tensors(from_bin.out_dir).items():
        assert torch.equal(tensor, expected[name]), name


def test_plain_transformers_reproduces_the_chat_session(merged):
    """Only AutoTokenizer.apply_chat_template + AutoModelForCausalLM.generate on the merged folder: same prompt ids,
    same greedy answer as tunebook's chat, and generation ends on <|im_end|> from generation_config.json."""
    from helpers.chat.export_check import check_export, plain_transformers_answer
    report = check_export(merged.out_dir, CAMP[0][0])
    assert report.ok and report.prompt_equal and report.answer_equal and report.stopped_at_stop_token
    assert report.plain_prompt == "<s><|im_start|>user\n请介绍一下你自己<|im_end|>\n<|im_start|>assistant\n"
    assert report.plain_answer == CAMP[0][1] and report.last_token == "<|im_end|>"
    _, new_ids, tokenizer, _ = plain_transformers_answer(merged.out_dir, [{"role": "user", "content": CAMP[1][0]}])
    assert new_ids[-1] == IM_END and IM_END not in new_ids[:-1]
    assert tokenizer.decode(new_ids) == CAMP[1][1] + "<|im_end|>"  # no trailing junk after the stop token


# ---- refusals, before any shard is written --------------------------------------------------------------------

@pytest.fixture()
def no_writes(monkeypatch):
    import helpers.models.checkpoint_shards as shards
    monkeypatch.setattr(shards, "write_safetensors", lambda *a, **k: pytest.fail("a shard was written"))


def edited_adapter(adapter: Path, dst: Path, config=None, rename=None, record=True) -> Path:
    shutil.copytree(adapter, dst)
    if config:
        data = json.loads((dst / "adapter_config.json").read_text())
        data.update(config)
        (dst / "adapter_config.json").write_text(json.dumps(data))
    if rename:
        tensors = load_file(str(dst / "adapter_model.safetensors"))
        save_file({rename(k): v for k, v in tensors.items()}, str(dst / "adapter_model.safetensors"))
    if not record:
        (dst / "tunebook.json").unlink()
    return dst


def test_refuses_a_base_with_another_config_hash(adapter, tmp_path, no_writes):
    from helpers.models.tiny import TinyConfig, make_tiny_model
    other = make_tiny_model(tmp_path / "wider", TinyConfig(hidden_size=192, intermediate_size=512))
    with pytest.raises(AdapterMismatch, match=r"was trained on .* \(config hash [0-9a-f]{16}\); .* has another "
                                              r"architecture .*Pass the base model it was trained on"):
        merge(other, adapter, tmp_path / "out", progress=quiet)
    # without the training record, the shapes give it away
    plain = edited_adapter(adapter, tmp_path / "plain", record=False)
    with pytest.raises(AdapterMismatch, match=r"model.layers.0.mlp.down_proj.weight is \[192, 512\] in the base, but "
                                              r"lora_B x lora_A of model.layers.0.mlp.down_proj is \[128, 384\]"):
        merge(other, plain, tmp_path / "out", template="internlm2_chat", progress=quiet)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_refuses_internlm2_module_names_on_a_llama_base(tiny_model_dir, adapter, tmp_path, no_writes):
    """xtuner#518's mirror image: an adapter targeting wqkv/wo/w1-3 on a Llama-layout base."""
    xtuner_style = edited_adapter(
        adapter, tmp_path / "xtuner", record=False, config={"target_modules": ["wqkv", "wo", "w1", "w2", "w3"]},
        rename=lambda k: k.replace("self_attn.q_proj", "attention.wqkv").replace("mlp.gate_proj", "feed_forward.w1"))
    with pytest.raises(AdapterMismatch, match=r"4 of 14 LoRA modules have no weight in the base.*Adapter targets: "
                                              r"w1, wqkv.*InternLM2's own module names.*xtuner#518"):
        merge(tiny_model_dir, xtuner_style, tmp_path / "out", template="internlm2_chat", progress=quiet)


@pytest.mark.parametrize("change,message", [
    ({"use_dora": True}, "DoRA"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save trains full copies"),
    ({"bias": "lora_only"}, "bias='lora_only' trains the base model's biases"),
    ({"r": 32}, "do not have rank r=32"),
])
def test_refuses_adapter_features_a_plain_merge_would_drop(tiny_model_dir, adapter, tmp_path, no_writes, change,
                                                           message):
    edited = edited_adapter(adapter, tmp_path / "edited", config=change)
    with pytest.raises((UnsupportedAdapter, AdapterMismatch), match=message):
        merge(tiny_model_dir, edited, tmp_path / "out", progress=quiet)


def test_adapter_without_record_needs_a_template(tiny_model_dir, adapter, tmp_path, no_writes, run_cli):
    plain = edited_adapter(adapter, tmp_path / "plain", record=False)
    code, _, err = run_cli("merge", tiny_model_dir, plain, tmp_path / "out")
    assert code == 2 and "has no training record (tunebook.json) naming its prompt template; pass --template" in err
    code, _, err = run_cli("merge", tiny_model_dir, tmp_path / "nowhere", tmp_path / "out")
    assert code == 2 and "no adapter_config.json" in err


# ---- interrupted merges leave nothing that looks complete ------------------------------------------------------

def test_failure_while_writing_leaves_no_output(tiny_model_dir, adapter, tmp_path, monkeypatch):
    import helpers.models.checkpoint_shards as shards
    real, calls = shards.write_safetensors, []

    def failing(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(shards, "write_safetensors", failing)
    with pytest.raises(OSError, match="No space left"):
        merge(tiny_model_dir, adapter, tmp_path / "out", max_shard_size="300KB", progress=quiet)
    assert len(calls) == 3 and not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too


def test_killed_merge_leaves_no_output(tiny_model_dir, adapter, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "helpers", "merge", str(tiny_model_dir), str(adapter), str(out),
                                "--max-shard-size", "100KB"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".out.*/model-*.safetensors")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the merge finished before it could be killed: " + process.stdout.read()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    leftovers = list(tmp_path.glob(".out.*.tmp"))
    assert len(leftovers) == 1 and not (leftovers[0] / "tunebook.json").exists()
    messages = []
    merge(tiny_model_dir, adapter, out, max_shard_size="100KB", progress=messages.append)
    assert any(f"note: removed {leftovers[0]}" in m and "left by an interrupted run" in m for m in messages)
    assert (out / "tunebook.json").is_file() and not leftovers[0].exists()
    assert list(tmp_path.glob(".out.*.tmp")) == []


# ---- LoRA variants and layouts --------------------------------------------------------------------------------

def test_rslora_fan_in_fan_out_and_rank_patterns_match_peft(tmp_path):
    """GPT-2's Conv1D stores weights [in, out] (fan_in_fan_out); rsLoRA scales by alpha/sqrt(r); rank_pattern and
    alpha_pattern give modules their own r and alpha. Merged weights equal peft's merge_and_unload bit for bit."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from helpers.merge.lora import merged_weight, read_adapter
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=100, n_positions=32))
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, use_rslora=True,
                        rank_pattern={"c_fc": 4}, alpha_pattern={"c_fc": 32}, init_lora_weights=False)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, config)
    model.save_pretrained(tmp_path / "adapter")
    adapter = read_adapter(tmp_path / "adapter")
    fc = adapter.weights["transformer.h.1.mlp.c_fc.weight"]
    assert fc.A.shape[0] == 4 and fc.scale == 32 / 2 and fc.fan_in_fan_out and fc.weight_shape == (64, 256)
    assert adapter.weights["transformer.h.0.attn.c_attn.weight"].scale == 16 / 8 ** 0.5
    expected = model.merge_and_unload().state_dict()
    for key, lora in adapter.weights.items():
        assert torch.equal(merged_weight(base_state[key], lora, torch.float32), expected[key]), key
    assert len(adapter.weights) == 4


def test_internlm2_base_merged_in_llama_layout_and_exported_back(tmp_path):
    """An InternLM2 checkpoint is merged in the Llama layout it is trained in; --internlm2 writes the original layout
    (fused wqkv, remote-code files) whose conversion gives back exactly the merged weights."""
    from _internlm2_fakes import train_sp_model, write_internlm2_checkpoint

    from helpers.models.internlm2.convert import convert_internlm2_to_llama, ensure_llama_layout
    from helpers.bench.merge import write_random_adapter
    from helpers.models.loading import config_hash
    from helpers.encode.chat_format import chat_format
    from helpers.models.record import write_record
    (tmp_path / "sp").mkdir()
    sp = train_sp_model(tmp_path / "sp" / "tokenizer.model", add_dummy_prefix=True)
    source = tmp_path / "internlm2-chat-tiny"
    write_internlm2_checkpoint(source, sp, intermediate_size=256)
    llama = ensure_llama_layout(source, progress=None)
    write_random_adapter(tmp_path / "adapter", llama, r=8, alpha=16)
    write_record(tmp_path / "adapter", {"base_model": {"name": "tiny", "config_hash": config_hash(llama)},
                                        "template": chat_format("internlm2_chat").record(), "system": ""})
    # another InternLM2 base is refused by its config hash before it is converted (the heavy step)
    other = tmp_path / "internlm2-other"
    write_internlm2_checkpoint(other, sp, intermediate_size=384)
    with pytest.raises(AdapterMismatch, match="has another architecture"):
        merge(other, tmp_path / "adapter", tmp_path / "m0", progress=quiet)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("internlm2-other")) == ["internlm2-other"]
    result = merge(source, tmp_path / "adapter", tmp_path / "merged", internlm2_out=tmp_path / "exported",
                   progress=quiet)
    assert result.lora_modules == 14 and result.logits_check["max_abs_diff"] < 1e-4
    exported = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert exported["model_type"] == "internlm2" and exported["auto_map"]["AutoModelForCausalLM"]
    assert (tmp_path / "exported" / "modeling_internlm2.py").is_file()
    assert "model.layers.0.attention.wqkv.weight" in all_tensors(tmp_path / "exported")
    back = convert_internlm2_to_llama(tmp_path / "exported", tmp_path / "back", progress=None)
    merged_tensors, round_trip = all_tensors(result.out_dir), all_tensors(back)
    assert merged_tensors.keys() == round_trip.keys()
    for name, tensor in merged_tensors.items():
        assert torch.equal(round_trip[name], tensor), name
    with pytest.raises(Exception, match="is not an InternLM2 checkpoint"):
        merge(llama, tmp_path / "adapter", tmp_path / "m2", template="internlm2_chat",
              internlm2_out=tmp_path / "e2", progress=quiet)
