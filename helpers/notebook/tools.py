"""Keep committed notebooks clean: outputs only in `# NBVAL_CHECK_OUTPUT` cells (taken from an executed run).

    python -m helpers.notebook.tools strip notebooks/*.ipynb             # drop every output
    python -m helpers.notebook.tools keep-checked runs/<run> notebooks/*.ipynb   # checked outputs from a run
"""
from __future__ import annotations

import sys
from pathlib import Path

from helpers.env.shadow import NOTEBOOK_IMPORT_CHECK

CHECK = "NBVAL_CHECK_OUTPUT"
# The first code cell of every notebook, identical everywhere (tests/test_notebooks.py): it runs before helpers can
# be imported, so it is plain Python. On Colab it installs the clone the notebook sits in (Colab's torch and Jupyter
# stay); everywhere it then checks that `import helpers` found tunebook's package and not a learner's helpers.py.
SETUP_CELL = (
    "# Colab 上先安装本仓库（从仓库的 notebooks/ 目录打开；Colab 自带的 torch / Jupyter 不变）；本地和 InternStudio 见 README\n"
    "import subprocess, sys\n"
    'if "google.colab" in sys.modules: subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", ".."])\n'
    + NOTEBOOK_IMPORT_CHECK).rstrip("\n")


def is_checked(cell) -> bool:
    return cell.get("cell_type") == "code" and CHECK in "".join(cell.get("source", ""))


def stray_outputs(notebook) -> list[int]:
    """Indexes of code cells that carry outputs or an execution count without being checked cells."""
    return [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and not is_checked(cell)
            and (cell.get("outputs") or cell.get("execution_count") is not None)]


def clean(notebook, executed=None):
    """Strip outputs; checked cells get the outputs (and count) of the same cell in `executed`."""
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if executed is not None and is_checked(cell):
            source = executed.cells[i]
            assert source.source == cell.source, f"cell {i} differs from the executed copy"
            cell.outputs = [o for o in source.outputs if o.get("output_type") != "display_data"]
            cell.execution_count = source.execution_count
        else:
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)
    return notebook


def main(argv: list[str] | None = None) -> int:
    import nbformat
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("strip", "keep-checked"):
        print(__doc__)
        return 2
    run = Path(argv[1]) if argv[0] == "keep-checked" else None
    for path in map(Path, argv[2 if run else 1:]):
        notebook = nbformat.read(path, as_version=4)
        executed = nbformat.read(run / path.name, as_version=4) if run else None
        nbformat.write(clean(notebook, executed), path)
        print(f"cleaned {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
