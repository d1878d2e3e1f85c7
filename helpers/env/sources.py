"""Where the model comes from (InternStudio share, local caches, Hugging Face, ModelScope) and whether the disk
can hold it. Probes are small and injectable: tests pass a fake opener and temp folders, never the network.
"""
from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from helpers.env.checks import DEFAULT_MODEL, FAIL, OK, TINY_FALLBACK, WARN, Check, gb

# bf16 safetensors sizes, computed from the published config.json files (internlm/internlm2-chat-1_8b, -7b) as 2 bytes x parameters:
# 1_8b: 2*92544*2048 embeddings/head + 24 layers x 62.9M (wqkv 4096x2048, wo, w1/w3/w2 8192x2048) = 1.89B -> 3.78 GB
# 7b:   2*92544*4096 + 32 layers x 218.1M (wqkv 6144x4096, wo, w1/w3/w2 14336x4096) = 7.74B -> 15.5 GB
MODEL_BYTES = {"internlm2-chat-1_8b": 3_778_220_032, "internlm2-chat-7b": 15_475_417_088}
# Trainer checkpoints beside the merged copy: LoRA r=64 on all 7 linear layers of 1_8b is 62.9M parameters,
# 0.25 GB in fp32, plus Adam's two fp32 moments = 0.75 GB per checkpoint; two kept -> 1.5 GB, rounded up.
CHECKPOINT_BYTES = 2_000_000_000
SHARE_LAYOUTS = ("/root/share/new_models/Shanghai_AI_Laboratory/{name}", "/share/new_models/Shanghai_AI_Laboratory/{name}",
                 "/root/share/model_repos/{name}", "/share/model_repos/{name}")
PROBE_TIMEOUT_S = 3.0
TRUE_VALUES = ("1", "true", "yes", "on")


def hub_ids(model: str) -> tuple[str, str, str]:
    """(Hugging Face repo, ModelScope repo, short name). InternLM's org is `internlm` on HF and
    `Shanghai_AI_Laboratory` on ModelScope; a bare name is taken as InternLM's."""
    org, _, name = model.rpartition("/")
    if not org or org.lower() in ("internlm", "shanghai_ai_laboratory"):
        return f"internlm/{name}", f"Shanghai_AI_Laboratory/{name}", name
    return model, model, name


def looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().is_dir()


def hf_hub_cache(environ: dict) -> Path:
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"]).expanduser()
    home = Path(environ["HF_HOME"]).expanduser() if environ.get("HF_HOME") else Path.home() / ".cache" / "huggingface"
    return home / "hub"


def modelscope_cache(environ: dict) -> Path:
    return Path(environ.get("MODELSCOPE_CACHE") or Path.home() / ".cache" / "modelscope").expanduser()


def local_candidates(model: str, environ: dict) -> list[Path]:
    """Folders that may already hold the model, in the order the notebooks try them."""
    if looks_like_path(model):
        return [Path(model).expanduser()]
    hf_repo, ms_repo, name = hub_ids(model)
    found = [Path(layout.format(name=name)) for layout in SHARE_LAYOUTS]
    snapshots = hf_hub_cache(environ) / ("models--" + hf_repo.replace("/", "--")) / "snapshots"
    if snapshots.is_dir():
        found += sorted(snapshots.iterdir())
    ms = modelscope_cache(environ)
    found += [ms / "hub" / "models" / ms_repo, ms / "hub" / ms_repo, ms / ms_repo]
    return found


def find_local_model(model: str, environ: dict) -> str | None:
    for folder in local_candidates(model, environ):
        if (folder / "config.json").is_file():
            return str(folder)
    return None


def local_model_bytes(folder: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*") if p.suffix in (".safetensors", ".bin"))


# ---------------------------------------------------------------- hub probes
@dataclass(frozen=True)
class HubProbe:
    hub: str          # "Hugging Face (https://huggingface.co)"
    ok: bool          # the hub answered and has the model
    detail: str       # "HTTP 200", "timed out after 3 s", "HTTP 404: model not found"


def _urlopen(request, timeout):
    return urllib.request.urlopen(request, timeout=timeout)


def probe_url(hub: str, url: str, timeout: float = PROBE_TIMEOUT_S, opener=_urlopen) -> HubProbe:
    """One HEAD request; `opener(request, timeout)` returns a response with `.status` or raises like urllib."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "tunebook-env-check"})
    try:
        with opener(request, timeout) as response:
            status = getattr(response, "status", 200)
    except urllib.error.HTTPError as err:
        status = err.code
    except (urllib.error.URLError, OSError) as err:  # socket.timeout and TimeoutError are OSErrors
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return HubProbe(hub, False, f"no answer within {timeout:g} s")
        return HubProbe(hub, False, f"unreachable ({reason})")
    if status < 400:
        return HubProbe(hub, True, f"HTTP {status}")
    if status in (401, 404):
        return HubProbe(hub, False, f"HTTP {status}: model not found")
    return HubProbe(hub, False, f"HTTP {status}")


def hub_urls(model: str, environ: dict) -> dict[str, str]:
    hf_repo, ms_repo, _ = hub_ids(model)
    hf = (environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    ms = (environ.get("MODELSCOPE_DOMAIN") or "www.modelscope.cn").rstrip("/")
    ms = ms if ms.startswith("http") else "https://" + ms
    return {f"Hugging Face ({hf})": f"{hf}/api/models/{hf_repo}",
            f"ModelScope ({ms})": f"{ms}/api/v1/models/{ms_repo}"}


def probe_hubs(model: str, environ: dict, timeout: float = PROBE_TIMEOUT_S, opener=_urlopen) -> list[HubProbe]:
    """All hubs at once, each in a daemon thread, and no waiting past `timeout` (+0.5 s): urllib's timeout does not
    bound the DNS lookup, and a hung lookup must neither stall the check nor keep the interpreter from exiting."""
    urls = hub_urls(model, environ)
    results: dict[str, HubProbe] = {}

    def probe(hub: str, url: str) -> None:
        results[hub] = probe_url(hub, url, timeout, opener)

    threads = [threading.Thread(target=probe, args=item, daemon=True) for item in urls.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [results.get(hub, HubProbe(hub, False, f"no answer within {timeout:g} s")) for hub in urls]


def offline(environ: dict) -> bool:
    return (environ.get("HF_HUB_OFFLINE") or "").lower() in TRUE_VALUES


# ---------------------------------------------------------------- checks
def check_model_sources(model: str, *, chosen: bool, local: str | None, probes: list[HubProbe] | None,
                        skipped: str = "") -> Check:
    """`chosen`: the learner named this model (a FAIL then blocks their path); the default model missing is only a
    WARN because the tiny model keeps every notebook running. `probes` None = hubs not asked (`skipped` says why)."""
    hubs = "; ".join(f"{p.hub}: {p.detail}" for p in probes or [])
    name = "model source"
    if local:
        return Check(name, OK, f"{model} found at {local} (no download needed)" + (f"; {hubs}" if hubs else ""))
    if looks_like_path(model):
        return Check(name, FAIL, f"model folder {model} not found (no config.json)",
                     "check the path, or pass a hub name like internlm2-chat-1_8b")
    if probes and any(p.ok for p in probes):
        return Check(name, OK, f"{model} downloadable: {hubs}")
    fix = ("in mainland China `export HF_ENDPOINT=https://hf-mirror.com` or use ModelScope (pip install modelscope); "
           "on InternStudio the model is under /root/share/new_models/Shanghai_AI_Laboratory/; or pass a local folder")
    if probes is None:
        detail = f"{model} not found locally; hubs not probed ({skipped or 'no network check'})"
        return Check(name, WARN, detail + ("" if chosen else f"; {TINY_FALLBACK}"), fix)
    if all("not found" in p.detail for p in probes):
        return Check(name, FAIL if chosen else WARN, f"no hub knows {model} ({hubs})", "check the model name")
    detail = f"{model} not found locally and no hub answered ({hubs})"
    if chosen:
        return Check(name, FAIL, detail + ": nothing can provide the model you chose", fix)
    return Check(name, WARN, f"{detail}; {TINY_FALLBACK}", fix)


@dataclass(frozen=True)
class DiskPlace:
    label: str         # "HF cache", "work folder"
    path: str
    role: str          # "download" (one hub cache is used) | "work" (merged copy + checkpoints)
    free_bytes: int
    filesystem: object  # st_dev: places on one filesystem share its free space


def check_disk(places: list[DiskPlace], model: str, model_bytes: int | None, local: bool) -> Check:
    if model_bytes is None:
        return Check("disk", OK, "; ".join(f"{p.label} {p.path}: {gb(p.free_bytes)} free" for p in places)
                     + f" (size of {model} unknown: not compared)")
    download = 0 if local else model_bytes
    need: dict[object, int] = {}
    for role in ("download", "work"):
        for p in places:
            if p.role != role:
                continue
            if role == "download":  # only one hub is used, so the caches on a filesystem need one download
                need[p.filesystem] = max(need.get(p.filesystem, 0), download)
            else:
                need[p.filesystem] = need.get(p.filesystem, 0) + model_bytes + CHECKPOINT_BYTES
    basis = (f"{model} is {gb(model_bytes)} in bf16; " + ("already local, no download; " if local else "")
             + f"merged copy {gb(model_bytes)} + checkpoints {gb(CHECKPOINT_BYTES)} in the work folder")
    short, seen = [], set()
    for p in places:
        if p.filesystem in seen:
            continue
        seen.add(p.filesystem)
        if p.free_bytes < need[p.filesystem]:
            together = [q.label for q in places if q.filesystem == p.filesystem]
            short.append(f"{' + '.join(together)} ({p.path}): {gb(p.free_bytes)} free, needs {gb(need[p.filesystem])}")
    listing = "; ".join(f"{p.label} {p.path}: {gb(p.free_bytes)} free" for p in places)
    if not short:
        return Check("disk", OK, f"{listing} ({basis})")
    return Check("disk", WARN, "short of space: " + "; ".join(short) + f" ({basis})",
                 "free space, or put the caches on a bigger disk (export HF_HOME=/big/disk/hf; export "
                 "MODELSCOPE_CACHE=/big/disk/modelscope) and choose a work folder there")


def disk_places(environ: dict, workdir: str | os.PathLike | None) -> list[DiskPlace]:
    """The real free space of each place (its nearest existing parent: caches may not exist yet)."""
    import shutil
    places = [("HF cache", hf_hub_cache(environ), "download"), ("work folder", Path(workdir or os.getcwd()), "work")]
    try:
        import importlib.util
        if environ.get("MODELSCOPE_CACHE") or importlib.util.find_spec("modelscope"):
            places.insert(1, ("ModelScope cache", modelscope_cache(environ), "download"))
    except (ImportError, ValueError):
        pass
    result = []
    for label, path, role in places:
        existing = path.expanduser().absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        result.append(DiskPlace(label, str(path), role, shutil.disk_usage(existing).free, os.stat(existing).st_dev))
    return result


def model_size(model: str, local: str | None) -> int | None:
    if local:
        size = local_model_bytes(local)
        if size:
            return size
    return None if looks_like_path(model) else MODEL_BYTES.get(hub_ids(model)[2])


def model_source_check(model: str | None, environ: dict, probe_network: bool, opener=_urlopen,
                       timeout: float = PROBE_TIMEOUT_S) -> tuple[Check, str | None]:
    """Gather and judge; returns the check and the local folder (if any) for the disk check."""
    chosen = model is not None
    model = model or DEFAULT_MODEL
    local = find_local_model(model, environ)
    if local or looks_like_path(model):
        probes, skipped = None, ""
    elif not probe_network:
        probes, skipped = None, "--no-network"
    elif offline(environ):
        probes, skipped = None, "HF_HUB_OFFLINE is set: offline mode, hubs not probed"
    else:
        probes, skipped = probe_hubs(model, environ, timeout, opener), ""
    return check_model_sources(model, chosen=chosen, local=local, probes=probes, skipped=skipped), local
