"""`report_to`: a dashboard for the Trainer's logged loss, learning rate and gradient norm, besides loss.jsonl.

transformers 5 reads each integration's log folder from the environment (TrainingArguments has no logging_dir any
more), so a run points it at `<output_dir>/logs` for as long as it trains: TensorBoard event files, SwanLab's and
Trackio's local logs and wandb's run folder stay beside the checkpoints, where `%tensorboard --logdir` finds them.
A missing package is refused before the model loads, naming the pip command.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Iterator

from helpers.train.config_rules import ConfigError

# setting -> (the package transformers' integration imports, the variable that sets its local log folder)
DASHBOARDS = {
    "tensorboard": ("tensorboard", "TENSORBOARD_LOGGING_DIR"),
    "swanlab": ("swanlab", "SWANLAB_LOG_DIR"),
    "trackio": ("trackio", "TRACKIO_DIR"),
    "wandb": ("wandb", "WANDB_DIR"),
}
CHOICES = ("none", *DASHBOARDS)
LOG_FOLDER = "logs"


def require_dashboard(report_to: str) -> None:
    """ConfigError naming `pip install PACKAGE` when the chosen dashboard's package is not installed."""
    if report_to == "none":
        return
    package = DASHBOARDS[report_to][0]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"report_to: {report_to} needs the {package} package, which is not installed: "
                          f"pip install {package} (or set report_to: none)")


def log_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / LOG_FOLDER


@contextlib.contextmanager
def dashboard_logs(report_to: str, output_dir: str | os.PathLike) -> Iterator[Path | None]:
    """Point the dashboard's log folder at <output_dir>/logs while the block builds the Trainer and trains; the
    variable is restored afterwards, so the next run in the same notebook kernel gets its own folder."""
    if report_to == "none":
        yield None
        return
    variable, folder = DASHBOARDS[report_to][1], log_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get(variable)
    os.environ[variable] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous
