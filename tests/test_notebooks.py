"""Static checks of the committed notebooks (nbval executes them; see pyproject's addopts)."""
import ast
import re
from pathlib import Path

import nbformat
import pytest

from helpers.notebook.tools import SETUP_CELL, is_checked, stray_outputs

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["00_environment", "01_persona_data", "02_colorist_dataset", "03_qlora_training", "04_merge_and_chat",
         "05_multimodal_llava"]
NOTEBOOKS = {name: nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4) for name in NAMES
             if (ROOT / "notebooks" / f"{name}.ipynb").exists()}


def test_all_five_notebooks_exist():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == NAMES


def committed(name: str):
    """The notebook as committed (git HEAD): outputs JupyterLab autosaves while a learner works are theirs, not a
    test failure. Outside a git checkout (an unpacked sdist) the file itself."""
    import subprocess
    done = subprocess.run(["git", "-C", str(ROOT), "show", f"HEAD:notebooks/{name}.ipynb"], capture_output=True)
    if done.returncode != 0:
        return NOTEBOOKS[name]
    return nbformat.reads(done.stdout.decode("utf-8"), as_version=4)


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_no_stray_outputs(name):
    nb = committed(name)
    assert stray_outputs(nb) == [], "outputs are committed only in # NBVAL_CHECK_OUTPUT cells " \
                                    "(python -m helpers.notebook.tools strip ...)"
    for cell in nb.cells:
        if is_checked(cell):
            assert cell.outputs and cell.execution_count is not None, cell.source[:80]
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_one_parameters_cell_near_the_top(name):
    tagged = [i for i, c in enumerate(NOTEBOOKS[name].cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] <= 3


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_narrative_is_chinese_and_logic_lives_in_helpers(name):
    nb = NOTEBOOKS[name]
    prose = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert len(re.findall(r"[\u4e00-\u9fff]", prose)) > 200
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.source.lstrip().startswith(("%", "!")):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.end_lineno - node.lineno < 5, f"long definition in a notebook cell: {node.name}"


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_starts_with_the_one_setup_cell(name):
    """The same <= 5-line cell first in every notebook, before anything imports helpers: the Colab install (a no-op
    elsewhere) and the check that `import helpers` found tunebook's package."""
    code = [c for c in NOTEBOOKS[name].cells if c.cell_type == "code"]
    assert code[0].source == SETUP_CELL and len(SETUP_CELL.splitlines()) <= 5
    assert 'if "google.colab" in sys.modules:' in SETUP_CELL and 'getattr(helpers, "TUNEBOOK", False)' in SETUP_CELL
    assert [c for c in code[1:] if "pip" in c.source or "TUNEBOOK\", False" in c.source] == []


def test_outputs_a_learner_saves_are_not_what_the_stray_output_check_reads(tmp_path, monkeypatch):
    import subprocess
    import sys
    module = sys.modules[__name__]
    (tmp_path / "notebooks").mkdir()
    clean = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    nbformat.write(clean, tmp_path / "notebooks" / "x.ipynb")
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(tmp_path), *command], check=True)
    saved = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")], execution_count=1)])
    nbformat.write(saved, tmp_path / "notebooks" / "x.ipynb")   # JupyterLab's autosave after a run
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setitem(NOTEBOOKS, "x", saved)
    assert stray_outputs(NOTEBOOKS["x"]) and stray_outputs(committed("x")) == []


@pytest.mark.slow
def test_the_main_job_runs_a_notebook_without_kernel_warnings_and_saves_it(tmp_path):
    """`run-all` as quickstart runs it (a subprocess, the terminal's stderr): the executed notebook is saved and the
    kernel's own log (ipykernel's 'running over TCP without encryption', once per notebook) stays out of the way."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "helpers", "run-all", "--smoke", "--only", "00_environment",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "00_environment         ok" in done.stdout and (tmp_path / "run" / "00_environment.ipynb").is_file()
    assert "IPKernelApp" not in done.stderr and "without encryption" not in done.stderr + done.stdout


def test_notebook_cells_wait_minutes_not_seconds_for_their_outputs(pytester):
    """A busy machine delays a cell's display messages past nbval's own 5 s; the root conftest raises the wait."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("tunebook_root_conftest", ROOT / "conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    nbformat.write(notebook, pytester.path / "one.ipynb")
    collected = pytester.inline_run("--collect-only", "--nbval-lax", "one.ipynb", plugins=[root_conftest])
    items = [call.item for call in collected.getcalls("pytest_itemcollected")]
    assert [item.output_timeout for item in items] == [root_conftest.NBVAL_OUTPUT_TIMEOUT]
    assert root_conftest.NBVAL_OUTPUT_TIMEOUT >= 60
