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
