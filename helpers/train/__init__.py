"""Stage 4, train: the training config and shipped recipes, the engine (Trainer + PEFT, checkpoints, resume), the
encoded-data cache, the chunked loss, the live view, the GPU memory planner, base answers for general records.
"""
