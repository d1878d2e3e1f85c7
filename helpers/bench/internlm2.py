"""Measure converting an InternLM2 checkpoint of internlm2-chat-1_8b's shape: wall time and peak RSS.

    python -m helpers bench internlm2 [--workdir /tmp] [--keep]

Writes a random bf16 checkpoint with the published 1.8B dimensions (hidden 2048, intermediate 8192, 24 layers,
16 heads, 8 kv heads, vocab 92544; two ~2 GB safetensors shards like the released files) and a synthetic
92,544-piece SentencePiece BPE model, then runs `python -m helpers convert internlm2-to-llama` in a child process,
so the child's peak RSS is the conversion's alone, and times a second `ensure_llama_layout` call (cache hit).
Everything is deleted afterwards unless --keep.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers.models.shapes import INTERNLM2_SHAPES

SHAPE_1_8B = INTERNLM2_SHAPES["internlm2-chat-1_8b"]


def _synthetic_sp_model(path: Path, size: int) -> None:
    """A BPE SentencePiece model with `size` pieces whose merges resemble a real vocabulary's (1-3 characters)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.trainer_spec.model_type, proto.trainer_spec.byte_fallback = pb.TrainerSpec.BPE, True
    proto.trainer_spec.vocab_size = size
    proto.normalizer_spec.name, proto.normalizer_spec.add_dummy_prefix = "identity", True
    proto.normalizer_spec.remove_extra_whitespaces, proto.normalizer_spec.escape_whitespaces = False, True
    Piece = pb.ModelProto.SentencePiece

    def add(text, kind=Piece.NORMAL, score=0.0):
        piece = proto.pieces.add()
        piece.piece, piece.type, piece.score = text, kind, score

    for text in ("<unk>", "<s>", "</s>"):
        add(text, Piece.UNKNOWN if text == "<unk>" else Piece.CONTROL)
    for byte in range(256):
        add(f"<0x{byte:02X}>", Piece.BYTE)
    chars = ["▁"] + [chr(c) for c in range(33, 127)] + [chr(c) for c in range(0x4E00, 0x4E00 + 20000)]
    letters = [chr(c) for c in range(97, 123)] + [chr(c) for c in range(65, 91)]
    pairs = [a + b for a in ["▁"] + letters for b in letters]
    merged = pairs + [ab + c for ab in pairs for c in letters]  # two- and three-character pieces
    merged = merged[: size - 3 - 256 - len(chars) - 8]
    for rank, text in enumerate(merged, start=1):  # descending scores = merge order
        add(text, score=-float(rank))
    for text in chars:
        add(text, score=-float(len(merged) + 1))
    for n in range(139, 147):
        add(f"[UNUSED_TOKEN_{n}]", Piece.USER_DEFINED)
    assert len(proto.pieces) == size, len(proto.pieces)
    path.write_bytes(proto.SerializeToString())


def write_random_checkpoint(directory: Path, shard_bytes: int = 2 * 1024**3, realistic_logits: bool = False) -> int:
    """A random bf16 InternLM2 checkpoint of the 1.8B shape; returns its weight bytes.

    realistic_logits: RMSNorm weights 1 and an output head of std 4/sqrt(hidden), so the largest logits are ~20 as in
    trained chat models (with every weight ~N(0, 0.02) they stay below 0.1, which hides precision effects)."""
    import torch
    from safetensors.torch import save_file

    c = SHAPE_1_8B
    shapes = _internlm2_shapes(c)
    groups, current, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = 2 * int(torch.Size(shape).numel())
        if current and size + nbytes > shard_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    groups.append(current)
    directory.mkdir(parents=True)
    weight_map, total = {}, 0
    for number, names in enumerate(groups, start=1):
        file = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: torch.randn(shapes[n], dtype=torch.bfloat16) * 0.02 for n in names}
        if realistic_logits:
            for n in names:
                if n.endswith("norm.weight"):
                    tensors[n] = torch.ones(shapes[n], dtype=torch.bfloat16)
                elif n == "output.weight":
                    tensors[n] = torch.randn(shapes[n], dtype=torch.bfloat16) * (4 / c["hidden_size"] ** 0.5)
        save_file(tensors, str(directory / file), metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update({n: file for n in names})
        del tensors
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    config = {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "bias": False,
              "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "hidden_act": "silu",
              "initializer_range": 0.02, "max_position_embeddings": 32768, "rms_norm_eps": 1e-05,
              "rope_scaling": {"type": "dynamic", "factor": 2.0}, "rope_theta": 1000000,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True, **c}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(directory, c["vocab_size"])
    return total


def _internlm2_shapes(c: dict) -> dict[str, tuple]:
    """Tensor name -> shape of an InternLM2 checkpoint with config values `c` (fused wqkv, w1/w3/w2)."""
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    shapes = {"model.tok_embeddings.weight": (c["vocab_size"], c["hidden_size"])}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "attention.wqkv.weight": ((c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * head_dim,
                                          c["hidden_size"]),
            p + "attention.wo.weight": (c["hidden_size"], c["hidden_size"]),
            p + "feed_forward.w1.weight": (c["intermediate_size"], c["hidden_size"]),
            p + "feed_forward.w3.weight": (c["intermediate_size"], c["hidden_size"]),
            p + "feed_forward.w2.weight": (c["hidden_size"], c["intermediate_size"]),
            p + "attention_norm.weight": (c["hidden_size"],), p + "ffn_norm.weight": (c["hidden_size"],)})
    shapes.update({"model.norm.weight": (c["hidden_size"],), "output.weight": (c["vocab_size"], c["hidden_size"])})
    return shapes


def _write_tokenizer(directory: Path, vocab_size: int) -> None:
    """A SentencePiece tokenizer.model and tokenizer_config.json laid out as the released InternLM2 ones."""
    _synthetic_sp_model(directory / "tokenizer.model", vocab_size)
    names = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>", "<|im_start|>"]
    added = {str(i): {"content": t, "special": True} for i, t in enumerate(["<unk>", "<s>", "</s>"])}
    added.update({str(92538 + k): {"content": t, "special": True} for k, t in enumerate(names)})
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
         "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers bench internlm2", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the temporary checkpoints go")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="internlm2-bench-", dir=args.workdir))
    try:
        start = time.perf_counter()
        total = write_random_checkpoint(root / "internlm2-1_8b")
        print(f"random checkpoint: {total / 1e9:.2f} GB in "
              f"{len(list((root / 'internlm2-1_8b').glob('*.safetensors')))} shards, "
              f"written in {time.perf_counter() - start:.1f} s")
        source = root / "internlm2-1_8b"
        start = time.perf_counter()  # the code path the model loader takes, in a child process of its own
        subprocess.run([sys.executable, "-c", "import sys; from helpers.models.internlm2.convert import ensure_llama_layout; "
                        "print(ensure_llama_layout(sys.argv[1]))", str(source)], check=True)
        seconds = time.perf_counter() - start
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        print(f"conversion (child process): {seconds:.1f} s wall, peak RSS {peak_kib / 1024**2:.2f} GiB")
        from helpers.models.internlm2.convert import ensure_llama_layout

        start = time.perf_counter()
        out = ensure_llama_layout(source, progress=None)
        print(f"second ensure_llama_layout call (cache hit, {out.name}): "
              f"{1000 * (time.perf_counter() - start):.1f} ms")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
