"""Stage 2, encode: prompt templates (XTuner's, byte for byte, and a tokenizer's own), conversations -> input_ids +
labels exactly as XTuner's encode_fn, packing and batching, and `check-data`.
"""
