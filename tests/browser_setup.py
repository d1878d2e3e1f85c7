"""Make this machine able to run the browser test (`python -m pytest -m browser`).

    python tests/browser_setup.py           # install what is missing (apt needs root), then check
    python tests/browser_setup.py --check   # only check; exit 1 and say what is missing

The test drives Debian's Chromium (/usr/bin/chromium) through the `playwright` Python package. Playwright's own
browser download (`playwright install`) is never used: it is blocked on CI machines, and the system browser is
what apt keeps patched. A small CJK font is installed too, so the screenshot shows the notebook's Chinese text
instead of empty boxes (the test reads text from the page, not from pixels, so it passes without the font).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys

CHROMIUM = os.environ.get("TUNEBOOK_CHROMIUM", "/usr/bin/chromium")
APT_PACKAGES = ["chromium", "fonts-wqy-microhei"]   # the browser; a 5 MB font with the Chinese glyphs
INSTALL_HINT = ("as root: apt-get update && apt-get install -y " + " ".join(APT_PACKAGES) +
                "  (or point TUNEBOOK_CHROMIUM at another Chromium/Chrome binary)")


def missing() -> list[str]:
    """What the browser test lacks on this machine, each with how to get it; [] when it can run."""
    problems = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"no Chromium at {CHROMIUM}: {INSTALL_HINT}")
    if importlib.util.find_spec("playwright") is None:
        problems.append(f"the playwright package is not installed in {sys.executable}'s environment: "
                        "pip install -e '.[test]' (or pip install playwright); never `playwright install`, "
                        "the test uses the system Chromium")
    return problems


def has_cjk_font() -> bool:
    """fontconfig knows a font with Chinese glyphs (fc-list comes with Chromium's dependencies)."""
    fc_list = shutil.which("fc-list")
    return bool(fc_list and subprocess.run([fc_list, ":lang=zh"], capture_output=True, text=True).stdout.strip())


def install_system_packages() -> None:
    """apt-get install the browser and the font; only as root on a Debian/Ubuntu machine."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"cannot install Chromium here (needs root and apt-get); {INSTALL_HINT}")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", *APT_PACKAGES], check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tests/browser_setup.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report what is missing (exit 1 if anything is)")
    args = p.parse_args(argv)
    if not args.check and (any(problem.startswith("no Chromium") for problem in missing()) or not has_cjk_font()):
        if os.geteuid() == 0 or not os.path.exists(CHROMIUM):
            install_system_packages()
    problems = missing()
    if not problems and not has_cjk_font():
        print("browser test: no CJK font, the screenshot will show boxes for Chinese text (the test still works): "
              "apt-get install -y fonts-wqy-microhei", file=sys.stderr)
    for problem in problems:
        print(f"browser test: {problem}", file=sys.stderr)
    if problems:
        return 1
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    print(f"browser test ready: {version} at {CHROMIUM}; playwright in {sys.executable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
