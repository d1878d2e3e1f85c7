"""Packing: whole samples, isolated attention, honest efficiency numbers; grouped and padded batches."""
import pytest
import torch

from helpers.data.conversation import Conversation, Turn
from helpers.encode.encoding import IGNORE_INDEX, Encoder
from helpers.errors import TunebookError
from helpers.encode.packing import (MicroBatchDataset, collate_micro_batch, grouped_batches, pack_rows, padded_batches,
                             plan_batches)

CONVERSATIONS = [
    Conversation([Turn("请介绍一下你自己", "我是伍鲜同志的小助手")]),
    Conversation([Turn("hello there", "hi! how are you"), Turn("fine", "good to hear")]),
    Conversation([Turn("你在实战营做什么", "我在这里帮助伍鲜同志完成XTuner微调个人小助手的任务")]),
    Conversation([Turn("1+1=?", "2")]),
    Conversation([Turn("A calming blue", "#66ccff", system="You are a professional color designer.\n")]),
]


@pytest.fixture(scope="module")
def model_and_samples(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    samples = Encoder(tiny_tokenizer, "internlm2_chat", 512).encode_all(CONVERSATIONS)
    return model, samples


def _alone_logits(model, sample):
    with torch.no_grad():
        return model(input_ids=torch.tensor([sample.input_ids]), use_cache=False).logits[0]


def _packed_rows():
    return [[0, 1, 2], [3, 4]]  # two rows of different lengths -> the shorter row is padded


def test_packed_logits_equal_each_sample_alone(model_and_samples, tiny_tokenizer):
    model, samples = model_and_samples
    rows = [[samples[i] for i in row] for row in _packed_rows()]
    batch = collate_micro_batch([{"rows": rows}], tiny_tokenizer.pad_token_id)
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    for b, row in enumerate(rows):
        at = 0
        for sample in row:
            torch.testing.assert_close(packed[b, at:at + len(sample)], _alone_logits(model, sample),
                                       atol=1e-5, rtol=0)
            at += len(sample)


def test_the_isolation_test_can_fail(model_and_samples, tiny_tokenizer):
    # Guard: with an all-ones attention mask (XTuner's default packing) samples see each other.
    model, samples = model_and_samples
    rows = [[samples[0], samples[1]]]
    batch = collate_micro_batch([{"rows": rows}], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                      attention_mask=torch.ones_like(batch["input_ids"]), use_cache=False).logits
    second = leaky[0, len(samples[0]):len(samples[0]) + len(samples[1])]
    assert (second - _alone_logits(model, samples[1])).abs().max() > 1e-2


def test_packed_loss_equals_mean_over_samples_alone(model_and_samples, tiny_tokenizer):
    model, samples = model_and_samples
    rows = [[samples[0], samples[1], samples[2]]]
    batch = collate_micro_batch([{"rows": rows}], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        packed_loss = model(**batch, use_cache=False).loss
        total, count = 0.0, 0
        for sample in rows[0]:
            labels = torch.tensor([sample.labels])
            n = int((labels[0, 1:] != IGNORE_INDEX).sum())
            total += model(input_ids=torch.tensor([sample.input_ids]), labels=labels, use_cache=False).loss * n
            count += n
    torch.testing.assert_close(packed_loss, total / count, atol=1e-5, rtol=0)


def test_collated_labels_never_cross_samples(model_and_samples, tiny_tokenizer):
    _, samples = model_and_samples
    batch = collate_micro_batch([{"rows": [[samples[3], samples[4]]]}], tiny_tokenizer.pad_token_id)
    start = len(samples[3])
    assert batch["labels"][0, start].item() == IGNORE_INDEX
    assert batch["position_ids"][0].tolist() == list(range(len(samples[3]))) + list(range(len(samples[4])))


def test_pack_rows_keeps_samples_whole_and_fills_rows():
    lengths = [700, 600, 500, 400, 300, 200, 100, 90, 80, 30]
    rows = pack_rows(lengths, 1000)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 1000 for row in rows)
    assert len(rows) == 3  # 3000 tokens into rows of 1000: best fit is perfect here
    with pytest.raises(TunebookError, match="longer than max_length"):
        pack_rows([1001], 1000)


def test_camp3_style_duplicates_pack_near_full():
    lengths = [26, 22] * 8001  # the camp3 file: two samples x 8001
    plan_rows = pack_rows(lengths, 2048)
    used = sum(lengths)
    assert used / (len(plan_rows) * 2048) > 0.99


def test_grouped_batches_respect_budget_and_cover_everything():
    lengths = [5, 50, 7, 49, 6, 51, 8, 48, 300] * 20
    batches = grouped_batches(lengths, token_budget=400, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 400 for b in batches)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert sum(lengths) / padded > 0.9  # similar lengths together -> little padding
    assert grouped_batches(lengths, 400, seed=1) == batches and grouped_batches(lengths, 400, seed=2) != batches


def test_padded_batches_and_plan_summary(model_and_samples):
    _, samples = model_and_samples
    assert [len(b) for b in padded_batches(10, 4)] == [4, 4, 2]
    plan = plan_batches(samples, "packed", max_length=512)
    summary = plan.summary()
    tokens = sum(len(s) for s in samples)
    assert summary["rows"] == 1 and summary["tokens"] == tokens
    assert summary["efficiency"] == pytest.approx(tokens / 512)
    assert summary["trained_share"] == pytest.approx(sum(s.trained_tokens for s in samples) / tokens)
    grouped = plan_batches(samples, "grouped", max_length=512)
    assert len(MicroBatchDataset(samples, grouped)) == len(grouped.micro_batches)
    batch = collate_micro_batch([MicroBatchDataset(samples, grouped)[0]], pad_token_id=0)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["labels"].shape
    with pytest.raises(TunebookError, match="unknown batching strategy"):
        plan_batches(samples, "magic", 512)
