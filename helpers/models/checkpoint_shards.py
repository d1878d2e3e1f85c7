"""Read and write Hugging Face weight shards one at a time, so converting a 7B checkpoint needs about one shard of
RAM rather than the whole model (safetensors or, for old checkpoints, .bin read with torch.load(weights_only=True)).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from helpers.errors import TunebookError

SAFE_INDEX, SAFE_SINGLE = "model.safetensors.index.json", "model.safetensors"
BIN_INDEX, BIN_SINGLE = "pytorch_model.bin.index.json", "pytorch_model.bin"


class WeightsNotFoundError(TunebookError):
    pass


def weight_files(model_dir: str | Path) -> list[Path]:
    """The checkpoint's weight files in order (safetensors preferred over .bin, as transformers does)."""
    model_dir = Path(model_dir)
    for index_name in (SAFE_INDEX, BIN_INDEX):
        index = model_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError) as err:
                raise WeightsNotFoundError(f"{index}: not a valid shard index ({err})") from None
            files = [model_dir / name for name in dict.fromkeys(weight_map.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise WeightsNotFoundError(f"{index} lists shards that are missing: {', '.join(missing)} "
                                           "(incomplete download? download the model again)")
            return files
    for single in (SAFE_SINGLE, BIN_SINGLE):
        if (model_dir / single).is_file():
            return [model_dir / single]
    shards = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
    if shards:
        return shards
    raise WeightsNotFoundError(f"{model_dir}: no weights found (expected {SAFE_SINGLE}, {SAFE_INDEX}, "
                               f"{BIN_SINGLE} or {BIN_INDEX})")


def load_shard(path: Path) -> dict:
    """All tensors of one shard file, on CPU."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    import torch

    try:  # mmap keeps the pickled shard out of RAM until a tensor is touched (zip-format files only)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=True)


def iter_shards(model_dir: str | Path) -> Iterator[tuple[Path, dict]]:
    for path in weight_files(model_dir):
        yield path, load_shard(path)


def save_shards(shards: Iterator[dict], out_dir: Path, count: int) -> None:
    """Write `count` converted shards (each a name->tensor dict) as safetensors plus an index.

    `out_dir` is expected to be a temporary folder from helpers.io.atomic_dir, so a crash leaves nothing behind.
    """
    from safetensors.torch import save_file

    weight_map, total = {}, 0
    for number, tensors in enumerate(shards, start=1):
        name = SAFE_SINGLE if count == 1 else f"model-{number:05d}-of-{count:05d}.safetensors"
        tensors = _unshare(tensors)
        save_file(tensors, str(out_dir / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        del tensors  # nothing may keep a memory-mapped input shard alive once it is written
    if count > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _unshare(tensors: dict) -> dict:
    """safetensors refuses tensors that share memory (views of a fused weight, tied .bin weights): copy those."""
    import torch

    seen, out = set(), {}
    for key, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen or not tensor.is_contiguous() or tensor.storage_offset() or \
                tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def convert_shards(model_dir: str | Path, out_dir: Path, convert: Callable[[dict], dict],
                   finish: Callable[[], dict] | None = None, progress: Callable[[str], None] | None = None) -> int:
    """Stream `model_dir`'s shards through `convert` (name->tensor dict in, converted dict out) into `out_dir`.

    `convert` may hold tensors back (e.g. the q/k/v projections of a layer split across shards) and `finish`
    returns whatever is left at the end; it is written with the last shard. Returns the number of tensors written.
    """
    files = weight_files(model_dir)
    written = 0

    def converted():
        nonlocal written
        for number, path in enumerate(files, start=1):
            if progress:
                progress(f"shard {number}/{len(files)}: {path.name}")
            out = convert(load_shard(path))
            if number == len(files) and finish:
                out.update(finish())
            written += len(out)
            yield out
            del out  # drop this shard (memory-mapped pages included) before the next one is read

    save_shards(converted(), out_dir, len(files))
    return written



# ---- tensor by tensor (merge) ---------------------------------------------------------------------------------

_SAFE_DTYPES = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
                "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def tensor_headers(model_dir: str | Path) -> list[tuple[str, Path, tuple[int, ...], object]]:
    """(name, file, shape, torch dtype) of every tensor, shard files in name order, without reading tensor data
    (safetensors headers; .bin shards are memory-mapped, so only their pickled metadata is read)."""
    import torch

    out = []
    for path in sorted(weight_files(model_dir)):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for name in handle.keys():
                    piece = handle.get_slice(name)
                    out.append((name, path, tuple(piece.get_shape()), getattr(torch, _SAFE_DTYPES[piece.get_dtype()])))
        else:
            tensors = load_shard(path)
            out += [(name, path, tuple(t.shape), t.dtype) for name, t in tensors.items()]
            del tensors
    return out


class ShardReader:
    """One tensor at a time by (file, name). A safetensors file is opened per tensor, so no mapping of a whole
    multi-GB shard stays in the process; a .bin shard has to be unpickled whole, so the last one is kept."""

    def __init__(self):
        self._bin_path, self._bin = None, None

    def get(self, path: Path, name: str):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as handle:
                return handle.get_tensor(name)
        if path != self._bin_path:
            self._bin = None  # drop the previous shard before reading the next
            self._bin, self._bin_path = load_shard(path), path
        return self._bin[name]


def write_safetensors(path: Path, specs: list[tuple[str, tuple[int, ...], object]], tensors: Iterator[tuple[str, object]],
                      metadata: dict | None = None) -> int:
    """Write tensors into a safetensors file as they are produced, holding one at a time; returns the bytes of data.

    Hand-written because safetensors.torch.save_file takes every tensor of the file at once (a 2 GB shard of merged
    weights in RAM, twice before safetensors 0.6, which serialised each tensor to bytes). The format is small: an
    8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}
    padded with spaces to 8 bytes, then each tensor's little-endian bytes in header order. `specs` (name, shape,
    dtype) is the plan; each produced tensor must match it. Readers (safe_open, transformers) check the file."""
    import struct
    import sys

    import torch

    if sys.byteorder != "little":
        raise TunebookError("writing safetensors needs a little-endian machine")
    codes = {getattr(torch, v): k for k, v in _SAFE_DTYPES.items()}
    header, offset = {}, 0
    for name, shape, dtype in specs:
        nbytes = dtype.itemsize * int(torch.Size(shape).numel())
        header[name] = {"dtype": codes[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        for (name, shape, dtype), (got_name, tensor) in zip(specs, tensors, strict=True):
            if got_name != name or tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(f"{path.name}: expected {name} {dtype}{list(shape)}, got {got_name} "
                                 f"{tensor.dtype}{list(tensor.shape)}")
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
            handle.write(memoryview(data))
            del data, tensor
    return offset
