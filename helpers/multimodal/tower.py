"""Vision towers for LLaVA: the camp's CLIP ViT-L/14-336 on a GPU, a small CLIP-shaped tower made here for the CPU.

No PyPI package ships CLIP weights small enough for a 2-core CPU (and no model hub is reachable in CI), so the CPU
profile and the tests use a CLIP vision model initialised here, deterministically, saved once like the tiny LM. It
is NOT a pretrained encoder: it sees colour and layout (what the swatch lesson needs) because its patch embedding
is a fixed random projection of the pixels, and nothing more. A frozen random tower is still a fair stand-in for the
recipe: LLaVA freezes the encoder and trains only what reads its features (projector, then LoRA on the LM).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.io import atomic_dir

CAMP_VISION = "clip-vit-large-patch14-336"   # openai/clip-vit-large-patch14-336, the camp's visual encoder
TINY_VISION_MARKER = "tunebook_tiny_vision.json"


@dataclass(frozen=True)
class TinyVisionConfig:
    image_size: int = 32          # swatches are flat colours and halves: 32 px keeps every detail they have
    patch_size: int = 8           # 4 x 4 = 16 image tokens per picture (ViT-L/14-336 gives 576)
    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 2    # LLaVA reads the second-to-last layer's output, so at least 2
    num_attention_heads: int = 4
    position_scale: float = 1.0   # see build_tiny_vision
    seed: int = 0


def build_tiny_vision(config: TinyVisionConfig = TinyVisionConfig()):
    """A CLIPVisionModel with CLIP's layout and random weights, plus the image processor that feeds it."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vision_config = CLIPVisionConfig(
        image_size=config.image_size, patch_size=config.patch_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, projection_dim=config.hidden_size)
    torch.manual_seed(config.seed)
    model = CLIPVisionModel(vision_config)
    with torch.no_grad():
        # CLIP normalises each token (pre-LayerNorm) right after the patch embedding, which would make a colour
        # and any colour further along the same line from CLIP's mean colour look identical (same direction, other
        # length). Position embeddings as large as the patch term give every token a fixed anchor, so the
        # normalised vector still tells how far along that line the colour is.
        patch = model.embeddings.patch_embedding.weight
        patch.normal_(0.0, 1.0 / (patch[0].numel() ** 0.5))
        model.embeddings.position_embedding.weight.normal_(0.0, config.position_scale)
    size = {"shortest_edge": config.image_size}
    crop = {"height": config.image_size, "width": config.image_size}
    processor = CLIPImageProcessorPil(size=size, crop_size=crop)
    return model, processor


def make_tiny_vision(out_dir: str | Path, config: TinyVisionConfig = TinyVisionConfig(),
                     overwrite: bool = False) -> Path:
    out_dir = Path(out_dir)
    model, processor = build_tiny_vision(config)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / TINY_VISION_MARKER).write_text(json.dumps(asdict(config), indent=2) + "\n", encoding="utf-8")
    return out_dir


def is_tiny_vision(path: str | Path) -> bool:
    return (Path(path) / TINY_VISION_MARKER).is_file()


def tiny_vision(root: Path) -> Path:
    """The tiny tower under `root`/tiny-vision, made on first use."""
    path = Path(root) / "tiny-vision"
    if not (path / "config.json").is_file():
        make_tiny_vision(path, overwrite=True)
    return path


def load_vision(path: str | Path, dtype=None):
    """(CLIPVisionModel, image processor) from a CLIP folder: a vision-only save or a full CLIP (text part dropped).

    The image processor is always the PIL implementation: with torchvision installed transformers would pick its
    torchvision twin, whose resizing differs slightly, and the same picture would give other answers."""
    from transformers import CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from helpers.models.find import resolve_model
    folder = resolve_model(path)
    model = CLIPVisionModel.from_pretrained(folder, dtype=dtype)
    processor = CLIPImageProcessorPil.from_pretrained(folder)
    return model, processor
