"""What training shows while it runs: a notebook widget (progress, loss curve, lr, tokens/s, memory, chat
samples) or, outside a notebook, one plain log line per logging step."""
from __future__ import annotations

import html
import sys
import time
from collections import deque

from transformers import TrainerCallback


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except ImportError:
        return False
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def memory_now() -> tuple[str, float, float]:
    """(device, in use GB, peak GB): CUDA allocator on GPU, process RSS on CPU."""
    import torch
    if torch.cuda.is_available():
        return "GPU", torch.cuda.memory_allocated() / 2**30, torch.cuda.max_memory_allocated() / 2**30
    from helpers.train.memory_plan import peak_rss_gib, rss_bytes
    return "RAM", rss_bytes() / 2**30, peak_rss_gib()


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class TokenMeter:
    """Counts what the collator hands to the model: real tokens, trained tokens, computed positions (with padding)."""

    def __init__(self):
        self.tokens = 0
        self.trained = 0
        self.computed = 0

    def observe(self, item: dict) -> None:
        if "rows" in item:
            lengths = [sum(len(s) for s in row) for row in item["rows"]]
            samples = [s for row in item["rows"] for s in row]
            self.computed += len(lengths) * max(lengths)
        else:
            samples = item["samples"]
            self.computed += len(samples) * max(len(s) for s in samples)
        self.tokens += sum(len(s) for s in samples)
        self.trained += sum(s.trained_tokens for s in samples)

    def observe_batch(self, batch: dict) -> None:
        """For collators outside tunebook (padded tensors with an attention mask)."""
        self.tokens += int(batch["attention_mask"].sum())
        self.trained += int((batch["labels"] != -100).sum())
        self.computed += batch["labels"].numel()


class StepRate:
    """tokens/s and seconds per optimizer step, averaged over the last `window` optimizer steps.

    Why a window of steps and not "since the last print": the collator counts a batch when it is built, chat
    samples pause training, and one step may be short or long; a per-interval figure then swings (0, 61, 866 tok/s
    for steady work). Over a fixed window of whole steps those effects average out, and the ETA uses the same
    figure, so the two never disagree.
    """

    def __init__(self, window: int = 20):
        self.points: deque[tuple[float, int, int]] = deque(maxlen=window + 1)   # (time, step, tokens)

    def add(self, now: float, step: int, tokens: int) -> None:
        if self.points and step <= self.points[-1][1]:   # same step seen again (train end): keep the first time
            return
        self.points.append((now, step, tokens))

    def _span(self) -> tuple[float, int, int] | None:
        if len(self.points) < 2:
            return None
        (t0, s0, n0), (t1, s1, n1) = self.points[0], self.points[-1]
        return max(t1 - t0, 1e-9), s1 - s0, n1 - n0

    def tokens_per_second(self) -> float | None:
        """None until one optimizer step has finished."""
        span = self._span()
        return None if span is None else span[2] / span[0]

    def seconds_per_step(self) -> float | None:
        span = self._span()
        return None if span is None else span[0] / span[1]

    def eta(self, steps_left: int) -> float | None:
        per_step = self.seconds_per_step()
        return None if per_step is None else per_step * max(0, steps_left)


class LiveView(TrainerCallback):
    """One view for the whole run; `samples` is shared with the chat-sample callback."""

    def __init__(self, meter: TokenMeter, samples: list[dict], notebook: bool | None = None, out=None):
        self.meter, self.samples = meter, samples
        self.notebook = in_notebook() if notebook is None else notebook
        self.out = out or sys.stdout
        self.losses: list[tuple[int, float]] = []
        self.started = time.time()
        self.rate = StepRate()
        self.lr = 0.0
        self.widgets = None

    # -- trainer events
    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        self.rate = StepRate()
        self.rate.add(self.started, state.global_step, self.meter.tokens)
        if self.notebook:
            self._build_widgets(state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.rate.add(time.time(), state.global_step, self.meter.tokens)
        if self.widgets:
            self._update_widgets(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))
        self.lr = logs.get("learning_rate", self.lr)
        if self.widgets:
            self._update_widgets(state, redraw=True)
        elif "loss" in logs and state.is_world_process_zero:
            print(self.status_line(state), file=self.out, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.widgets:
            self._update_widgets(state, redraw=True)

    # -- text
    def status_line(self, state) -> str:
        elapsed = time.time() - self.started
        speed, eta = self.rate.tokens_per_second(), self.rate.eta(state.max_steps - state.global_step)
        kind, used, peak = memory_now()
        loss = f"{self.losses[-1][1]:.4f}" if self.losses else "-"
        return (f"step {state.global_step}/{state.max_steps} | loss {loss} | lr {self.lr:.2e} | "
                f"{'measuring' if speed is None else f'{speed:,.0f}'} tok/s | {kind} {used:.2f} GB (peak {peak:.2f}) | "
                f"elapsed {_duration(elapsed)} | ETA {'-' if eta is None else _duration(eta)}")

    # -- notebook widgets
    def _build_widgets(self, max_steps: int):
        import ipywidgets as w
        from IPython.display import display
        self.widgets = {"bar": w.IntProgress(min=0, max=max(1, max_steps), description="训练", bar_style="info"),
                        "status": w.HTML(), "plot": w.Output(), "samples": w.HTML()}
        display(w.VBox([self.widgets["bar"], self.widgets["status"], self.widgets["plot"], self.widgets["samples"]]))

    def _update_widgets(self, state, redraw: bool = False):
        self.widgets["bar"].max = max(1, state.max_steps)
        self.widgets["bar"].value = state.global_step
        self.widgets["status"].value = f"<code>{html.escape(self.status_line(state))}</code>"
        if self.samples:
            rows = "".join(f"<tr><td>{s['step']}</td><td>{html.escape(s['input'])}</td>"
                           f"<td style='white-space:pre-wrap'>{html.escape(s['output'])}</td></tr>"
                           for s in self.samples[-len(set(x['input'] for x in self.samples)):])
            self.widgets["samples"].value = ("<b>最新对话样例</b><table><tr><th>step</th><th>问题</th><th>回答</th></tr>"
                                             f"{rows}</table>")
        if redraw and self.losses:
            self._draw()

    def _draw(self):
        import matplotlib.pyplot as plt
        from IPython.display import display
        with self.widgets["plot"]:
            self.widgets["plot"].clear_output(wait=True)
            figure, axis = plt.subplots(figsize=(6, 2.6))
            steps, values = zip(*self.losses)
            axis.plot(steps, values, marker="." if len(steps) < 50 else None)
            axis.set_xlabel("step")
            axis.set_ylabel("loss")
            axis.grid(alpha=0.3)
            figure.tight_layout()
            display(figure)
            plt.close(figure)
