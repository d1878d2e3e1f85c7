"""A real JupyterLab, driven in headless Chromium: 01_persona_data runs from the Run menu and its form works.

Run it with `python -m pytest -m browser` (needs Debian's chromium and the playwright package:
`python tests/browser_setup.py`). The screenshot lands in artifacts/jupyterlab_01_persona_data.png, also when
the test fails.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from browser_setup import CHROMIUM, missing

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK = "01_persona_data.ipynb"
SCREENSHOT = ROOT / "artifacts" / "jupyterlab_01_persona_data.png"
# The flags keep Chromium off the (closed) network and out of the root sandbox it cannot use in containers.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
# Bounds, not expectations (about 20 s in all on 2 busy cores): server start + test body + shutdown < 3 minutes.
SERVER_START_S = 40    # until jupyter lab answers /api/status
BUDGET_S = 100         # the test body (browser + notebook); each wait gets what is left of it
KERNEL_IDLE = "Python 3 (ipykernel) | Idle"
BAD_RENDERING = ["Error displaying widget", "Error rendering output", "Failed to load model class"]
# Lab settings for this throwaway server (a temporary JUPYTER_CONFIG_DIR holds them; the learner's are untouched).
LAB_SETTINGS = {
    # no news/update toast over the notebook, and no request to the internet
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # the notebook is the committed file in the repository: never write outputs back into it
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}

# True once Run All has finished: the kernel is idle, no cell is queued ([*]), and every code cell has run or a
# cell shows a traceback (the kernel then drops the queued cells and their prompts go back to [ ]).
RUN_FINISHED_JS = r"""() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const status = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
  const bar = document.querySelector('#jp-main-statusbar')?.textContent ?? '';
  if (status !== 'idle' || !bar.includes('KERNEL_IDLE')) return false;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent);
  if (!prompts.length || prompts.some(p => p.includes('*'))) return false;
  const stderr = [...panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')];
  return prompts.every(p => /\[\d+\]/.test(p)) || stderr.some(o => o.textContent.includes('Traceback'));
}""".replace("KERNEL_IDLE", KERNEL_IDLE)
CELLS_JS = r"""() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')].map(c => ({
  prompt: c.querySelector('.jp-InputPrompt')?.textContent.trim() ?? '',
  source: (c.querySelector('.jp-InputArea-editor')?.textContent ?? '').slice(0, 80),
  stderr: [...c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
            .map(o => o.textContent).join('\n'),
}))"""
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w*(Error|Exception)\b", re.M)


@dataclass
class Lab:
    url: str                # http://127.0.0.1:PORT
    token: str
    workdir: Path           # the kernel's TUNEBOOK_WORKDIR
    log: Path               # the server's stdout+stderr

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no server log)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(lab_url: str, token: str, path: str, method: str = "GET", timeout: float = 5) -> int:
    request = urllib.request.Request(lab_url + path, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def _write_jupyter_home(home: Path, kernel_env: dict) -> dict:
    """Config, data, runtime and kernelspec folders of our own; returns the environment variables naming them."""
    spec = home / "path" / "kernels" / "python3"     # found before the venv's own python3 spec (JUPYTER_PATH first)
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python", "env": kernel_env}))
    for plugin, values in LAB_SETTINGS.items():
        path = home / "config" / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return {"JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_PATH": str(home / "path"),
            "IPYTHONDIR": str(home / "ipython")}


def _stop(proc: subprocess.Popen, url: str, token: str) -> None:
    """Ask the server to shut its kernels down and exit; then end its process group whatever happened.

    Kernels run in sessions of their own (jupyter_client starts them so), so the API shutdown is what stops them;
    if the server has to be killed, ipykernel exits by itself once its parent (JPY_PARENT_PID) is gone.
    """
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            _api(url, token, "/api/shutdown", method="POST")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    kill_group(proc, 3)


def kill_group(proc: subprocess.Popen, wait_s: float) -> None:
    """SIGTERM, then SIGKILL, to the process group `proc` leads (started with start_new_session=True)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)


@pytest.fixture
def lab(tmp_path):
    token, port = secrets.token_hex(16), _free_port()
    url, workdir, log = f"http://127.0.0.1:{port}", tmp_path / "work", tmp_path / "jupyterlab.log"
    kernel_env = {"TUNEBOOK_SMOKE": "1", "TUNEBOOK_WORKDIR": str(workdir), "HF_HUB_OFFLINE": "1",
                  "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg",
                  # this checkout's helpers, not whichever copy the environment has installed
                  "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env = os.environ | kernel_env | _write_jupyter_home(tmp_path / "jupyter", kernel_env)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={NOTEBOOKS}", "--ServerApp.allow_root=True",   # CI runs as root
               f"--FileCheckpoints.root_dir={tmp_path / 'checkpoints'}"]             # not inside notebooks/
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)        # its own process group, killed as a whole
    try:
        end = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode} before answering:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if _api(url, token, "/api/status", timeout=2) == 200:
                    break
            if time.monotonic() > end:
                pytest.fail(f"jupyter lab did not answer {url}/api/status within {SERVER_START_S}s:\n"
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Lab(url, token, workdir, log)
    finally:
        _stop(proc, url, token)


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def ms(self, cap_s: float) -> float:
        """A Playwright timeout: at most cap_s, never past the test's budget."""
        return 1000 * max(1.0, min(cap_s, self.end - time.monotonic()))


@pytest.fixture
def sync_playwright():
    """Playwright's entry point, after checking that Chromium and playwright are here (before any server starts)."""
    SCREENSHOT.unlink(missing_ok=True)          # never leave an earlier run's picture to be mistaken for this one
    problems = missing()
    if problems:    # asked for with -m browser, so a missing browser is a failure, not a skip
        pytest.fail("the browser test cannot run here:\n  " + "\n  ".join(problems) +
                    "\n(python tests/browser_setup.py installs Chromium as root)")
    from playwright.sync_api import sync_playwright
    return sync_playwright


def _diagnosis(page, lab: Lab, console: list[str]) -> str:
    try:
        cells = page.evaluate(CELLS_JS)
        text = page.locator("body").inner_text(timeout=5000)
    except Exception as err:            # the page itself may be what broke
        cells, text = [], f"(page unreadable: {err})"
    cell_lines = "\n".join(f"  {c['prompt']} {c['source']!r}" + (f"\n    stderr: {c['stderr'][-800:]}"
                                                                  if c["stderr"] else "") for c in cells)
    return (f"\n--- code cells (prompt, source start):\n{cell_lines}\n--- page text (end):\n{text[-2500:]}"
            f"\n--- browser console errors:\n" + "\n".join(console[-20:]) +
            f"\n--- jupyter lab log (end):\n{lab.log_tail()}\n--- screenshot: {SCREENSHOT}")


@contextlib.contextmanager
def _step(name: str, page, lab: Lab, console: list[str]):
    from playwright.sync_api import Error as PlaywrightError
    try:
        yield
        return
    except (PlaywrightError, AssertionError) as err:
        message = f"{name}: {err}{_diagnosis(page, lab, console)}"
    raise pytest.fail.Exception(message, pytrace=False) from None    # one clear message, no chained traceback


def _click_menu(page, menu: str, command: str, timeout_ms: float) -> None:
    page.locator("#jp-MainMenu").get_by_role("menuitem", name=menu, exact=True).click(timeout=timeout_ms)
    page.locator(f'.lm-Menu li[data-command="{command}"]').click(timeout=timeout_ms)


def _read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.browser
def test_persona_notebook_runs_and_its_form_works_in_jupyterlab(sync_playwright, lab):
    from playwright.sync_api import expect
    deadline = Deadline(BUDGET_S)
    committed = hashlib.sha256((NOTEBOOKS / NOTEBOOK).read_bytes()).hexdigest()
    persona_path = lab.workdir / "data" / "persona.jsonl"
    console: list[str] = []
    SCREENSHOT.parent.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                     timeout=deadline.ms(30))
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        try:
            with _step("open the notebook and wait for an idle kernel", page, lab, console):
                page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}", timeout=deadline.ms(60))
                # the status bar names the kernel once it is connected (before that the notebook says idle too)
                expect(page.locator("#jp-main-statusbar")).to_contain_text(KERNEL_IDLE, timeout=deadline.ms(60))
                expect(panel.locator(".jp-Cell")).to_have_count(len(nbformat.read(NOTEBOOKS / NOTEBOOK, 4).cells),
                                                                timeout=deadline.ms(10))

            with _step("Edit > Clear Outputs of All Cells (so every output below comes from this run)",
                       page, lab, console):
                _click_menu(page, "Edit", "editmenu:clear-all", deadline.ms(15))
                expect(panel.locator(".jp-OutputArea-output")).to_have_count(0, timeout=deadline.ms(15))

            with _step("Run > Run All Cells", page, lab, console):
                _click_menu(page, "Run", "runmenu:run-all", deadline.ms(15))
                page.wait_for_function(RUN_FINISHED_JS, timeout=deadline.ms(120), polling=500)
                failed = [c for c in page.evaluate(CELLS_JS)
                          if TRACEBACK.search(c["stderr"]) or not re.fullmatch(r"\[\d+\]:", c["prompt"])]
                if failed:
                    raise AssertionError("cells failed or never ran: " + "; ".join(
                        f"{c['prompt']} {c['source']!r}: {c['stderr'][-600:]}" for c in failed))

            with _step("the form and the record count after Run All", page, lab, console):
                text = page.locator("body").text_content()
                assert not [bad for bad in BAD_RENDERING if bad in text], \
                    f"rendering errors on the page: {[bad for bad in BAD_RENDERING if bad in text]}"
                button = panel.get_by_role("button", name="生成", exact=True)
                expect(button).to_be_visible(timeout=deadline.ms(10))
                for label in ("你的名字", "小助手名字", "开发者", "模型描述", "语言", "自我认知条数", "自我认知占比"):
                    expect(panel.get_by_label(label, exact=True)).to_be_visible(timeout=deadline.ms(5))
                count = re.search(r"训练记录 (\d+) 条，其中不同的问题 (\d+) 个；held-out 问题 (\d+) 个",
                                  panel.text_content())
                assert count, "the record count line (训练记录 N 条 ...) is not in the notebook's outputs"
                # the kernel wrote into the temporary work folder, and the notebook counted that file
                assert int(count.group(1)) == len(_read_records(persona_path)) > 0

            with _step("change the name and the count, click 生成, see the new summary", page, lab, console):
                form = panel.locator(".widget-vbox", has=page.get_by_role("button", name="生成", exact=True))
                summary = form.locator(".widget-html").last
                name = panel.get_by_label("你的名字", exact=True)
                old_name = name.input_value()
                name.fill("测试员小王")
                name.press("Tab")                          # text fields send their value on change too
                persona_n = panel.get_by_label("自我认知条数", exact=True)
                # a count unlike the one shown, so the summary below can only come from this click (with the
                # profile's own count the first run's summary matched at once and the old file was read)
                new_n = int(persona_n.input_value()) + 7
                persona_n.fill(str(new_n))
                persona_n.press("Tab")                     # IntText sends its value on change, not per key
                button.click(timeout=deadline.ms(10))
                expect(summary).to_contain_text(f"persona records: {new_n} ", timeout=deadline.ms(30))
                shown = summary.text_content()
                records = _read_records(persona_path)
                assert f"persona set: {len(records)} records -> {persona_path}" in shown, shown
                texts = [json.dumps(r, ensure_ascii=False) for r in records]
                assert old_name and not [t for t in texts if old_name in t], f"{old_name} is still in the records"
                assert [t for t in texts if "测试员小王" in t], "the new name is not in the regenerated records"
                form.evaluate("e => e.scrollIntoView({block: 'center'})")   # the whole form in the screenshot
        finally:
            with contextlib.suppress(Exception):
                page.screenshot(path=SCREENSHOT)
            browser.close()
    assert hashlib.sha256((NOTEBOOKS / NOTEBOOK).read_bytes()).hexdigest() == committed, \
        f"JupyterLab wrote into the committed {NOTEBOOK}"
