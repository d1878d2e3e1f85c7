"""Training data for the engine: encode once (rank 0), cache, and plan the micro-batches.

In data-parallel runs rank 0 encodes and writes the cache while the other ranks wait by polling the file
system, not in a collective, so a slow tokenization can never hit an NCCL/gloo timeout (XTuner's
`xtuner_dataset_timeout` failures). The cache is keyed by the data file's content and every setting that
changes the tokens, so a resumed run reuses it and a changed dataset is never mistaken for the old one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.encode.chat_format import ChatFormat
from helpers.encode.encoding import EncodeStats, Encoder, Sample
from helpers.errors import TunebookError
from helpers.data.formats import load_conversations
from helpers.io import atomic_file
from helpers.encode.packing import BatchPlan, MicroBatchDataset, plan_batches


@dataclass
class PreparedData:
    samples: list[Sample]
    stats: EncodeStats
    records: int
    skipped: int
    format: str


def file_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def tokenizer_digest(tokenizer) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items())[:5000], ensure_ascii=False)
    specials = json.dumps([tokenizer.bos_token, tokenizer.eos_token, len(tokenizer)])
    return hashlib.sha256((vocab + specials).encode()).hexdigest()[:16]


def data_key(data_path: str, fmt: str, template: ChatFormat, max_length: int, system: str, tokenizer) -> str:
    # The format's Jinja spells all its strings (or, for "hf", the tokenizer's own chat_template): an edited
    # template never reuses tokens encoded with the old one.
    parts = [file_digest(data_path), fmt, template.name, template.jinja(tokenizer), str(max_length), system,
             tokenizer_digest(tokenizer)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def encode_file(data_path: str, fmt: str, tokenizer, template: ChatFormat, max_length: int, system: str,
                progress: bool = True) -> PreparedData:
    result = load_conversations(data_path, fmt)
    if result.issues:
        shown = "\n".join(str(i) for i in result.issues[:20])
        more = f"\n... and {len(result.issues) - 20} more" if len(result.issues) > 20 else ""
        raise TunebookError(f"{data_path}: {len(result.issues)} bad records; fix them "
                            f"(python -m helpers check-data {data_path}):\n{shown}{more}")
    encoder = Encoder(tokenizer, template, max_length, system)
    samples = encoder.encode_all(result.conversations, progress=progress)
    if not samples:
        raise TunebookError(f"{data_path}: no sample has a token to train on "
                            f"(dropped: {encoder.stats.dropped_prompt_too_long} too long, "
                            f"{encoder.stats.dropped_no_trained} without trained output)")
    return PreparedData(samples, encoder.stats, result.records, len(result.skipped), result.format)


def _save(path: Path, data: PreparedData) -> None:
    import numpy as np
    lengths = np.array([len(s) for s in data.samples], dtype=np.int64)
    meta = {"stats": asdict(data.stats), "records": data.records, "skipped": data.skipped, "format": data.format,
            "sources": [s.source for s in data.samples], "truncated": [s.truncated for s in data.samples],
            "special": [s.special_text for s in data.samples]}
    with atomic_file(path, "wb") as handle:
        np.savez(handle, ids=np.concatenate([np.asarray(s.input_ids, dtype=np.int64) for s in data.samples]),
                 labels=np.concatenate([np.asarray(s.labels, dtype=np.int64) for s in data.samples]),
                 lengths=lengths, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def _load(path: Path) -> PreparedData:
    import numpy as np
    with np.load(path, allow_pickle=False) as archive:
        ids, labels, lengths = archive["ids"], archive["labels"], archive["lengths"]
        meta = json.loads(archive["meta"].tobytes().decode())
    samples, at = [], 0
    for i, n in enumerate(lengths.tolist()):
        samples.append(Sample(ids[at:at + n].tolist(), labels[at:at + n].tolist(), meta["sources"][i],
                              meta["truncated"][i], meta["special"][i]))
        at += n
    return PreparedData(samples, EncodeStats(**meta["stats"]), meta["records"], meta["skipped"], meta["format"])


def prepare(data_path: str, fmt: str, tokenizer, template: ChatFormat, max_length: int, system: str, cache_dir: Path,
            rank: int = 0, wait_seconds: float = 6 * 3600) -> PreparedData:
    """Encoded samples, from the cache when present; rank 0 builds it, other ranks wait for it."""
    key = data_key(data_path, fmt, template, max_length, system, tokenizer)
    path = Path(cache_dir) / f"encoded-{key}.npz"
    if not path.exists():
        if rank == 0:
            for stale in Path(cache_dir).glob("encoded-*.failed"):  # an earlier attempt's; this one starts afresh
                stale.unlink(missing_ok=True)
            _save(path, encode_file(data_path, fmt, tokenizer, template, max_length, system))
        else:
            failed = Path(cache_dir) / f"encoded-{key}.failed"
            deadline = time.time() + wait_seconds
            while not path.exists():
                if failed.exists():  # same key = same data and settings: an earlier marker says the same
                    raise TunebookError(failed.read_text(encoding="utf-8"))
                if time.time() > deadline:
                    raise TunebookError(f"rank {rank}: rank 0 did not finish preparing the data in {wait_seconds}s")
                time.sleep(0.5)
    return _load(path)


def mark_failed(cache_dir: Path, data_path: str, fmt: str, tokenizer, template: ChatFormat, max_length: int,
                system: str, message: str) -> None:
    """Rank 0 tells waiting ranks that data preparation failed (so they stop instead of waiting)."""
    key = data_key(data_path, fmt, template, max_length, system, tokenizer)
    with atomic_file(Path(cache_dir) / f"encoded-{key}.failed") as handle:
        handle.write(message)


def build_plan(samples: list[Sample], strategy: str, max_length: int, batch_size: int, seed: int) -> BatchPlan:
    return plan_batches(samples, strategy, max_length, batch_size, seed)


def dataset(samples: list[Sample], plan: BatchPlan, seed: int) -> MicroBatchDataset:
    return MicroBatchDataset(samples, plan, seed=seed)
