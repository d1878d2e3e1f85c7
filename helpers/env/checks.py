"""Environment checks as pure functions: facts in, one `Check` (status, detail, fix) out.

Every function here takes the facts it judges as arguments (an `nvcc --version` text, torch.version.cuda,
GPU properties...), so tests can feed the WSL2 case, a mismatched toolkit or an old driver without a GPU.
Gathering the real facts (subprocesses, torch.cuda, the network) lives in helpers/env/report.py.
Messages are English; each WARN/FAIL carries the exact fix for the platform it runs on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

OK, WARN, FAIL = "OK", "WARN", "FAIL"
DEFAULT_MODEL = "internlm2-chat-1_8b"
GPU_RUNTIME_COLAB = "use a GPU runtime: Colab 代码执行程序 > 更改运行时类型 > GPU (Runtime > Change runtime type > GPU)"
TINY_FALLBACK = ("without a model source the notebooks fall back to the offline tiny model "
                 "(`python -m helpers make-tiny-model DIR`): every step runs, the answers are demo-only")
# PyTorch's CUDA wheel indexes (https://download.pytorch.org/whl/cuXYZ); which ones exist depends on the torch
# release, so a fix names the newest one the driver can run and points at the selector page.
TORCH_CUDA_TAGS = ((11, 8), (12, 1), (12, 4), (12, 6), (12, 8), (12, 9), (13, 0))
TORCH_SELECTOR = "https://pytorch.org/get-started/locally/"


@dataclass
class Check:
    name: str
    status: str          # OK | WARN | FAIL
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Platform:
    name: str                      # colab | internstudio | wsl2 | linux | macos | windows
    conda_prefix: str | None = None

    @property
    def conda(self) -> bool:
        return bool(self.conda_prefix)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def parse_version_pair(text: str | None, pattern: str) -> tuple[int, int] | None:
    match = re.search(pattern, text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_nvcc_release(output: str | None) -> tuple[int, int] | None:
    """`nvcc --version` ends with 'Cuda compilation tools, release 12.1, V12.1.105'."""
    return parse_version_pair(output, r"release (\d+)\.(\d+)")


def parse_smi_cuda(output: str | None) -> tuple[int, int] | None:
    """nvidia-smi's header says 'CUDA Version: 12.2': the newest CUDA the installed driver can run."""
    return parse_version_pair(output, r"CUDA Version:\s*(\d+)\.(\d+)")


def parse_torch_cuda(torch_cuda: str | None) -> tuple[int, int] | None:
    return parse_version_pair(torch_cuda, r"^(\d+)\.(\d+)")


def mm(pair: tuple[int, int]) -> str:
    return f"{pair[0]}.{pair[1]}"


def gpu_fix(platform: Platform) -> str:
    if platform.name == "colab":
        return GPU_RUNTIME_COLAB + ", then run the notebook from the top"
    if platform.name == "internstudio":
        return "start the InternStudio dev machine with a GPU (an A100 slice), then reopen the notebook"
    if platform.name == "wsl2":
        return ("install the NVIDIA driver for Windows (WSL2 uses it; install no Linux driver inside WSL), then a CUDA "
                f"build of torch ({TORCH_SELECTOR}); `nvidia-smi` inside WSL must list the GPU")
    return f"run on a machine with an NVIDIA GPU and a CUDA build of torch ({TORCH_SELECTOR})"


def torch_index_for(driver: tuple[int, int]) -> str | None:
    tags = [t for t in TORCH_CUDA_TAGS if t <= driver]
    return f"https://download.pytorch.org/whl/cu{tags[-1][0]}{tags[-1][1]}" if tags else None


def toolkit_fix(cuda: tuple[int, int] | None, platform: Platform) -> str:
    version = mm(cuda) if cuda else "<torch.version.cuda>"
    conda = f"conda install -c nvidia cuda-toolkit={version} && export CUDA_HOME=$CONDA_PREFIX"
    if platform.conda:
        return conda
    return (f"{conda} (in a conda env; without conda install the CUDA {version} toolkit from "
            f"https://developer.nvidia.com/cuda-toolkit-archive and export CUDA_HOME=/usr/local/cuda-{version})")


# ---------------------------------------------------------------- Python and packages
def check_python(version: tuple[int, int, int], requires_python: str | None, platform: Platform) -> Check:
    from packaging.specifiers import SpecifierSet
    text = ".".join(map(str, version))
    spec = SpecifierSet(requires_python or "")
    if spec.contains(text, prereleases=True):
        return Check("python", OK, f"{text}" + (f" (needs {spec})" if requires_python else ""))
    fix = ("conda create -n tunebook python=3.11 && conda activate tunebook" if platform.conda
           else "use Python 3.10-3.12 (e.g. `conda create -n tunebook python=3.11` or `uv venv -p 3.11`)")
    return Check("python", FAIL, f"{text} is older than tunebook needs ({spec})", fix)


def check_package(dist: str, installed: str | None, specifier: str) -> Check:
    """One requirement of the tunebook distribution against the installed version (None = not installed)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version
    spec = SpecifierSet(specifier)
    need = f" (needs {spec})" if specifier else ""
    quoted = f'"{dist}{spec}"' if specifier else dist
    fix = f"pip install -U {quoted}"
    if dist == "torch":  # never let a bare `pip install torch` swap Colab's/InternStudio's CUDA build for another
        fix += f" (on a GPU machine use the index URL for your CUDA from {TORCH_SELECTOR}), then restart the kernel"
    elif dist != "bitsandbytes":
        fix += ", then restart the kernel"
    if installed is None:
        return Check(dist, FAIL, "not installed" + need, fix)
    try:
        ok = spec.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        return Check(dist, WARN, f"version {installed!r} cannot be compared{need}", fix)
    if ok:
        return Check(dist, OK, installed + need)
    detail = f"{installed} is too old{need}"
    if dist == "transformers":
        detail += ": helpers needs DataCollatorWithFlattening's position_ids and the current chat-template API"
    return Check(dist, FAIL, detail, fix)


def check_widgets(ipywidgets_requires: list[str] | None, installed: dict[str, str | None]) -> Check:
    """ipywidgets pins its front-end packages; a mismatch shows 'Error displaying widget: model not found' or raw
    `HBox(...)` text instead of progress bars (notebooks.md problem 13)."""
    from packaging.requirements import Requirement
    from packaging.version import Version
    if ipywidgets_requires is None:
        return Check("jupyter widgets", OK, "not checked: ipywidgets is not installed (see its line)")
    bad = []
    for text in ipywidgets_requires:
        req = Requirement(text)
        if req.name not in ("widgetsnbextension", "jupyterlab_widgets") or req.marker is not None:
            continue
        have = installed.get(req.name)
        if have is None or not req.specifier.contains(Version(have), prereleases=True):
            bad.append(f"{req.name} {have or 'missing'} (ipywidgets needs {req.specifier})")
    if not bad:
        return Check("jupyter widgets", OK, "ipywidgets front-end packages match (progress bars render in Jupyter)")
    return Check("jupyter widgets", WARN, "; ".join(bad) + ": progress bars may show 'Error displaying widget' "
                 "or raw HBox(...) text", 'pip install -U ipywidgets jupyterlab_widgets widgetsnbextension in the env '
                 "that runs JupyterLab, then reload the browser tab")


# ---------------------------------------------------------------- GPU, CUDA driver and toolkit
def check_gpu(gpus: list[GpuInfo], cuda_available: bool, platform: Platform) -> Check:
    if cuda_available and gpus:
        parts = [f"GPU {i}: {g.name}, {gib(g.total_bytes)} total, {gib(g.free_bytes)} free, capability "
                 f"{mm(g.capability)}" for i, g in enumerate(gpus)]
        return Check("GPU", OK, "; ".join(parts))
    return Check("GPU", WARN, "no CUDA GPU visible to torch: training runs on the CPU, which is fine for the tiny demo "
                 "model and far too slow for internlm2-chat-1_8b", gpu_fix(platform))


def check_bf16(gpus: list[GpuInfo]) -> Check:
    if not gpus:
        return Check("bf16", OK, "no GPU: CPU runs use fp32")
    old = [g for g in gpus if g.capability < (8, 0)]
    if not old:
        return Check("bf16", OK, f"supported (capability {mm(gpus[0].capability)} >= 8.0): training uses bf16")
    g = old[0]
    return Check("bf16", OK, f"{g.name} (capability {mm(g.capability)} < 8.0, e.g. T4/V100) has no bf16: tunebook "
                 "uses fp16 automatically; nothing to do")


def check_driver(driver_cuda: tuple[int, int] | None, torch_cuda: str | None, cuda_available: bool,
                 platform: Platform, driver_version: str | None = None, torch_installed: bool = True) -> Check:
    """torch's CUDA runtime vs the newest CUDA the driver supports (nvidia-smi 'CUDA Version')."""
    torch_pair = parse_torch_cuda(torch_cuda)
    driver_text = (f"driver {driver_version}, " if driver_version else "driver ") + (
        f"CUDA {mm(driver_cuda)}" if driver_cuda else "CUDA version unknown")
    if not torch_installed:  # the torch line FAILs already; the driver still says which build to install
        if driver_cuda is None:
            return Check("CUDA driver", OK, "no NVIDIA driver found; torch is not installed")
        index = torch_index_for(driver_cuda)
        return Check("CUDA driver", WARN, f"{driver_text}; torch is not installed",
                     f"pip install torch --index-url {index}" if index else "update the NVIDIA driver")
    if torch_pair is None:
        if driver_cuda is None:
            return Check("CUDA driver", OK, "no NVIDIA driver found and torch is a CPU build (consistent)")
        index = torch_index_for(driver_cuda)
        fix = (f"pip install -U torch --index-url {index}, then restart the kernel" if index
               else "update the NVIDIA driver, then install a CUDA build of torch")
        return Check("CUDA driver", FAIL, f"{driver_text} is installed but torch is a CPU build: training would run "
                     "on the CPU", fix)
    if driver_cuda is None:
        if cuda_available:
            return Check("CUDA driver", OK, f"torch CUDA {torch_cuda}; driver version unknown (no nvidia-smi) but "
                         "torch can use the GPU")
        return Check("CUDA driver", WARN, f"torch is built for CUDA {torch_cuda} but no NVIDIA driver was found",
                     gpu_fix(platform))
    if driver_cuda >= torch_pair:
        return Check("CUDA driver", OK, f"{driver_text} >= torch's CUDA {torch_cuda}")
    index = torch_index_for(driver_cuda)
    install = f"pip install -U torch --index-url {index}" if index else None
    update = ("update the NVIDIA driver on Windows (WSL2 uses the Windows driver)" if platform.name == "wsl2"
              else f"update the NVIDIA driver to one whose nvidia-smi shows CUDA Version >= {mm(torch_pair)}")
    fix = f"{install} (a torch build for the driver's CUDA {mm(driver_cuda)}), or {update}" if install else update
    if driver_cuda[0] == torch_pair[0] and cuda_available:
        # CUDA minor-version compatibility: a 12.x runtime runs on any 12.x driver, except kernels that need newer PTX.
        return Check("CUDA driver", WARN, f"{driver_text} is older than torch's CUDA {torch_cuda}; it works through "
                     "CUDA minor-version compatibility, but 'no kernel image'/'PTX' errors can follow", fix)
    return Check("CUDA driver", FAIL, f"{driver_text} is older than torch's CUDA {torch_cuda}: torch cannot use "
                 "the GPU ('CUDA driver version is insufficient')", fix)


NVCC_NOT_NEEDED = ("nvcc only matters for building CUDA extensions (DeepSpeed ops, flash-attn from source); QLoRA "
                   "training with tunebook does not need it: bitsandbytes ships its CUDA kernels")


def check_nvcc(nvcc_output: str | None, torch_cuda: str | None, *, deepspeed: bool = False,
               platform: Platform = Platform("linux"), where: str = "") -> Check:
    """`nvcc --version` text (None: nvcc not on PATH) vs torch's CUDA. Missing nvcc with a working CUDA runtime is
    the WSL2 case learners report; it only blocks DeepSpeed, which compiles its ops with nvcc."""
    torch_pair = parse_torch_cuda(torch_cuda)
    fix = toolkit_fix(torch_pair, platform)
    if nvcc_output is None:
        if deepspeed:
            return Check("nvcc", FAIL, "nvcc not found: DeepSpeed compiles its CUDA ops with nvcc ('CUDA_HOME does "
                         "not exist' / '.../bin/nvcc not found')", fix)
        if torch_pair is None:
            return Check("nvcc", OK, "not found; not needed (torch is not a CUDA build)")
        return Check("nvcc", WARN, f"not found: the CUDA runtime is there (torch uses CUDA {torch_cuda}) but the CUDA "
                     f"toolkit is not. {NVCC_NOT_NEEDED}", "only for DeepSpeed/flash-attn: " + fix)
    release = parse_nvcc_release(nvcc_output)
    where = f" at {where}" if where else ""
    if release is None:
        return Check("nvcc", WARN, f"cannot read the version from `nvcc --version`: {nvcc_output.strip()[-80:]!r}",
                     fix)
    if torch_pair is None:
        return Check("nvcc", OK, f"CUDA {mm(release)}{where} (unused: torch is not a CUDA build)")
    if release[0] != torch_pair[0]:
        # torch.utils.cpp_extension refuses to build when the majors differ (and only warns on minor differences).
        detail = (f"CUDA {mm(release)}{where} but torch is built for CUDA {torch_cuda}: extensions built with it fail "
                  f"to compile/load. {NVCC_NOT_NEEDED}")
        return Check("nvcc", FAIL if deepspeed else WARN, detail, fix)
    note = "" if release == torch_pair else " (minor versions differ: extension builds only warn)"
    return Check("nvcc", OK, f"CUDA {mm(release)}{where}, torch CUDA {torch_cuda}{note}")


def check_cuda_home(cuda_home: str | None, torch_cuda: str | None, *, nvcc_path: str | None = None,
                    deepspeed: bool = False, platform: Platform = Platform("linux")) -> Check:
    """CUDA_HOME must name a toolkit folder with bin/nvcc. torch.utils.cpp_extension (DeepSpeed) falls back to the
    nvcc on PATH when CUDA_HOME is unset, so unset is fine when nvcc is on PATH."""
    from pathlib import Path
    torch_pair = parse_torch_cuda(torch_cuda)
    fix = toolkit_fix(torch_pair, platform)
    bad = FAIL if deepspeed else WARN
    if not cuda_home:
        if nvcc_path:
            return Check("CUDA_HOME", OK, f"unset; extension builds use the nvcc on PATH ({nvcc_path})")
        if torch_pair is None and not deepspeed:
            return Check("CUDA_HOME", OK, "unset; not needed (torch is not a CUDA build)")
        return Check("CUDA_HOME", bad, "unset and no nvcc on PATH" + ("" if deepspeed else f". {NVCC_NOT_NEEDED}"),
                     fix if deepspeed else "only for DeepSpeed/flash-attn: " + fix)
    home = Path(cuda_home).expanduser()
    if not home.is_dir():
        return Check("CUDA_HOME", bad, f"CUDA_HOME={cuda_home} does not exist",
                     f"unset CUDA_HOME, or point it at the toolkit: {fix}")
    if not (home / "bin" / "nvcc").is_file():
        return Check("CUDA_HOME", bad, f"CUDA_HOME={cuda_home} has no bin/nvcc (DeepSpeed: '{home}/bin/nvcc not "
                     "found')", f"point CUDA_HOME at the folder holding bin/nvcc: {fix}")
    return Check("CUDA_HOME", OK, f"{cuda_home} (has bin/nvcc)")


# ---------------------------------------------------------------- bitsandbytes, MKL
BNB_BROKEN_MARKERS = ("compiled without gpu support", "undefined symbol", "libcudart", "cuda setup failed",
                      "libbitsandbytes", "cannot open shared object")


def check_bitsandbytes_result(device: str, error: BaseException | None = None,
                              errors: dict[str, float] | None = None, tolerance: float = 0.15,
                              notes: str = "") -> Check:
    """Judge the bitsandbytes probe: `errors` maps each path (train/eval) to its relative error vs fp32."""
    name = "bitsandbytes 4-bit"
    fix = "pip install -U bitsandbytes, then restart the kernel"
    if error is not None:
        text = f"{type(error).__name__}: {error}"
        if isinstance(error, ModuleNotFoundError) and "bitsandbytes" in str(error):
            return Check(name, FAIL, "bitsandbytes is not installed: QLoRA cannot quantize the model",
                         'pip install -U "bitsandbytes>=0.45", then restart the kernel')
        known = any(marker in str(error).lower() for marker in BNB_BROKEN_MARKERS)
        why = "the installed build does not match this machine's CUDA/CPU" if known else "4-bit NF4 does not work"
        return Check(name, FAIL, f"NF4 quantize+matmul on {device} failed ({why}): {text[:300]}", fix)
    worst = max((errors or {}).values(), default=float("inf"))
    shown = ", ".join(f"{path} {value:.3f}" for path, value in (errors or {}).items())
    if worst <= tolerance:
        return Check(name, OK, f"NF4 Linear4bit on {device}: relative error vs fp32 {shown} (<= {tolerance})"
                     + (f"; {notes}" if notes else ""))
    return Check(name, FAIL, f"NF4 Linear4bit on {device} gives wrong results: relative error vs fp32 {shown} "
                 f"(> {tolerance})", fix)


MKL_FIX = "export MKL_SERVICE_FORCE_INTEL=1; export MKL_THREADING_LAYER=GNU"
MKL_MESSAGE = "mkl-service + Intel(R) MKL: MKL_THREADING_LAYER=INTEL is incompatible with libgomp.so.1 library"


def check_mkl(environ: dict, *, numpy_blas: str | None, mkl_service: bool, libgomp_loaded: bool,
              libiomp_loaded: bool = False) -> Check:
    """The xtuner#350 crash. mkl-service exits the process with MKL_MESSAGE when MKL_THREADING_LAYER=INTEL while
    GNU OpenMP (torch's libgomp) is loaded and Intel's is not, unless MKL_SERVICE_FORCE_INTEL is set; and when numpy
    is imported before torch it sets MKL_THREADING_LAYER=INTEL itself, which worker processes inherit."""
    layer = (environ.get("MKL_THREADING_LAYER") or "").upper()
    forced = bool(environ.get("MKL_SERVICE_FORCE_INTEL"))
    numpy_mkl = "mkl" in (numpy_blas or "").lower()
    seen = (f"MKL_THREADING_LAYER={layer or 'unset'}, MKL_SERVICE_FORCE_INTEL={'set' if forced else 'unset'}, "
            f"numpy BLAS {numpy_blas or 'unknown'}, mkl-service {'installed' if mkl_service else 'not installed'}, "
            f"libgomp {'loaded' if libgomp_loaded else 'not loaded'}")
    uses_mkl = mkl_service or numpy_mkl
    if layer == "GNU" or not uses_mkl:
        return Check("MKL threading", OK, f"no conflict ({seen})")
    if layer == "INTEL" and libgomp_loaded and not libiomp_loaded and mkl_service and not forced:
        return Check("MKL threading", FAIL, f"'{MKL_MESSAGE}' will stop processes that load mkl-service ({seen})",
                     MKL_FIX)
    return Check("MKL threading", WARN, f"MKL numpy/mkl-service with torch's GNU OpenMP: worker processes can stop "
                 f"with '{MKL_MESSAGE}' ({seen})", MKL_FIX)
