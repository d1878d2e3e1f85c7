"""The import name `helpers` is short and common: a learner's own helpers.py (or helpers/ package) in the notebook
folder comes first on sys.path and is imported instead of tunebook's package.

What can be seen from in here: if their file wins, none of this code runs at all. So
- notebooks start with NOTEBOOK_IMPORT_CHECK (plain Python, no tunebook import needed to fail clearly);
- `check_helpers_import()` (part of `python -m helpers env`) scans sys.path for every `helpers` a fresh import could
  pick, e.g. after tunebook was imported from elsewhere, or for files that tunebook in turn hides;
- the CLI warns when its working folder holds a foreign helpers: a notebook started there would import it
  (`python -m helpers` run from that folder would even run their file; the `tunebook` command is immune).
"""
from __future__ import annotations

import os
import sys
from importlib.machinery import BYTECODE_SUFFIXES, EXTENSION_SUFFIXES, SOURCE_SUFFIXES
from pathlib import Path

from helpers.env.checks import FAIL, OK, WARN, Check

OURS = Path(__file__).resolve().parents[1] / "__init__.py"
SHADOW_MESSAGE_ZH = "{where} 遮蔽了 tunebook 的 helpers 包，请重命名该文件（例如改为 my_helpers.py）"
SHADOW_MESSAGE = "{where} shadows tunebook's helpers package: rename it (e.g. my_helpers.py)"
# The first cell of every notebook. A foreign `helpers` has no TUNEBOOK marker (helpers/__init__.py sets it).
NOTEBOOK_IMPORT_CHECK = (
    "import helpers  # tunebook's package; a helpers.py next to this notebook would be imported instead\n"
    'assert getattr(helpers, "TUNEBOOK", False), f"'
    + SHADOW_MESSAGE_ZH.format(where="{getattr(helpers, '__file__', None) or list(helpers.__path__)}") + '"\n')


def helpers_in(folder: Path) -> Path | None:
    """The file a path-based `import helpers` would load from `folder`, in the import system's order: a regular
    package first, then extension, source and bytecode modules. A folder without __init__.py is a namespace
    portion, which never wins over a regular package, so it is not reported."""
    init = folder / "helpers" / "__init__.py"
    if init.is_file():
        return init
    for suffix in EXTENSION_SUFFIXES + SOURCE_SUFFIXES + BYTECODE_SUFFIXES:
        candidate = folder / f"helpers{suffix}"
        if candidate.is_file():
            return candidate
    return None


def helpers_on_path(sys_path: list[str], cwd: str) -> list[Path]:
    """Every distinct `helpers` reachable through sys.path, first = what a fresh `import helpers` gets."""
    found, seen = [], set()
    for entry in sys_path:
        folder = Path(entry or cwd)
        if not folder.is_dir():
            continue
        hit = helpers_in(folder)
        if hit is not None and hit.resolve() not in seen:
            seen.add(hit.resolve())
            found.append(hit)
    return found


def _is_ours(path: Path, ours: Path) -> bool:
    return path.resolve() == ours.resolve()


def check_helpers_import(sys_path: list[str] | None = None, cwd: str | None = None, ours: Path = OURS,
                         loaded=None) -> Check:
    sys_path = list(sys.path if sys_path is None else sys_path)
    cwd = cwd or os.getcwd()
    loaded = sys.modules.get("helpers") if loaded is None else loaded
    fix = "rename it (e.g. my_helpers.py) and restart the kernel"
    if loaded is not None and not getattr(loaded, "TUNEBOOK", False):
        where = getattr(loaded, "__file__", None) or list(getattr(loaded, "__path__", []))
        return Check("helpers import", FAIL, f"`import helpers` loaded {where}: " + SHADOW_MESSAGE.format(where="it"),
                     fix)
    found = helpers_on_path(sys_path, cwd)
    if found and not _is_ours(found[0], ours):
        return Check("helpers import", FAIL, f"{found[0]} comes before tunebook's package ({ours.parent}) on sys.path, "
                     "so `import helpers` in a new kernel imports it: " + SHADOW_MESSAGE.format(where=found[0]), fix)
    here = helpers_in(Path(cwd))
    if here is not None and not _is_ours(here, ours):
        return Check("helpers import", WARN, f"{here} in the current folder is not tunebook's: a notebook or "
                     "`python -m helpers` started in this folder imports it instead of tunebook", fix)
    hidden = [str(p) for p in found[1:] if not _is_ours(p, ours)]
    if hidden:
        return Check("helpers import", WARN, f"tunebook's helpers ({ours.parent}) hides your {', '.join(hidden)}: "
                     "`import helpers` never reaches it", "rename it if you want to import it")
    return Check("helpers import", OK, f"tunebook's package at {ours.parent}")


def cwd_shadow_warning(cwd: str | None = None, sys_path0: str | None = None, ours: Path = OURS) -> str | None:
    """For the CLI: a foreign helpers in the working folder (or the script's folder) would shadow tunebook."""
    cwd = cwd or os.getcwd()
    folders = [Path(cwd)] + ([Path(sys_path0 or cwd)] if sys_path0 is not None else [])
    for folder in dict.fromkeys(folders):
        hit = helpers_in(folder)
        if hit is not None and not _is_ours(hit, ours):
            return (SHADOW_MESSAGE.format(where=hit) + ": a notebook or `python -m helpers` started in "
                    f"{folder} imports it instead of tunebook")
    return None
