"""The chunked loss gives the same loss and gradients as transformers' full-logit loss."""
import torch

from helpers.train.loss import chunked_lm_loss, use_chunked_loss
from helpers.encode.packing import collate_micro_batch


def _pair(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    chunked = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert use_chunked_loss(chunked, chunk=7)
    return plain, chunked


def test_same_loss_and_gradients_padded_batch(tiny_model_dir):
    plain, chunked = _pair(tiny_model_dir)
    ids = torch.randint(5, 400, (2, 40), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :15] = -100
    labels[1, 30:] = -100
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    losses = [m(input_ids=ids, attention_mask=mask, labels=labels).loss for m in (plain, chunked)]
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=0)  # fp32 summation order
    for loss in losses:
        loss.backward()
    for name in ("model.layers.0.mlp.down_proj.weight", "lm_head.weight", "model.embed_tokens.weight"):
        grads = [dict(m.named_parameters())[name].grad for m in (plain, chunked)]
        torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5, msg=name)


def test_same_loss_on_packed_rows_with_accumulation_normaliser(tiny_model_dir, tiny_tokenizer):
    from helpers.data.conversation import Conversation, Turn
    from helpers.encode.encoding import Encoder
    plain, chunked = _pair(tiny_model_dir)
    samples = Encoder(tiny_tokenizer, "internlm2_chat", 256).encode_all(
        [Conversation([Turn("请介绍一下你自己", "我是小助手")]), Conversation([Turn("hi", "hello there")])])
    batch = collate_micro_batch([{"rows": [samples]}], tiny_tokenizer.pad_token_id)
    n = torch.tensor(50)  # Trainer passes the token count of the whole accumulated step
    losses = [m(**batch, num_items_in_batch=n, use_cache=False).loss for m in (plain, chunked)]
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=0)  # fp32 summation order


def test_inference_forward_is_untouched(tiny_model_dir):
    plain, chunked = _pair(tiny_model_dir)
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    assert torch.equal(chunked(input_ids=ids).logits, plain(input_ids=ids).logits)   # no labels: full logits, same


def test_only_labelled_positions_are_computed():
    hidden = torch.randn(1, 5, 4, requires_grad=True)
    weight = torch.randn(10, 4)
    labels = torch.tensor([[-100, -100, -100, 3, -100]])
    loss = chunked_lm_loss(hidden, weight, labels, chunk=2)
    expected = torch.nn.functional.cross_entropy(hidden[0, 2:3] @ weight.t(), torch.tensor([3]))
    torch.testing.assert_close(loss, expected)
