"""Causal-LM loss without full-vocabulary logits for the whole batch.

transformers computes logits for every position (tokens x 92,544 vocabulary for InternLM2), upcasts them to fp32
and keeps them for backward: about 10 bytes x tokens x vocab, 1.8 GiB for one 2048-token row, the single largest
activation of a QLoRA step. Here the head is applied only to positions that are trained on (answers are often
a third of the tokens), in chunks, each under activation checkpointing, so at most one chunk of logits exists.
Fused kernels that do the same (Liger's fused linear cross entropy) need Triton on a GPU; this runs everywhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
# Architectures whose logits are exactly lm_head(hidden): no softcapping or logit scaling to reproduce.
PLAIN_HEAD_MODELS = {"llama", "mistral", "qwen2", "qwen3", "internlm2"}


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                    num_items_in_batch: int | torch.Tensor | None = None, chunk: int = 1024) -> torch.Tensor:
    """Mean next-token cross entropy over labelled positions (sum / num_items_in_batch when given, as HF does
    under gradient accumulation)."""
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = labels[:, 1:].reshape(-1).to(hidden.device)
    keep = targets != IGNORE_INDEX
    hidden, targets = hidden[keep], targets[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), chunk):
        total = total + checkpoint(_chunk_loss_sum, hidden[start:start + chunk], weight, targets[start:start + chunk],
                                   use_reentrant=False)
    denominator = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(total.device)
    return total / denominator


def use_chunked_loss(causal_lm, chunk: int = 1024) -> bool:
    """Route `causal_lm`'s training forward (labels given) through chunked_lm_loss; returns False (and changes
    nothing) for architectures with logit transforms. Inference (no labels) keeps the original forward."""
    if causal_lm.config.model_type not in PLAIN_HEAD_MODELS or getattr(causal_lm, "_tunebook_chunked", False):
        return False
    from transformers.modeling_outputs import CausalLMOutputWithPast
    original = causal_lm.forward

    def forward(input_ids=None, attention_mask=None, position_ids=None, labels=None, **kwargs):
        if labels is None:
            return original(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        num_items = kwargs.pop("num_items_in_batch", None)
        kwargs.pop("logits_to_keep", None)
        outputs = causal_lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  **kwargs)
        loss = chunked_lm_loss(outputs.last_hidden_state, causal_lm.lm_head.weight, labels, num_items, chunk)
        return CausalLMOutputWithPast(loss=loss, logits=None)

    causal_lm.forward = forward
    causal_lm._tunebook_chunked = True
    return True
