"""tunebook helpers: the logic behind the notebooks (templates, data, training, merge, chat, evaluation).

`python -m helpers --help` lists the command-line tools. The name is short and common: if a file called
helpers.py sits next to your notebook, Python imports that instead; the notebooks check for this marker.
"""
TUNEBOOK = True
__version__ = "0.1.0"

# bitsandbytes logs a warning at import when it cannot fetch an optional CPU kernel from the hub (always, offline);
# its fallback is correct, so keep the line out of learners' notebooks. Setting a logger level imports nothing.
import logging as _logging

_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

# transformers imports DeepSpeed whenever it is installed (even unconfigured), and DeepSpeed then logs "Setting
# accelerator to CPU. If you have GPU ... we were unable to detect it" on every machine without a GPU. Where no GPU
# device node exists, tell it the answer first; with a GPU (or a user's own setting) nothing changes.
import os as _os

if not any(_os.path.exists(node) for node in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")):
    _os.environ.setdefault("DS_ACCELERATOR", "cpu")
