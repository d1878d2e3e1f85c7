"""Maintainer benchmarks, each printing the figures README quotes (run them alone: 2 cores are noisy).

    python -m helpers bench train      tunebook's training path vs the tutorials' recipe: tokens/s, memory, ratio
    python -m helpers bench merge      merging a 1.8B-shaped adapter: time, peak RSS, every tensor checked
    python -m helpers bench internlm2  InternLM2 -> Llama conversion of a 1.8B-shaped checkpoint
    python -m helpers bench persona    the CPU persona recipe on SmolLM2: every target of the recipe
"""
from __future__ import annotations

import importlib

BENCHES = {"train": "helpers.bench.train", "merge": "helpers.bench.merge", "internlm2": "helpers.bench.internlm2",
           "persona": "helpers.bench.persona"}


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if not argv or argv[0] not in BENCHES:
        print(__doc__)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return importlib.import_module(BENCHES[argv[0]]).main(argv[1:])
