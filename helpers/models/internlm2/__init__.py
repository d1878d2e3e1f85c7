"""InternLM2 checkpoints as native Llama (no remote code) and back: the wqkv layout, shards, the SentencePiece tokenizer.
"""
