#!/usr/bin/env python3
"""Set up tunebook in ./.venv and run the main job or the tests. Needs nothing but Python >= 3.10.

    python3 quickstart.py run     # set up, then run the six notebooks end to end (SmolLM2 on a CPU, InternLM2 on a GPU)
    python3 quickstart.py test    # set up, then run the test suite (what CI runs)
    python3 quickstart.py browser # set up, then drive 01_persona_data in a real JupyterLab (headless Chromium)

Set-up is idempotent and quick when nothing changed. If the interpreter you run this with already has
torch (Colab, an InternStudio conda env), the virtualenv sees it and torch is left alone; otherwise
torch is installed (TUNEBOOK_TORCH, default "torch==2.13.0"; TUNEBOOK_TORCH_INDEX_URL to pick a wheel
index, e.g. https://download.pytorch.org/whl/cpu for the small CPU build).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import time
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("TUNEBOOK_VENV", ROOT / ".venv"))
TORCH = os.environ.get("TUNEBOOK_TORCH", "torch==2.13.0")


def say(message: str) -> None:
    print(f"[quickstart] {message}", flush=True)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*command: str | Path, **kwargs) -> None:
    result = subprocess.run([str(c) for c in command], **kwargs)
    if result.returncode != 0:
        say(f"failed (exit {result.returncode}): {' '.join(map(str, command))}")
        sys.exit(result.returncode)


def has_module(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, cwd=VENV).returncode == 0


def has_distribution(python: Path, name: str) -> bool:
    code = f"import importlib.metadata as m; m.version({name!r})"
    return subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0


def ensure_venv() -> Path:
    python = venv_python()
    if not python.exists():
        # Reuse a torch the base interpreter already has (Colab / conda) instead of downloading another.
        shared = importlib.util.find_spec("torch") is not None
        say(f"creating virtualenv {VENV}" + (" (sharing this interpreter's torch)" if shared else ""))
        try:
            venv.EnvBuilder(with_pip=True, system_site_packages=shared).create(VENV)
        except Exception as err:  # Debian/Ubuntu ship venv without ensurepip
            say(f"cannot create a virtualenv ({err}); on Debian/Ubuntu: sudo apt install python3-venv")
            sys.exit(1)
    return python


def ensure_packages(python: Path, extras: str) -> None:
    if not has_module(python, "torch"):
        command = [python, "-m", "pip", "install", TORCH]
        if os.environ.get("TUNEBOOK_TORCH_INDEX_URL"):
            command += ["--index-url", os.environ["TUNEBOOK_TORCH_INDEX_URL"]]
        say(f"installing {TORCH} (no torch found)")
        run(*command)
    else:
        say("torch found; leaving it as it is")
    stamp = VENV / f".tunebook-{extras}.stamp"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and has_distribution(python, "tunebook"):
        say("project already installed")
        return
    say(f"installing tunebook[{extras}] and its dependencies")
    run(python, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[{extras}]")
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("run", "test", "browser"):
        print(__doc__)
        return 2
    if sys.version_info < (3, 10):
        say(f"Python >= 3.10 is needed; this is {sys.version.split()[0]}")
        return 1
    started = time.time()
    python = ensure_venv()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if argv[0] == "run":
        ensure_packages(python, "lab")
        say(f"set-up done in {time.time() - started:.0f} s; running the main job: python -m helpers run-all")
        code = subprocess.run([str(python), "-m", "helpers", "run-all"], cwd=ROOT, env=env).returncode
        say(f"all done in {time.time() - started:.0f} s (set-up included)")
        return code
    ensure_packages(python, "test,browser,demo" if argv[0] == "browser" else "test,deepspeed")
    if argv[0] == "browser":
        say("checking for Chromium (installed with apt when missing and running as root)")
        setup = subprocess.run([str(python), "tests/browser_setup.py"], cwd=ROOT, env=env)
        if setup.returncode != 0:
            return setup.returncode
        say("running the JupyterLab browser test: python -m pytest -m browser")
        return subprocess.run([str(python), "-m", "pytest", "-q", "-m", "browser"], cwd=ROOT, env=env).returncode
    say("running the tests: python -m pytest")
    return subprocess.run([str(python), "-m", "pytest", "-q"], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
