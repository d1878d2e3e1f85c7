"""The package layout reads as the data path: stage subpackages, imports only pointing down the stages, data_gen
never reaching the engine, small modules and functions. Every import is read with `ast`, lazy ones inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The stages in the order a learner walks them; a module may import its own stage and earlier ones only.
STAGES = ("data", "encode", "models", "train", "merge", "multimodal", "chat", "evaluate", "share", "env", "notebook", "bench")
BASE = ("errors", "io", "cli")                 # top-level modules every stage may use
DATA_GEN_MAY_USE = ("data", "encode")          # the generators write data; they never train or evaluate
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_TOP_LEVEL_MODULES = 12                     # .py files directly under helpers/ besides __init__ / __main__


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "helpers":
                found += [(f"helpers.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "helpers" and len(parts) > 1 else None


def test_every_helpers_module_lives_in_a_stage_or_is_a_base_module():
    top = [p.stem for p in (ROOT / "helpers").glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert sorted(top) == sorted(BASE) and len(top) <= MAX_TOP_LEVEL_MODULES
    packages = sorted(p.parent.name for p in (ROOT / "helpers").glob("*/__init__.py"))
    assert packages == sorted(STAGES)


def test_imports_point_down_the_stages():
    wrong = []
    for path in _modules("helpers"):
        here = _stage(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if here not in STAGES:
            continue
        for target, line in _imports(path):
            there = _stage(target)
            if there in STAGES and STAGES.index(there) > STAGES.index(here):
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target} ({there})")
            if target.split(".")[0] == "data_gen" and here not in ("notebook", "bench"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target}")
    assert not wrong, "\n".join(wrong)


def test_base_modules_import_no_stage_at_module_level():
    for name in ("errors", "io"):
        tree = ast.parse((ROOT / "helpers" / f"{name}.py").read_text(encoding="utf-8"))
        targets = [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
        assert not [t for t in targets if _stage(t) in STAGES], name


def test_data_gen_uses_only_the_data_and_encode_stages():
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {target}" for path in _modules("data_gen")
             for target, line in _imports(path)
             if _stage(target) is not None and _stage(target) not in DATA_GEN_MAY_USE + BASE]
    assert not wrong, "\n".join(wrong)


def test_no_module_is_over_the_size_limit():
    big = {str(p.relative_to(ROOT)): n for p in _modules("helpers") + _modules("data_gen")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not big, big


def test_no_function_is_over_the_size_limit():
    long = [f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for p in _modules("helpers") + _modules("data_gen")
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_every_stage_says_what_it_holds():
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((ROOT / "helpers" / stage / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc) > 40, stage


def test_the_layout_test_sees_a_wrong_import(tmp_path):
    """The checks above would catch an upward import: the same reader on a module that makes one."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from helpers.train.engine import train\n", encoding="utf-8")
    assert _imports(module) == [("helpers.train.engine", 2)] and _stage("helpers.train.engine") == "train"


def test_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):readme.index("## Known limits")]
    missing = [str(p.relative_to(ROOT)) for p in _modules("helpers") + _modules("data_gen")
               if p.stem not in ("__init__", "__main__") and p.stem not in layout]
    assert not missing, missing
