"""InternLM2 / InternLM2.5 checkpoints as native transformers Llama models, without trust_remote_code.

InternLM2's remote modeling/tokenizer code breaks on transformers 5.x, but the architecture is Llama's with other
tensor names and a fused `wqkv` (helpers.models.internlm2.layout has the mapping): converting the checkpoint once (cached,
`ensure_llama_layout`) lets transformers, PEFT and bitsandbytes use their own Llama code. LoRA targets after
conversion are the Llama names (`internlm2_lora_targets()`). `export_internlm2` goes back to the InternLM2 layout
(for LMDeploy or the course's streamlit demo). CLI: `python -m helpers convert ...`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

from helpers.models.checkpoint_shards import convert_shards, weight_files
from helpers.errors import TunebookError
from helpers.models.internlm2.layout import (  # noqa: F401  (public names re-exported here)
    LLAMA_LORA_TARGETS, NotInternLM2Error, UnsupportedCheckpointError, LlamaToInternLM2, fuse_wqkv,
    internlm2_config_from_llama, internlm2_lora_targets, internlm2_tensors_to_llama, is_internlm2_checkpoint,
    llama_config_from_internlm2, read_config, split_wqkv)
from helpers.io import atomic_dir, check_writable

CONVERTER_VERSION = 1  # bump when the converted output changes, so cached conversions are redone
MARKER = "tunebook_conversion.json"
IM_END, IM_END_LEGACY = "<|im_end|>", "[UNUSED_TOKEN_145]"


# ---- whole checkpoints ----------------------------------------------------------------------------------------

_TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def _im_end_id(model_dir: Path) -> int | None:
    """Id of <|im_end|> (92542 in the released vocab): tokenizer_config.json, else the SentencePiece piece."""
    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for index, token in (config.get("added_tokens_decoder") or {}).items():
            if token.get("content") == IM_END:
                return int(index)
    if (model_dir / "tokenizer.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
        for piece in (IM_END, IM_END_LEGACY):
            if sp.piece_to_id(piece) != sp.unk_id():
                return sp.piece_to_id(piece)
    return None


def _write_generation_config(src: Path, dst: Path, llama_config) -> None:
    """The source's generation_config.json, stopping at <|im_end|> as well as at EOS (chat models end turns with it)."""
    path = src / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {
        "bos_token_id": llama_config.bos_token_id, "pad_token_id": llama_config.pad_token_id}
    eos = config.get("eos_token_id", llama_config.eos_token_id)
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    im_end = _im_end_id(src)
    config["eos_token_id"] = [i for i in dict.fromkeys(eos + ([im_end] if im_end is not None else []))
                              if i is not None]
    (dst / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _needed_bytes(files: list[Path]) -> int:
    return int(sum(f.stat().st_size for f in files) * 1.05) + 50 * 1024**2


def _check_space(dst: Path, files: list[Path]) -> None:
    """Writable, with room for the converted weights, before anything is created."""
    check_writable(dst.parent, f"the output folder {dst}", _needed_bytes(files))


def convert_internlm2_to_llama(src: str | Path, dst: str | Path, overwrite: bool = False,
                               chat_template: str | None = None, progress=print, _key: str | None = None) -> Path:
    """Convert an InternLM2 checkpoint folder to a Llama one at `dst` (weights, config, fast tokenizer, generation
    config); written atomically. `chat_template` defaults to the internlm2_chat template."""
    from helpers.models.internlm2.sp_tokenizer import write_fast_tokenizer
    from helpers.encode.chat_format import DEFAULT_TEMPLATE
    from helpers.encode.templates import to_jinja

    src, dst = Path(src), Path(dst)
    config = read_config(src)
    if not is_internlm2_checkpoint(src):
        raise NotInternLM2Error(f"{src}: not an InternLM2 checkpoint (config.json has architectures="
                                f"{config.get('architectures')}, model_type={config.get('model_type')!r})")
    llama_config = llama_config_from_internlm2(config, str(src / "config.json"))
    _check_space(dst, weight_files(src))  # fail before creating anything without weights or room
    try:
        with atomic_dir(dst, overwrite=overwrite, note=progress) as tmp:
            write_fast_tokenizer(src, tmp, to_jinja(DEFAULT_TEMPLATE) if chat_template is None else chat_template)
            llama_config.save_pretrained(tmp)
            _write_generation_config(src, tmp, llama_config)
            convert_shards(src, tmp, lambda tensors: internlm2_tensors_to_llama(tensors, llama_config),
                           progress=progress)
            marker = {"converter": "tunebook internlm2-to-llama", "version": CONVERTER_VERSION,
                      "source": str(src.resolve()), "key": _key or source_key(src)}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    except FileExistsError as err:
        raise TunebookError(f"{err} (or pass overwrite=True / --overwrite)") from None
    return dst


def export_internlm2(llama_dir: str | Path, out_dir: str | Path, original_dir: str | Path | None = None,
                     overwrite: bool = False, progress=print) -> Path:
    """Write a Llama-layout model (e.g. a merged fine-tune) back in the InternLM2 layout: fused wqkv, InternLM2
    names and config. With `original_dir` (the InternLM2 checkpoint it came from; defaults to the source recorded
    by the conversion, if still there) its config fields such as auto_map, its tokenizer files and remote-code .py
    files are copied, so LMDeploy and the course's streamlit demo load the result. Without one, the fast tokenizer
    files are copied instead."""
    from transformers import LlamaConfig

    llama_dir, out_dir = Path(llama_dir), Path(out_dir)
    config = read_config(llama_dir)
    if config.get("model_type") != "llama":
        raise NotInternLM2Error(f"{llama_dir}: not a Llama checkpoint (model_type={config.get('model_type')!r}); "
                                "export_internlm2 takes the Llama-layout folder a conversion or merge wrote")
    original_dir = Path(original_dir) if original_dir else _recorded_source(llama_dir)
    original = None
    if original_dir is not None:
        if not is_internlm2_checkpoint(original_dir):
            raise NotInternLM2Error(f"{original_dir}: the original given is not an InternLM2 checkpoint")
        original = read_config(original_dir)
    llama_config = LlamaConfig.from_pretrained(llama_dir)
    internlm2_config = internlm2_config_from_llama(llama_config, original)
    _check_space(out_dir, weight_files(llama_dir))
    mapper = LlamaToInternLM2(llama_config)
    try:
        with atomic_dir(out_dir, overwrite=overwrite, note=progress) as tmp:
            convert_shards(llama_dir, tmp, mapper, finish=mapper.finish, progress=progress)
            (tmp / "config.json").write_text(json.dumps(internlm2_config, indent=2) + "\n", encoding="utf-8")
            extra = [f for f in original_dir.iterdir() if f.name in _TOKENIZER_FILES or f.suffix == ".py"] \
                if original_dir else [llama_dir / n for n in ("tokenizer.json", "tokenizer_config.json",
                                                              "special_tokens_map.json", "chat_template.jinja")]
            for file in [*extra, (original_dir or llama_dir) / "generation_config.json"]:
                if file.is_file():
                    shutil.copyfile(file, tmp / file.name)
    except FileExistsError as err:
        raise TunebookError(f"{err} (or pass overwrite=True / --overwrite)") from None
    return out_dir


def _recorded_source(llama_dir: Path) -> Path | None:
    marker = llama_dir / MARKER
    if marker.is_file():
        source = Path(json.loads(marker.read_text(encoding="utf-8")).get("source", ""))
        if source.is_dir() and is_internlm2_checkpoint(source):
            return source
    return None


# ---- cached conversion ----------------------------------------------------------------------------------------

def source_key(model_dir: str | Path) -> str:
    """Cache key of a checkpoint: config and tokenizer file contents (small) plus each weight file's name, size and
    modification time. Hashing the weights' contents would read 4-15 GB on every load; a re-download or an edit
    changes size or mtime, which is what make and rsync rely on too."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256(f"tunebook-internlm2-v{CONVERTER_VERSION}".encode())
    for name in ("config.json", "generation_config.json", *_TOKENIZER_FILES):
        path = model_dir / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"<missing>"))
    for path in weight_files(model_dir):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get("TUNEBOOK_CACHE") or Path.home() / ".cache" / "tunebook")


def _candidates(model_dir: Path, key: str, cache_dir: Path | None) -> list[Path]:
    """Where a conversion may live, in order of preference: beside the original, then the cache folder."""
    name = model_dir.resolve().name
    cached = (cache_dir or cache_root() / "converted") / f"{name}-llama-{key[:12]}"
    parent = model_dir.resolve().parent
    if cache_dir is None and parent.name != "snapshots":  # never add folders inside the Hugging Face cache
        return [parent / f"{name}-llama-{key[:12]}", cached]
    return [cached]


def _room_for(target: Path, needed: int) -> bool:
    """Whether a folder can be created beside `target` (read-only shares, root-squashed NFS) with `needed` bytes."""
    try:
        check_writable(target.parent, "conversion folder", needed)
        return True
    except (TunebookError, OSError):
        return False


def ensure_llama_layout(model_dir: str | Path, cache_dir: str | Path | None = None, progress=print) -> Path:
    """`model_dir` itself unless it is an InternLM2 checkpoint; then its Llama-layout conversion, made once and
    cached beside it (when that folder is writable and has room) or under $TUNEBOOK_CACHE/converted
    (default ~/.cache/tunebook/converted)."""
    model_dir = Path(model_dir)
    if not is_internlm2_checkpoint(model_dir):
        return model_dir
    key = source_key(model_dir)
    candidates = _candidates(model_dir, key, Path(cache_dir) if cache_dir else None)
    for candidate in candidates:
        marker = candidate / MARKER
        if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("key") == key:
            return candidate
    needed = _needed_bytes(weight_files(model_dir))
    target = next((c for c in candidates if _room_for(c, needed)), None)
    if target is None:
        raise TunebookError(f"{model_dir} is an InternLM2 checkpoint and must be converted once to the Llama "
                            f"layout, which needs {needed / 1e9:.1f} GB of free space in a writable folder; none of "
                            f"{', '.join(str(c.parent) for c in candidates)} has it. Set TUNEBOOK_CACHE to a folder "
                            "on a disk with room (or free space) and run again")
    if progress:
        progress(f"InternLM2 checkpoint: converting it once to the Llama layout at {target} (no remote code "
                 "needed; later loads reuse it)")
    try:
        return convert_internlm2_to_llama(model_dir, target, overwrite=True, progress=progress, _key=key)
    except OSError:
        if (target / MARKER).is_file():  # another process finished the same conversion first
            return target
        raise


# ---- command line ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers convert",
                                     description="Convert InternLM2 <-> Llama checkpoints (no remote code).")
    sub = parser.add_subparsers(dest="direction", required=True)
    to_llama = sub.add_parser("internlm2-to-llama", help="InternLM2/2.5 checkpoint -> transformers Llama")
    to_llama.add_argument("src", help="InternLM2 model folder (config.json, weights, tokenizer.model)")
    to_llama.add_argument("dst", help="output folder (must not exist unless --overwrite)")
    to_internlm2 = sub.add_parser("llama-to-internlm2", help="Llama layout (e.g. merged fine-tune) -> InternLM2")
    to_internlm2.add_argument("src", help="Llama-layout model folder")
    to_internlm2.add_argument("dst", help="output folder (must not exist unless --overwrite)")
    to_internlm2.add_argument("--original", help="the InternLM2 checkpoint it came from: its tokenizer and "
                                                 "remote-code files are copied (needed by LMDeploy/streamlit)")
    for command in (to_llama, to_internlm2):
        command.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    args = parser.parse_args(argv)
    if args.direction == "internlm2-to-llama":
        out = convert_internlm2_to_llama(args.src, args.dst, overwrite=args.overwrite)
        print(f"wrote {out} (Llama layout; LoRA targets: {','.join(LLAMA_LORA_TARGETS)})")
    else:
        out = export_internlm2(args.src, args.dst, original_dir=args.original, overwrite=args.overwrite)
        print(f"wrote {out} (InternLM2 layout)")
    return 0
