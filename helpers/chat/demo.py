"""`python -m helpers demo`: the chat as a web page (streamlit), the successor of the camp's `streamlit run web_demo.py`.

    python -m helpers demo MODEL [--adapter DIR] [--port 8501] [--host 127.0.0.1] [--bits 4|8] [--system TEXT]

This launcher checks what a learner can get wrong (streamlit missing, a mistyped model path) before anything starts,
then runs `streamlit run helpers/chat/demo_app.py ... -- <model args>` and waits for it. The page itself
(demo_app.py) chats through helpers.chat.session.ChatSession, so it uses the training template and system prompt,
and control tokens never reach the screen. It binds 127.0.0.1: on a shared machine (InternStudio) others cannot
reach it; forward the port with `ssh -L` instead of opening it with --host 0.0.0.0.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from helpers.errors import TunebookError

APP = Path(__file__).with_name("demo_app.py")
INSTALL_HINT = "pip install 'tunebook[demo]' (or .venv/bin/pip install streamlit)"


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options the page needs; the launcher passes them on after streamlit's `--`."""
    parser.add_argument("model", help="merged model folder, base model (with --adapter), or an adapter folder")
    parser.add_argument("--adapter", help="PEFT adapter folder to apply to MODEL (enables base vs tuned side by side)")
    parser.add_argument("--bits", type=int, choices=[4, 8], help="load the base in 4-bit (NF4) or 8-bit")
    parser.add_argument("--system", help="system prompt text (default: the training record's)")


def launcher_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers demo", description="Chat with the model in a web "
                                     "page (streamlit): streaming answers, sampling sliders, base vs tuned.")
    add_model_args(parser)
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501, streamlit's)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; forward it with ssh -L)")
    return parser


def app_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The page's own arguments (what follows `--` on the streamlit command line)."""
    parser = argparse.ArgumentParser(prog="demo_app.py")
    add_model_args(parser)
    return parser.parse_args(argv)


def require_streamlit() -> None:
    if importlib.util.find_spec("streamlit") is None:
        raise TunebookError(f"the web demo needs streamlit, which is not installed: {INSTALL_HINT}")


def resolve_paths(model: str, adapter: str | None) -> tuple[str, str | None]:
    """MODEL and --adapter as the page will load them, checked now so a typo fails here in one line (the chat
    command's message: helpers.models.find.resolve_model), not as a traceback in the browser."""
    from helpers.models.find import resolve_model
    from helpers.models.loading import is_adapter_dir

    if adapter is not None and not is_adapter_dir(adapter):
        reason = "no such folder" if not Path(adapter).exists() else "not an adapter folder (no adapter_config.json)"
        raise TunebookError(f"{adapter}: {reason}")
    if adapter is None and is_adapter_dir(model):
        return model, None          # an adapter folder alone: its base comes from its tunebook.json on loading
    return str(resolve_model(model)), adapter   # a hub name is downloaded here, with progress in this terminal


def streamlit_command(args: argparse.Namespace, model: str, adapter: str | None) -> list[str]:
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", args.host,
               "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
               # no file watcher: nothing here is edited live, and watching needs inotify slots shared machines lack
               "--server.fileWatcherType", "none",
               "--client.toolbarMode", "minimal", "--", model]     # no Deploy button: this is a local demo
    if adapter is not None:
        command += ["--adapter", adapter]
    if args.bits is not None:
        command += ["--bits", str(args.bits)]
    if args.system is not None:
        command += ["--system", args.system]
    return command


def child_env() -> dict:
    """The page imports this same copy of helpers, installed or not (streamlit puts only the script's folder on
    sys.path)."""
    root = str(Path(__file__).resolve().parents[2])
    return os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def main(argv: list[str] | None = None) -> int:
    args = launcher_parser().parse_args(argv)
    require_streamlit()
    model, adapter = resolve_paths(args.model, args.adapter)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"web demo: http://{shown_host}:{args.port}  (the model loads on the first page visit; Ctrl+C stops it)",
          file=sys.stderr, flush=True)
    server = subprocess.Popen(streamlit_command(args, model, adapter), env=child_env())
    try:
        return server.wait()
    except KeyboardInterrupt:       # Ctrl+C reached streamlit too (same process group): let it finish closing
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        raise
