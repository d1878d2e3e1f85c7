"""The real CUDA path, where a GPU is present: QLoRA (bitsandbytes NF4 on the GPU, bf16/fp16 compute) learns the
persona, and the merged full-precision model answers exactly as base + adapter on the GPU. Without CUDA these tests
are skipped with the reason shown (the CPU path of the same code is covered by test_training / test_merge)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from _persona_adapter import CAMP, train_persona_adapter  # noqa: E402


@pytest.fixture(scope="module")
def gpu_adapter(tiny_model_dir, tmp_path_factory):
    return train_persona_adapter(tiny_model_dir, tmp_path_factory.mktemp("gpu-persona"))


def test_cuda_qlora_trains_in_4bit_on_the_gpu_and_learns(tiny_model_dir, gpu_adapter):
    import bitsandbytes as bnb
    from peft import PeftModel

    from helpers.encode.encoding import load_tokenizer
    from helpers.models.generation import GREEDY, answer
    from helpers.models.loading import compute_dtype, load_model
    from helpers.models.record import read_record
    record = read_record(gpu_adapter)
    assert record["training"]["device"] == "cuda" and record["mode"] == "qlora"
    assert record["training"]["dtype"] == str(compute_dtype("auto")).replace("torch.", "") != "float32"
    base = load_model(tiny_model_dir, "qlora")
    four_bit = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and all(m.weight.device.type == "cuda" and m.weight.quant_state.quant_type == "nf4"
                            for m in four_bit)
    model = PeftModel.from_pretrained(base, gpu_adapter)
    tokenizer = load_tokenizer(gpu_adapter)
    for question, expected in CAMP:
        assert answer(model, tokenizer, "internlm2_chat", question, sampling=GREEDY) == expected


def test_cuda_merge_matches_base_plus_adapter(tiny_model_dir, gpu_adapter, tmp_path):
    from transformers import AutoModelForCausalLM

    from helpers.encode.encoding import load_tokenizer
    from helpers.merge.merging import merge
    from helpers.models.generation import GREEDY, answer
    result = merge(tiny_model_dir, gpu_adapter, tmp_path / "merged", device="cuda", progress=lambda *_: None)
    assert result.weight_check["lora_merged"] == 14 and result.logits_check["max_abs_diff"] < 1e-3
    model = AutoModelForCausalLM.from_pretrained(result.out_dir, device_map={"": 0}).eval()
    tokenizer = load_tokenizer(result.out_dir)
    for question, expected in CAMP:
        assert answer(model, tokenizer, "internlm2_chat", question, sampling=GREEDY) == expected
