"""Stage 5, merge: a LoRA adapter into its full-precision base, shard by shard, checked tensor by tensor and by logits.
"""
