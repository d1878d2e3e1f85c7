"""`python -m helpers upload MODEL_OR_ADAPTER REPO`: put a trained adapter or merged model on the Hugging Face hub or
ModelScope, with a model card written from its tunebook.json (and evaluation.json, when `evaluate` wrote one).

    python -m helpers upload work/train-persona/adapter me/my-persona --dry-run    # the card and the file list only
    python -m helpers upload work/merged me/my-persona-merged [--private] [--hub modelscope]

Only what loading the model needs is sent: weights, configs, tokenizer, tunebook.json, evaluation.json, README.md.
Checkpoints, optimizer states, data caches, logs, locks and temporary folders stay here. Tokens come only from the
libraries' own login (`hf auth login` or HF_TOKEN; `modelscope login` or MODELSCOPE_API_TOKEN): tunebook never prints
or writes them. A README.md you wrote yourself is kept and sent as it is.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterator

from helpers.errors import TunebookError
from helpers.io import atomic_file, read_json

# The files a model or adapter folder is loaded from (top level only: every sub-folder is a checkpoint, cache or log)
SEND = ("config.json", "generation_config.json", "adapter_config.json", "*.safetensors", "*.safetensors.index.json",
        "pytorch_model*.bin", "adapter_model.bin", "tokenizer*", "special_tokens_map.json", "added_tokens.json",
        "vocab.*", "merges.txt", "chat_template.jinja", "*.py", "tunebook.json", "evaluation.json", "README.md",
        "LICENSE*")
HF_NO_TOKEN = ("no Hugging Face token: run `hf auth login` (with a token that may write) or set HF_TOKEN, then "
               "upload again")
MS_NO_TOKEN = ("no ModelScope token: run `modelscope login --token YOUR_TOKEN` or set MODELSCOPE_API_TOKEN (tokens: "
               "https://modelscope.cn/my/myaccesstoken), then upload again")
MS_MISSING = ("--hub modelscope needs the modelscope package: pip install 'tunebook[modelscope]' (or pip install "
              "modelscope)")


@dataclass
class Plan:
    folder: Path
    card_note: str                        # where the card is and why
    files: list[tuple[str, Path, int]]    # (name in the repo, local file, bytes)
    skipped: list[str]                    # what in the folder is not sent


def _holds_model(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()


def model_folder(path: str, note=print) -> Path:
    """The adapter / model folder to send; a train output_dir stands for its final adapter/ (or model/)."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise TunebookError(f"{path}: no such folder (relative paths start from {Path.cwd()})")
    if not folder.is_dir():
        raise TunebookError(f"{path} is a file; give the adapter or merged model folder")
    if _holds_model(folder):
        return folder
    for final in (folder / "adapter", folder / "model"):
        if _holds_model(final):
            note(f"note: {folder} is a training run; uploading its result {final} (checkpoints stay here)")
            return final
    raise TunebookError(f"{folder} holds no model or adapter (no config.json or adapter_config.json): give train's "
                        "<output_dir>/adapter or merge's output folder")


def place_card(folder: Path, make_card) -> tuple[Path, str]:
    """(README.md to send, what was done): the learner's own README.md is kept; otherwise the generated card is
    written into the folder (atomically), or into a temporary folder when this one is read-only."""
    from helpers.share.card import readme_kind
    readme = folder / "README.md"
    kind = readme_kind(readme)
    if kind == "own":
        return readme, f"model card: keeping {readme} (you wrote it; delete it to get the generated card)"
    text = make_card()
    try:
        with atomic_file(readme) as handle:
            handle.write(text)
    except OSError as err:
        spare = Path(tempfile.mkdtemp(prefix="tunebook-card-")) / "README.md"
        spare.write_text(text, encoding="utf-8")
        return spare, f"model card: {folder} is not writable ({err.strerror or err}); written to {spare} instead"
    replaced = {"placeholder": " (it replaces PEFT's empty template card)", "tunebook": " (rewritten)"}.get(kind, "")
    return readme, f"model card: written to {readme}{replaced}"


def choose_files(folder: Path, card: Path) -> tuple[list[tuple[str, Path, int]], list[str]]:
    files, skipped = [("README.md", card, card.stat().st_size)], []
    for entry in sorted(folder.iterdir()):
        if entry.name == "README.md":
            continue
        if entry.is_file() and not entry.name.startswith(".") and any(fnmatch(entry.name, p) for p in SEND):
            files.append((entry.name, entry, entry.stat().st_size))
        else:
            skipped.append(entry.name + ("/" if entry.is_dir() else ""))
    return sorted(files), skipped


def plan_upload(folder: Path, repo: str, hub: str = "hf") -> Plan:
    """The card placed (helpers.share.card) and the files chosen for the model folder `folder` (see model_folder)."""
    from helpers.evaluate.results import EVALUATION_NAME
    from helpers.models.record import read_record
    from helpers.share.card import model_card
    record = read_record(folder)
    evaluation_path = folder / EVALUATION_NAME
    evaluation = read_json(evaluation_path, "evaluation record", "delete it or evaluate again") \
        if evaluation_path.is_file() else None

    def make_card() -> str:
        if record is None:
            raise TunebookError(f"{folder} has no tunebook.json to write the model card from: upload what tunebook's "
                                "train or merge wrote, or put your own README.md there")
        return model_card(record, evaluation, repo, (folder / "adapter_config.json").is_file(), hub)
    card, card_note = place_card(folder, make_card)
    files, skipped = choose_files(folder, card)
    return Plan(folder, card_note, files, skipped)


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return ""


def listing(plan: Plan, where: str) -> str:
    width = max(len(name) for name, _, _ in plan.files)
    lines = [plan.card_note, f"to send to {where}: {len(plan.files)} files, {_size(sum(s for *_, s in plan.files))}"]
    lines += [f"  {name:<{width}}  {_size(size):>9}" for name, _, size in plan.files]
    if plan.skipped:
        lines.append(f"not sent (checkpoints, optimizer states, caches, logs, locks): {', '.join(plan.skipped)}")
    return "\n".join(lines)


@contextlib.contextmanager
def staged(plan: Plan) -> Iterator[Path]:
    """A temporary folder holding exactly the files to send (links, not copies), so the hub libraries upload a
    whole folder and nothing else in the model folder can slip in."""
    with tempfile.TemporaryDirectory(prefix="tunebook-upload-") as tmp:
        for name, path, _ in plan.files:
            try:
                os.symlink(path.resolve(), Path(tmp) / name)
            except OSError:   # no symlinks on this file system
                shutil.copy2(path, Path(tmp) / name)
        yield Path(tmp)


# ---------------------------------------------------------------- the hubs

def _hf_refused(err, repo: str) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    said = (getattr(err, "server_message", None) or str(err)).strip().splitlines()[0][:200]
    if status == 401:
        return "the Hugging Face hub did not accept your token (401): `hf auth login` again with a write token"
    if status == 403:
        return f"your token may not write to {repo} (403): use a token with write access, or a repo under your name"
    return f"the Hugging Face hub refused the upload to {repo} ({status}): {said}"


def ready_hf(repo: str) -> None:
    """A token (the library's own login or HF_TOKEN) and no offline switch, checked before anything is written."""
    import huggingface_hub
    if huggingface_hub.get_token() is None:
        raise TunebookError(HF_NO_TOKEN)
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise TunebookError("HF_HUB_OFFLINE is set, so huggingface_hub sends nothing: unset it to upload")


def send_hf(folder: Path, repo: str, private: bool, endpoint: str | None) -> str:
    """create_repo (kept if it exists) + upload_folder; returns the repo's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    api = HfApi(endpoint=endpoint, token=None)   # token=None: the library's own login or HF_TOKEN
    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(repo_id=url.repo_id, folder_path=folder, commit_message="Upload with tunebook")
    except HfHubHTTPError as err:
        raise TunebookError(_hf_refused(err, repo)) from None
    except ValueError as err:   # e.g. the hub's check of README.md's metadata
        raise TunebookError(f"the Hugging Face hub refused the upload to {repo}: {' '.join(str(err).split())}") \
            from None
    except Exception as err:
        if not _is_network_error(err):
            raise
        raise TunebookError(f"cannot reach {api.endpoint} ({type(err).__name__}): check the network, or pass "
                            "--endpoint (a mirror such as https://hf-mirror.com)") from None
    return str(url)


def _is_network_error(err: BaseException) -> bool:
    """No connection, DNS, timeouts: httpx / httpx2 (huggingface_hub's clients), requests (modelscope's), the OS."""
    bases = {cls.__name__ for cls in type(err).__mro__}
    return isinstance(err, (ConnectionError, TimeoutError)) or bool(bases & {"TransportError", "RequestException"})


def ready_modelscope(repo: str) -> None:
    """The package, OWNER/NAME and a token (`modelscope login` or MODELSCOPE_API_TOKEN)."""
    try:
        from modelscope.hub.api import ModelScopeConfig
    except ImportError:
        raise TunebookError(MS_MISSING) from None
    if "/" not in repo:
        raise TunebookError(f"{repo}: ModelScope needs OWNER/NAME (your user or organisation name first)")
    if not (os.environ.get("MODELSCOPE_API_TOKEN") or ModelScopeConfig.get_cookies()):
        raise TunebookError(MS_NO_TOKEN)


def send_modelscope(folder: Path, repo: str, private: bool, endpoint: str | None) -> str:
    """HubApi.create_repo (kept if it exists) + upload_folder; returns the repo's URL."""
    from modelscope.hub.api import HubApi
    api = HubApi(endpoint=endpoint) if endpoint else HubApi()
    try:
        url = api.create_repo(repo, visibility="private" if private else "public", exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="Upload with tunebook")
    except Exception as err:   # refusals come as ValueError, requests' errors or modelscope.hub.errors
        ours = type(err).__module__.startswith(("requests", "modelscope"))
        if not (ours or isinstance(err, ValueError) or _is_network_error(err)):
            raise
        said = " ".join(str(err).split())[:200]
        raise TunebookError(f"ModelScope refused the upload to {repo} ({type(err).__name__}): {said}") from None
    return str(url or repo)


HUBS = {"hf": (ready_hf, send_hf), "modelscope": (ready_modelscope, send_modelscope)}


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers upload", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("folder", metavar="MODEL_OR_ADAPTER",
                        help="an adapter (train's <output_dir>/adapter) or a merged model folder")
    parser.add_argument("repo", metavar="REPO", help="OWNER/NAME on the hub (created if it does not exist)")
    parser.add_argument("--hub", choices=tuple(HUBS), default="hf", help="Hugging Face (default) or ModelScope")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="write the card and list the files; send nothing")
    parser.add_argument("--endpoint", metavar="URL", help="another hub address (a mirror, a private hub)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", args.repo):
        raise TunebookError(f"{args.repo}: not a repo name; write OWNER/NAME (letters, digits, - _ .)")
    folder = model_folder(args.folder)
    ready, send = HUBS[args.hub]
    if not args.dry_run:
        ready(args.repo)   # no token, no package: one line before anything is written
    plan = plan_upload(folder, args.repo, args.hub)
    where = f"{args.repo} on {'ModelScope' if args.hub == 'modelscope' else 'the Hugging Face hub'}"
    print(listing(plan, where))
    if args.dry_run:
        print("dry run: nothing was sent (run again without --dry-run to upload)")
        return 0
    with staged(plan) as staging:
        url = send(staging, args.repo, args.private, args.endpoint)
    print(f"uploaded {len(plan.files)} files: {url}")
    return 0
