"""Stage 2's adapter merged into one LLaVA folder that plain transformers loads.

`LlavaForConditionalGeneration.from_pretrained(folder)` + `AutoProcessor.from_pretrained(folder)` then give what
tunebook's chat gives: the LoRA folded into the LM, the trained projector in place, the tokenizer with <image>
and the training template as chat_template, the PIL image processor. XTuner needs `convert merge` for the LM plus
its LLaVA folder plus `--visual-encoder` at chat time; here it is one folder (`tunebook_llava.json` says what it
was built from).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from helpers.errors import TunebookError
from helpers.io import atomic_dir


def merge_llava(adapter: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Merge a stage-2 adapter folder (or take a stage-1 projector folder as it is) into `out`."""
    import torch

    from helpers.multimodal.llava import read_llava_record, write_llava_record
    from helpers.multimodal.llava_train import load_trained
    adapter = Path(adapter)
    record = read_llava_record(adapter)
    if record is None or record.get("stage") not in ("pretrain", "finetune"):
        raise TunebookError(f"{adapter}: not a LLaVA stage output (no tunebook_llava.json with a stage); give "
                            "<output_dir>/adapter of stage finetune")
    llava = load_trained(adapter, record["vision"], record["lm"], dtype=torch.float32)
    model = llava.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        llava.processor.save_pretrained(tmp)
        write_llava_record(tmp, Path(record["vision"]), Path(record["lm"]), "merged",
                           {k: v for k, v in record.items() if k not in ("vision", "lm", "stage")}
                           | {"merged_from": str(adapter)})
    return Path(out)


def load_merged(folder: str | Path):
    """A merged folder as a helpers.multimodal.llava.Llava (plain transformers loading)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from helpers.multimodal.llava import Llava, image_token_count, read_llava_record
    folder = Path(folder)
    model = LlavaForConditionalGeneration.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    processor.image_processor = CLIPImageProcessorPil.from_pretrained(folder)   # one implementation (tower.py)
    record = read_llava_record(folder) or {}
    return Llava(model, processor, processor.tokenizer, Path(record.get("vision", folder)),
                 Path(record.get("lm", folder)), image_token_count(model.config.vision_config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers merge-llava",
                                     description="Merge a LLaVA stage-2 adapter into one folder that plain "
                                                 "transformers loads (LlavaForConditionalGeneration + AutoProcessor).")
    parser.add_argument("adapter", help="<output_dir>/adapter of stage finetune")
    parser.add_argument("out", help="the merged folder (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        path = merge_llava(args.adapter, args.out, args.overwrite)
    except FileExistsError:
        raise TunebookError(f"{args.out} already exists (pass --overwrite to replace it)") from None
    print(f"merged LLaVA written to {path}")
    return 0
