"""The Colorist dataset: load it (Hugging Face, ModelScope, a local file or the offline synthetic set), split off
a held-out set, and write XTuner conversation files for training and evaluation.

This lives in helpers (not data_gen) because notebook 02 calls `load_colorist` directly; data_gen/colorist.py
is the thin command-line wrapper around the same functions.

Records stay in Colorist form `{"description": "Name: text", "color": "#rrggbb"}` until written, so a notebook
can show the colour names; conversion is helpers.data.formats.normalise(record, "colorist"), i.e. exactly XTuner's
colors_map_fn (input = text after the first colon, system = SYSTEM_TEMPLATES["colorist"]).
"""
from __future__ import annotations

import os
import random
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from helpers.data.colorist_synth import named_colours, synthetic_records
from helpers.data.colors import is_hex_colour
from helpers.errors import TunebookError
from helpers.data.formats import RecordError, load_conversations, normalise
from helpers.data.records import Issue, Record, read_records
from helpers.io import write_jsonl, write_records

SOURCES = ("auto", "hf", "modelscope", "local", "synthetic")
HF_DATASET = "burkelibbey/colors"          # what XTuner's colorist configs load
MODELSCOPE_DATASET = "fanqiNO1/colors"     # the ModelScope mirror named in XTuner's quickstart
# `git clone https://huggingface.co/datasets/burkelibbey/colors` (XTuner quickstart) leaves these beside you.
LOCAL_CANDIDATES = ("colors/train.jsonl", "colors/colors.json")
PROBE_TIMEOUT = 5.0     # seconds to decide a hub is unreachable; datasets alone retries for ~25 s without network
DEFAULT_SYNTHETIC = 2000


class ColoristDataError(TunebookError, ValueError):
    """Bad Colorist input (file, records, options): exit 2."""


class SourceUnavailable(TunebookError):
    """A download source cannot be used here (no network, package missing); not the learner's data: exit 1."""
    exit_code = 1


# --------------------------------------------------------------------------- record checks

def _check(item: Record | Issue) -> tuple[dict | None, Issue | None]:
    """A Colorist record that colors_map_fn turns into a usable turn, or the Issue saying why not."""
    if isinstance(item, Issue):
        return None, item
    try:
        conversation = normalise(item.value, "colorist")
    except RecordError as err:
        return None, Issue(item.where, str(err))
    colour = conversation.turns[0].output
    if not is_hex_colour(colour.strip()):
        return None, Issue(item.where, f'color {colour!r} is not a hex colour like "#66ccff" (# and 6 hex digits)')
    return item.value, None


def _checked(items: Iterable[Record | Issue], limit: int | None) -> tuple[list[dict], list[Issue]]:
    records, issues = [], []
    for count, item in enumerate(items):
        if limit is not None and count >= limit:
            break
        record, issue = _check(item)
        if issue is not None:
            issues.append(issue)
        else:
            records.append(record)
    return records, issues


def _issue_report(issues: list[Issue], shown: int = 5) -> str:
    lines = [str(issue) for issue in issues[:shown]]
    if len(issues) > shown:
        lines.append(f"... and {len(issues) - shown} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------- sources

def resolve_local_path(path: str | os.PathLike | None) -> Path:
    """A file; a folder holding train.jsonl or colors.json (a cloned dataset); or, with no path, ./colors/..."""
    if path is None:
        for candidate in LOCAL_CANDIDATES:
            if Path(candidate).is_file():
                return Path(candidate)
        raise ColoristDataError(f"no local Colorist file: none of {', '.join(LOCAL_CANDIDATES)} exists under "
                                f"{Path.cwd()}. Give --path FILE (.jsonl or .json with description/color records) "
                                f"or clone the data: git clone https://huggingface.co/datasets/{HF_DATASET}")
    path = Path(path)
    if path.is_dir():
        for name in ("train.jsonl", "colors.json"):
            if (path / name).is_file():
                return path / name
        raise ColoristDataError(f"{path}: a folder without train.jsonl or colors.json; give the data file itself")
    return path


def _load_local(path: str | os.PathLike | None, limit: int | None) -> tuple[list[dict], list[str]]:
    file = resolve_local_path(path)
    records, issues = _checked(read_records(file), limit)
    if issues:  # the learner's own file: every problem is theirs to fix, so refuse rather than drop rows
        raise ColoristDataError(f"{len(issues)} bad record(s) in {file}; each record needs "
                                f'"description": "Name: what it looks like" and "color": "#rrggbb"\n'
                                + _issue_report(issues))
    return records, [f"local: read {len(records)} records from {file}"]


def _unreachable(url: str, timeout: float) -> str | None:
    """None when `url` answers at all (any HTTP status), else why not. urllib honours HTTP(S)_PROXY."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as err:
        return str(getattr(err, "reason", err))


def _hub_rows(rows: Iterable[Any], name: str, limit: int | None) -> tuple[list[dict], list[str]]:
    items = (Record(f"{name}[{index}]", index, dict(row)) for index, row in enumerate(rows))
    records, issues = _checked(items, limit)
    notes = [f"{name}: {len(records)} records"]
    if issues:  # published data we cannot fix: drop the few bad rows and say so
        notes.append(f"{name}: dropped {len(issues)} unusable row(s), e.g. {issues[0]}")
    if not records:
        raise SourceUnavailable(f"{name} gave no usable Colorist records\n{_issue_report(issues)}")
    return records, notes


def _load_hf(limit: int | None, timeout: float) -> tuple[list[dict], list[str]]:
    import datasets  # heavy; only when this source is used
    from huggingface_hub import constants
    offline = bool(datasets.config.HF_HUB_OFFLINE)
    if not offline:
        problem = _unreachable(constants.ENDPOINT, timeout)
        if problem:
            raise SourceUnavailable(f"Hugging Face hub {constants.ENDPOINT} is not reachable ({problem}). With a "
                                    "cached copy set HF_HUB_OFFLINE=1; a mirror: HF_ENDPOINT=https://hf-mirror.com")
    split = "train" if limit is None else f"train[:{limit}]"
    try:
        dataset = datasets.load_dataset(HF_DATASET, split=split)
    except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, HTTP errors...)
        why = " (offline mode is on: HF_HUB_OFFLINE is set, so only a cached copy can be used)" if offline else ""
        raise SourceUnavailable(f"could not load {HF_DATASET} from the Hugging Face hub{why}: "
                                f"{type(err).__name__}: {err}") from None
    return _hub_rows(dataset, HF_DATASET, limit)


def _load_modelscope(limit: int | None, timeout: float) -> tuple[list[dict], list[str]]:
    try:
        from modelscope.msdatasets import MsDataset  # optional dependency (pip install tunebook[modelscope])
    except ImportError as err:
        raise SourceUnavailable(f"the ModelScope source needs the modelscope package ({err}). Install it: "
                                "pip install modelscope") from None
    domain = os.environ.get("MODELSCOPE_DOMAIN", "www.modelscope.cn")
    url = domain if "://" in domain else f"https://{domain}"
    problem = _unreachable(url, timeout)
    if problem:
        raise SourceUnavailable(f"ModelScope {url} is not reachable ({problem})")
    try:
        dataset = MsDataset.load(MODELSCOPE_DATASET, split="train")
    except Exception as err:  # modelscope wraps network and format errors in many types
        raise SourceUnavailable(f"could not load {MODELSCOPE_DATASET} from ModelScope: "
                                f"{type(err).__name__}: {err}") from None
    rows = dataset.to_hf_dataset() if hasattr(dataset, "to_hf_dataset") else dataset
    return _hub_rows(rows, MODELSCOPE_DATASET, limit)


def _load_synthetic(n: int, seed: int) -> tuple[list[dict], list[str]]:
    if n < 1:
        raise ColoristDataError(f"the synthetic set needs n >= 1 records, not {n}")
    records = synthetic_records(n, seed)
    return records, [f"synthetic: {len(records)} SYNTHETIC records generated offline (seed {seed}) from "
                     f"{len(named_colours())} named colours -- a stand-in, not the real Colorist data"]


def load_colorist(source: str = "auto", path: str | os.PathLike | None = None, limit: int | None = None,
                  seed: int = 0, n_synthetic: int = DEFAULT_SYNTHETIC,
                  timeout: float = PROBE_TIMEOUT) -> tuple[list[dict], str, list[str]]:
    """Colorist records from `source` -> (records, source actually used, notes to show the learner).

    auto: a given `path` (or ./colors/train.jsonl, ./colors/colors.json) is used as is; otherwise Hugging Face,
    then ModelScope, then the synthetic set, each failure explained in the notes. `limit` keeps the first N source
    rows (for synthetic, at most n_synthetic are generated). Local files must be entirely valid; hub rows that
    are not are dropped and counted in the notes.
    """
    if source not in SOURCES:
        raise ColoristDataError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    if limit is not None and limit < 1:
        raise ColoristDataError(f"limit must be at least 1, not {limit}")
    n_synthetic = n_synthetic if limit is None else min(limit, n_synthetic)
    if source == "local":
        records, notes = _load_local(path, limit)
    elif source == "hf":
        records, notes = _load_hf(limit, timeout)
    elif source == "modelscope":
        records, notes = _load_modelscope(limit, timeout)
    elif source == "synthetic":
        records, notes = _load_synthetic(n_synthetic, seed)
    if source != "auto":
        return records, source, notes
    # auto
    if path is not None or any(Path(candidate).is_file() for candidate in LOCAL_CANDIDATES):
        records, notes = _load_local(path, limit)
        return records, "local", ["auto: using the local file (no download tried)", *notes]
    notes = []
    for name, loader in (("hf", _load_hf), ("modelscope", _load_modelscope)):
        try:
            records, found = loader(limit, timeout)
        except SourceUnavailable as err:
            notes.append(f"auto: {name} unavailable: {err}")
            continue
        return records, name, [*notes, f"auto: using {name}", *found]
    records, found = _load_synthetic(n_synthetic, seed)
    return records, "synthetic", [*notes, "auto: no real Colorist data reachable, using the synthetic set", *found]


# --------------------------------------------------------------------------- split and write

def heldout_count(total: int, heldout: int | float | None) -> int:
    """None -> min(100, 10% of the records); an int is a count; a float in (0, 1) is a fraction."""
    if heldout is None:
        return min(100, total // 10)
    if isinstance(heldout, float):
        if not 0 <= heldout < 1:
            raise ColoristDataError(f"a held-out fraction must be at least 0 and below 1, not {heldout} "
                                    "(give a whole number for a count)")
        count = round(total * heldout)
    else:
        count = int(heldout)
    if count < 0:
        raise ColoristDataError(f"held-out size must be 0 or more, not {count}")
    if count and count >= total:
        raise ColoristDataError(f"held-out size {count} leaves nothing to train on ({total} records); "
                                "use a smaller number or a fraction such as 0.05")
    return count


def _prompt_key(record: dict) -> str:
    return normalise(record, "colorist").turns[0].input


def split_heldout(records: list[dict], heldout: int | float | None = None,
                  seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held-out), both in the original order; the same for the same seed. Records whose prompts are
    identical always land on the same side, so no held-out question was seen in training."""
    want = heldout_count(len(records), heldout)
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(_prompt_key(record), []).append(index)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    chosen: set[int] = set()
    for key in keys:
        if len(chosen) >= want:
            break
        if len(chosen) + len(groups[key]) <= want:
            chosen.update(groups[key])
    train = [r for i, r in enumerate(records) if i not in chosen]
    held = [r for i, r in enumerate(records) if i in chosen]
    return train, held


def to_conversations(records: Iterable[dict]) -> list[dict]:
    """Colorist records -> XTuner conversation records, via the colors_map_fn rule in helpers.data.formats."""
    return [normalise(record, "colorist").to_record() for record in records]


def heldout_path(out: str | os.PathLike) -> Path:
    """Where the held-out set of `out` goes: <out stem>.heldout.jsonl beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.heldout.jsonl")


def write_colorist(out: str | os.PathLike, train: list[dict], heldout: list[dict]) -> dict[str, Any]:
    """Write train (JSONL, or a JSON array if `out` ends in .json) and held-out (always JSONL), atomically.
    A held-out file left from an earlier run is removed when there is no held-out set now (it could overlap)."""
    result: dict[str, Any] = {"train": Path(out), "heldout": None, "removed": None}
    side = heldout_path(out)
    if heldout:
        write_jsonl(side, to_conversations(heldout))
        result["heldout"] = side
    elif side.exists():
        side.unlink()
        result["removed"] = side
    write_records(out, to_conversations(train))
    return result


def read_heldout(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(descriptions, reference hexes) from a held-out conversation file, for evaluation."""
    loaded = load_conversations(path, fmt="conversation")
    if loaded.issues:
        raise ColoristDataError(f"{len(loaded.issues)} bad record(s) in {path}\n{_issue_report(loaded.issues)}")
    turns = [conversation.turns[0] for conversation in loaded.conversations]
    return [turn.input for turn in turns], [turn.output for turn in turns]
