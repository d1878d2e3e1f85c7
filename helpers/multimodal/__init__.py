"""LLaVA: a vision tower + projector + chat LM, its data, its two training stages, chat and merge."""
