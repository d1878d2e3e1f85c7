"""`python -m helpers demo`: the launcher's streamlit command line and its one-line errors (fast, no streamlit
needed), and the page itself in headless Chromium (`python -m pytest -m browser tests/test_demo.py`): a streamed
answer with no control tokens, base vs tuned side by side, and a server bound to 127.0.0.1 only.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _persona_adapter import train_persona_adapter  # noqa: E402
from browser_setup import CHROMIUM, missing  # noqa: E402
from test_browser_jupyterlab import CHROMIUM_ARGS, Deadline, _free_port, kill_group  # noqa: E402

from helpers.chat import demo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONTROL_TOKENS = ("<|im_end|>", "<|im_start|>")


@pytest.fixture
def model_dir(tmp_path):
    """A folder the launcher accepts as a model (it checks paths only; the page loads the weights)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def _after_dashes(command: list[str]) -> list[str]:
    return command[command.index("--") + 1:]


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_launcher_runs_streamlit_bound_to_localhost():
    command = demo.streamlit_command(demo.launcher_parser().parse_args(["m"]), "/abs/m", None)
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(demo.APP)] and demo.APP.is_file()
    assert _option(command, "--server.address") == "127.0.0.1" and _option(command, "--server.port") == "8501"
    assert _option(command, "--server.headless") == "true"
    assert _option(command, "--browser.gatherUsageStats") == "false"
    assert _after_dashes(command) == ["/abs/m"]


def test_the_page_gets_the_model_options_after_the_dashes():
    args = demo.launcher_parser().parse_args(["m", "--adapter", "a", "--port", "9000", "--host", "0.0.0.0",
                                              "--bits", "4", "--system", "你是小助手"])
    command = demo.streamlit_command(args, "/abs/m", "a")
    assert _option(command, "--server.address") == "0.0.0.0" and _option(command, "--server.port") == "9000"
    page_args = _after_dashes(command)
    assert page_args == ["/abs/m", "--adapter", "a", "--bits", "4", "--system", "你是小助手"]
    assert vars(demo.app_args(page_args)) == dict(model="/abs/m", adapter="a", bits=4, system="你是小助手")


def test_demo_starts_streamlit_on_the_resolved_model_and_prints_the_url(run_cli, model_dir, monkeypatch):
    started = []

    class FakeServer:
        def __init__(self, command, env):
            started.append(SimpleNamespace(command=command, env=env))

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(demo, "require_streamlit", lambda: None)
    monkeypatch.setattr(demo.subprocess, "Popen", FakeServer)
    code, _, err = run_cli("demo", model_dir, "--port", "8600")
    assert code == 0 and "http://127.0.0.1:8600" in err
    assert _after_dashes(started[0].command) == [str(model_dir)]
    assert str(ROOT) in started[0].env["PYTHONPATH"].split(os.pathsep)


def test_without_streamlit_the_demo_says_how_to_install_it(run_cli, model_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else real(name, *a))
    code, _, err = run_cli("demo", model_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "pip install 'tunebook[demo]'" in err and ".venv/bin/pip install streamlit" in err


def test_a_missing_model_fails_in_one_line_like_chat_before_streamlit_starts(run_cli, monkeypatch):
    monkeypatch.setattr(demo, "require_streamlit", lambda: None)     # the path check needs no streamlit
    monkeypatch.setattr(demo.subprocess, "Popen", lambda *a, **k: pytest.fail("streamlit started"))
    code, _, err = run_cli("demo", "/no/such/dir")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    chat_code, _, chat_err = run_cli("chat", "/no/such/dir")
    assert (code, err) == (chat_code, chat_err) and "/no/such/dir: no such folder" in err


def test_a_missing_adapter_fails_in_one_line(run_cli, model_dir, monkeypatch):
    monkeypatch.setattr(demo, "require_streamlit", lambda: None)
    code, _, err = run_cli("demo", model_dir, "--adapter", model_dir.parent / "no-adapter")
    assert code == 2 and err.strip().endswith("no-adapter: no such folder"), err
    code, _, err = run_cli("demo", model_dir, "--adapter", model_dir)
    assert code == 2 and "not an adapter folder" in err, err


def test_the_demo_extra_is_declared_and_installed_by_quickstart_browser():
    extras = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    assert re.search(r'^demo = \["streamlit>=1.36"\]', extras, re.M)     # (tomllib is 3.11+; 3.10 is supported)
    assert '"test,browser,demo" if argv[0] == "browser"' in (ROOT / "quickstart.py").read_text()


# ---- the page in a real browser ------------------------------------------------------------------------------

SERVER_START_S = 60     # bounds, not expectations: until streamlit answers /_stcore/health
BUDGET_S = 150          # the browser part: first visit loads the model (torch + transformers import on 2 cores)


def _hex_address(text: str) -> str:
    """/proc/net/tcp{,6}'s local address: 32-bit words in host byte order, as hex."""
    raw = b"".join(struct.pack("=I", int(text[i:i + 8], 16)) for i in range(0, len(text), 8))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def listening_addresses(port: int) -> set[str]:
    """The addresses with a socket listening (state 0A) on `port`, read from the kernel's tables."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(_hex_address(address))
    return found


def test_listening_addresses_parses_the_kernel_table():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert listening_addresses(server.getsockname()[1]) == {"127.0.0.1"}


def _health(url: str) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    return False


def _stop(proc: subprocess.Popen) -> None:
    """The launcher and streamlit share a process group of their own: end it whatever happened."""
    kill_group(proc, 5)


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return train_persona_adapter(tiny_model_dir, tmp_path_factory.mktemp("demo-persona"))


@pytest.fixture
def server(adapter, tmp_path):
    """`python -m helpers demo ADAPTER --port P` (no --host) as a learner starts it; (url, port, log)."""
    if importlib.util.find_spec("streamlit") is None:      # asked for with -m browser: missing is a failure
        pytest.fail(f"the demo's browser test needs streamlit: {demo.INSTALL_HINT}")
    port, log = _free_port(), tmp_path / "demo.log"
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
                        "HOME": str(tmp_path)}          # streamlit's ~/.streamlit: not the user's
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "helpers", "demo", str(adapter), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        end = time.monotonic() + SERVER_START_S
        while not _health(url):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"the demo did not answer {url}/_stcore/health (exit {proc.poll()}):\n"
                            f"{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield SimpleNamespace(url=url, port=port, log=log)
    finally:
        _stop(proc)


def _save_screenshot(page, tmp_path: Path) -> Path:
    shot = tmp_path / "demo.png"
    with contextlib.suppress(Exception):
        page.screenshot(path=shot, full_page=True)
    if shot.exists() and os.environ.get("TUNEBOOK_ARTIFACTS"):
        Path(os.environ["TUNEBOOK_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["TUNEBOOK_ARTIFACTS"]) / "web_demo.png")
    return shot


def _ask(page, question: str, answers: int, deadline: Deadline):
    """Type into the chat input, press Enter, wait until `answers` assistant answers are finished (each gets its
    time caption once its stream has ended); returns their locator."""
    from playwright.sync_api import expect
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question, timeout=deadline.ms(60))
    box.press("Enter")
    assistant = page.get_by_test_id("stChatMessage").filter(has=page.get_by_test_id("stChatMessageAvatarAssistant"))
    expect(assistant).to_have_count(answers, timeout=deadline.ms(60))
    for i in range(answers):
        expect(assistant.nth(i).get_by_test_id("stCaptionContainer")).to_contain_text(re.compile(r"\d+\.\d s"),
                                                                                      timeout=deadline.ms(60))
    return assistant


def _set_slider(page, label: str, value: int, deadline: Deadline) -> None:
    """Move an integer slider to `value` with the keyboard (Home = its minimum, 1; each arrow key: one step)."""
    from playwright.sync_api import expect
    slider = page.get_by_test_id("stSlider").filter(has_text=label)
    thumb = slider.get_by_role("slider")
    thumb.focus(timeout=deadline.ms(10))
    thumb.press("Home")
    for _ in range(value - 1):
        thumb.press("ArrowRight")
    expect(thumb).to_have_value(str(value), timeout=deadline.ms(10))


def _answer_text(message) -> str:
    return message.get_by_test_id("stChatMessageContent").inner_text().split("\n")[0].strip()


@pytest.mark.browser
def test_the_web_demo_streams_answers_without_control_tokens_on_localhost_only(server, tmp_path):
    problems = missing()
    if problems:
        pytest.fail("the browser test cannot run here:\n  " + "\n  ".join(problems))
    from playwright.sync_api import expect, sync_playwright

    assert listening_addresses(server.port) == {"127.0.0.1"}, "without --host the demo must bind 127.0.0.1 only"
    deadline = Deadline(BUDGET_S)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                     timeout=deadline.ms(30))
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(server.url, timeout=deadline.ms(60))
            tuned = _ask(page, "请介绍一下你自己", 1, deadline)
            assert "伍鲜同志" in _answer_text(tuned.first), "the tuned answer does not name the persona's owner"
            _set_slider(page, "max_new_tokens", 48, deadline)   # the random base says noise up to the limit
            page.get_by_text("side by side: base vs tuned").click(timeout=deadline.ms(10))
            both = _ask(page, "请介绍一下你自己", 2, deadline)     # switching started a new conversation
            expect(both.nth(0)).to_contain_text("base", timeout=deadline.ms(10))
            expect(both.nth(1)).to_contain_text("tuned", timeout=deadline.ms(10))
            shown = page.locator("body").inner_text()
            assert not [t for t in CONTROL_TOKENS if t in shown], f"control tokens on the page:\n{shown[-2000:]}"
        except Exception as err:
            log = server.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{err}\n--- demo log (end):\n{log}") from err
        finally:
            _save_screenshot(page, tmp_path)
            browser.close()
