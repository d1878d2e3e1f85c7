"""`python -m helpers run-all`: the README's main job. Executes the numbered notebooks in order, headless (nbclient),
into a run folder -- on a GPU with the camp's model, on a CPU with SmolLM2-135M-Instruct and the CPU recipes -- and
prints each part's time, the persona answers before and after training, the before/after evaluation table
(held-out identity, 复读机 rate, answer quality) and where the executed notebooks, the adapter and the merged model
are. --smoke runs the tests' tiny random model instead (a minute; answers are noise)."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from helpers.errors import TunebookError
from helpers.io import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
KERNEL_LOG_LEVEL = "ERROR"   # kernel start-up errors still show; its warnings are about this machine's own sockets
NOTEBOOKS = ["00_environment", "01_persona_data", "02_colorist_dataset", "03_qlora_training", "04_merge_and_chat",
             "05_multimodal_llava"]


def run_notebook(source: Path, target: Path, env: dict, timeout: int = 1800) -> float:
    """Execute `source` in a fresh kernel whose working folder is the notebooks folder; save it to `target`."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(source, as_version=4)
    # The kernel's own log (not the notebook's output) would print ipykernel's "running over TCP without encryption"
    # to the terminal for every notebook; a kernel on this machine, talking to this process, has nothing to act on.
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(source.parent)}},
                            extra_arguments=[f"--IPKernelApp.log_level={KERNEL_LOG_LEVEL}"])
    started = time.time()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client.execute()
    except CellExecutionError as err:
        nbformat.write(notebook, target)
        raise TunebookError(f"{source.name} failed; the executed notebook with the error is {target}\n"
                            f"{str(err)[-2000:]}") from None
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    nbformat.write(notebook, target)
    return time.time() - started


def summary(workdir: Path) -> list[str]:
    lines = []
    samples = read_jsonl(workdir / "train-persona" / "chat_samples.jsonl")
    if samples:
        question = samples[0]["input"]
        for when in ("before training", "after training"):
            hit = next((s for s in samples if s["input"] == question and s["when"] == when), None)
            if hit:
                lines.append(f"{when:<16} 问：{question}  答：{hit['output'][:120]}")
    table = workdir / "eval-persona.txt"
    if table.is_file():
        lines += ["", "evaluation (04_merge_and_chat), before -> after training:", table.read_text(encoding="utf-8")]
    swatches = workdir / "llava" / "eval-swatches.txt"
    if swatches.is_file():
        lines += ["", "LLaVA swatches (05_multimodal_llava), held-out colours, before -> after training:",
                  swatches.read_text(encoding="utf-8")]
    for label, path in (("adapter", workdir / "train-persona" / "adapter"), ("merged model", workdir / "merged-persona"),
                        ("merged LLaVA", workdir / "llava" / "merged")):
        if path.exists():
            lines.append(f"{label:<16} {path}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers run-all", description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/<date-time>)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these notebooks (names without .ipynb)")
    parser.add_argument("--smoke", action="store_true", help="the tests' smoke profile: tiny random model, few steps")
    args = parser.parse_args(argv)
    import torch
    gpu = torch.cuda.is_available()
    smoke = args.smoke
    run_dir = (args.out or ROOT / "runs" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    workdir = run_dir / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"TUNEBOOK_WORKDIR": str(workdir), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                       os.environ.get("PYTHONPATH")]))}
    if smoke:
        env["TUNEBOOK_SMOKE"] = "1"
    else:
        os.environ.pop("TUNEBOOK_SMOKE", None)   # a smoke setting left in the shell must not pick the tiny model
    which = "smoke" if smoke else "gpu" if gpu else "cpu"
    print(f"running the notebooks on the {which} profile into {run_dir}", flush=True)
    started = time.time()
    if which == "cpu":
        # The first model fetch and conversion is a part of its own (once per machine; cached afterwards).
        from helpers.notebook.cells import choose_model
        os.environ["TUNEBOOK_WORKDIR"] = str(workdir)   # where a tiny fallback model would be built
        choice = choose_model("auto")
        print(f"  {'model ' + choice.name:<22} ok  {time.time() - started:6.1f} s  ({choice.path})", flush=True)
        if choice.tiny:
            print(choice.why, flush=True)
    for name in args.only or NOTEBOOKS:
        source = ROOT / "notebooks" / f"{name}.ipynb"
        if not source.is_file():
            raise TunebookError(f"{source} not found")
        seconds = run_notebook(source, run_dir / f"{name}.ipynb", env)
        print(f"  {name:<22} ok  {seconds:6.1f} s", flush=True)
    print(f"done in {time.time() - started:.0f} s")
    for line in summary(workdir):
        print(line)
    print(f"executed notebooks: {run_dir}")
    return 0
