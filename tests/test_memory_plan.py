"""The memory planner: exact components checked against real models; totals against H100 measurements."""
import pytest

from helpers.train.memory_plan import GIB, NF4_BYTES, Plan, Shape, advise, estimate, load_shape, report

SHAPE_1_8B = Shape(2048, 8192, 24, 16, 8, 92544, 128)
SHAPE_7B = Shape(4096, 14336, 32, 32, 8, 92544, 128)


def test_parameter_counts_match_a_real_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shape = load_shape(tiny_model_dir)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.embedding_params == model.model.embed_tokens.weight.numel() + model.lm_head.weight.numel()


def test_published_model_sizes():
    # internlm2-chat-1_8b is published as 1.89B parameters, internlm2-chat-7b as 7.74B
    assert SHAPE_1_8B.params == pytest.approx(1.889e9, rel=1e-3)
    assert SHAPE_7B.params == pytest.approx(7.738e9, rel=1e-3)


def test_lora_count_matches_peft(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=64, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert load_shape(tiny_model_dir).lora_params(64) == trainable
    assert load_shape(tiny_model_dir).lora_params(8, ["q_proj", "v_proj"]) == sum(
        8 * (i + o) for n, (i, o) in load_shape(tiny_model_dir).linear_shapes().items()
        if n in ("q_proj", "v_proj")) * load_shape(tiny_model_dir).layers


def test_nf4_bytes_match_bitsandbytes_storage(tiny_model_dir):
    import torch
    from bitsandbytes.nn import Linear4bit
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, device_map="cpu", quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32))
    stored = 0
    for module in model.modules():
        if isinstance(module, Linear4bit):
            state = module.weight.quant_state
            stored += module.weight.data.numel() * module.weight.data.element_size()
            stored += state.absmax.numel() * state.absmax.element_size()
            stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
    linear = load_shape(tiny_model_dir).linear_params
    assert stored == pytest.approx(linear * NF4_BYTES, rel=0.02)


def test_totals_match_h100_measurements():
    """Allocator peaks measured on an H100 (2026-11-23) with `python -m helpers bench train --model-shape 1_8b|7b
    --steps 2 --warmup 1 --no-bs16`: one packed 2048-token row per micro-batch, QLoRA r64 all linear, chunked loss.
    The issue's target is within 15%."""
    measured = {SHAPE_1_8B: 2.59, SHAPE_7B: 7.34}
    for shape, gib in measured.items():
        assert estimate(shape, Plan()).total / GIB == pytest.approx(gib, rel=0.15)


def test_components_move_the_way_settings_do():
    base = estimate(SHAPE_7B, Plan())
    assert estimate(SHAPE_7B, Plan(loss_chunk=None)).logits > 5 * base.logits
    assert estimate(SHAPE_7B, Plan(gradient_checkpointing=False)).activations > 10 * base.activations
    assert estimate(SHAPE_7B, Plan(mode="lora")).weights > 2.5 * base.weights
    assert estimate(SHAPE_7B, Plan(paged_optimizer=False)).lora == base.lora + base.paged
    assert estimate(SHAPE_7B, Plan(max_length=4096)).activations == pytest.approx(2 * base.activations, rel=0.01)


def test_advice_names_settings_that_fit():
    lines = advise(SHAPE_7B, Plan(mode="lora", gradient_checkpointing=False), budget=16 * GIB)
    assert lines[0].startswith("does NOT fit")
    assert any("mode: qlora" in line for line in lines[1:])
    assert advise(SHAPE_1_8B, Plan(), budget=16 * GIB)[0].startswith("fits: about 2.6 GiB")
    assert advise(SHAPE_7B, Plan(), budget=None)[0].startswith("needs about 7.2 GiB")
    hopeless = advise(SHAPE_7B, Plan(), budget=2 * GIB)
    assert hopeless[-1].strip().startswith("no setting here makes it fit")


def test_report_reads_config_json(tiny_model_dir):
    text = report(tiny_model_dir, Plan(), budget=8 * GIB)
    assert "memory plan for model" in text and "total (allocator peak)" in text and "fits" in text


def test_advice_table_covers_each_camp_model_on_each_common_gpu():
    from helpers.models.shapes import INTERNLM2_SHAPES
    from helpers.train.memory_plan import COMMON_GPUS, advice_table
    assert Shape.from_config(INTERNLM2_SHAPES["internlm2-chat-7b"]) == SHAPE_7B    # the one table, the same shape
    lines = advice_table(Plan(mode="lora", gradient_checkpointing=False)).splitlines()
    assert len(lines) == len(INTERNLM2_SHAPES) * len(COMMON_GPUS)
    seven_on_t4 = next(line for line in lines if line.startswith("internlm2-chat-7b") and "T4 16GB" in line)
    assert seven_on_t4.split("T4 16GB")[1].strip() == advise(SHAPE_7B, Plan(mode="lora", gradient_checkpointing=False),
                                                             15 * GIB)[0]
