"""The published config.json dimensions of the camp's InternLM2 chat models, in one place: the memory planner's
advice table, the benchmarks' random-weight models and the size estimates all read them from here (nothing is
downloaded to know a shape)."""
from __future__ import annotations

INTERNLM2_SHAPES: dict[str, dict] = {
    "internlm2-chat-1_8b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=16,
                                num_key_value_heads=8, vocab_size=92544),
    "internlm2-chat-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                              num_key_value_heads=8, vocab_size=92544),
}
