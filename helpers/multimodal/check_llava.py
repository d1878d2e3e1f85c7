"""check-data for LLaVA files: every record (image file there and readable, one <image> per picture), then with a
tokenizer the image-token count per picture, trained share and a rendered sample."""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from helpers.encode.encoding import IGNORE_INDEX

MAX_ISSUES_SHOWN = 50
CAMP_IMAGE_TOKENS = 576     # CLIP ViT-L/14 at 336 px: 24 x 24 patches


def image_tokens_for(vision: str | None) -> int:
    if not vision:
        return CAMP_IMAGE_TOKENS
    import json

    from helpers.models.find import resolve_model
    from helpers.multimodal.llava import image_token_count
    from transformers import CLIPVisionConfig
    config = json.loads((resolve_model(vision) / "config.json").read_text(encoding="utf-8"))
    vision_config = CLIPVisionConfig(**config.get("vision_config", config))
    return image_token_count(vision_config)


def render_sample(tokenizer, sample, image_token_id: int) -> str:
    """The sample's text with trained spans in ⟦ ⟧ and each picture's run of image tokens as <image × N>."""
    parts, i = [], 0
    ids, labels = sample.input_ids, sample.labels
    while i < len(ids):
        if ids[i] == image_token_id:
            j = i
            while j < len(ids) and ids[j] == image_token_id:
                j += 1
            parts.append(f"<image × {j - i}>")
            i = j
            continue
        j = i
        trained = labels[i] != IGNORE_INDEX
        while j < len(ids) and ids[j] != image_token_id and (labels[j] != IGNORE_INDEX) == trained:
            j += 1
        text = tokenizer.decode(ids[i:j], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        parts.append(f"⟦{text}⟧" if trained else text)
        i = j
    return "".join(parts)


def check_llava(path: str, image_folder: str | None = None, tokenizer_path: str | None = None,
                vision: str | None = None, template: str = "auto", max_length: int = 2048, system: str = "",
                show: int = 1) -> int:
    """Print the report; 0 when every record is good, 2 otherwise (the issues on stderr as FILE:LINE: ...)."""
    from helpers.multimodal.llava_data import load_llava
    examples, issues = load_llava(path, image_folder)
    problems = len(issues)
    for issue in issues[:MAX_ISSUES_SHOWN]:
        print(issue, file=sys.stderr)
    if len(issues) > MAX_ISSUES_SHOWN:
        print(f"... and {len(issues) - MAX_ISSUES_SHOWN} more bad records", file=sys.stderr)
    pictures = sum(e.image is not None for e in examples)
    print(f"{path}: LLaVA format, {len(examples) + len(issues)} records, {len(examples)} good, {len(issues)} bad; "
          f"{pictures} with a picture, {len(examples) - pictures} text-only; images from "
          f"{Path(image_folder) if image_folder else Path(path).parent}")
    count = image_tokens_for(vision)
    print(f"image tokens per picture: {count} ({'the vision tower ' + vision if vision else 'CLIP ViT-L/14-336, the camp encoder; --vision for another'})")
    if tokenizer_path and examples:
        from helpers.encode.encoding import load_tokenizer
        from helpers.models.find import resolve_template
        from helpers.multimodal.llava import add_image_token
        from helpers.multimodal.llava_data import image_encoder
        tokenizer = load_tokenizer(tokenizer_path)
        image_id = add_image_token(tokenizer)
        fmt = resolve_template(template, tokenizer_path)
        encoder = image_encoder(tokenizer, fmt, max_length, image_id, count, system)
        samples, cut = [], 0
        for example in examples:
            sample = encoder.encode(example.conversation)
            if sample is None:
                continue
            if example.image and sum(i == image_id for i in sample.input_ids) != count:
                cut += 1
            samples.append(sample)
        lengths = [len(s) for s in samples]
        trained = sum(s.trained_tokens for s in samples)
        print(f"tokens: {sum(lengths):,} in {len(samples)} samples (median {statistics.median(lengths):.0f}, longest "
              f"{max(lengths)}), {trained / max(1, sum(lengths)):.1%} trained; image positions and prompts are -100")
        if cut:
            print(f"{path}: max_length {max_length} cuts the picture of {cut} record(s); raise it above "
                  f"{count} + the prompt", file=sys.stderr)
            problems += cut
        for sample in samples[:show]:
            print(f"sample ({sample.source}):\n  " + render_sample(tokenizer, sample, image_id).replace("\n", "\n  "))
    if problems:
        print(f"{path}: {problems} problem(s); fix them (see the lines above) and run again", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """`check-data`: a LLaVA file (records with "image" + "conversations", or --format llava) is checked here,
    any other dataset by helpers.encode.check_data."""
    from helpers.encode.chat_format import DEFAULT_TEMPLATE
    from helpers.encode.check_data import build_parser, main as check_text
    from helpers.encode.templates import resolve_system
    from helpers.multimodal.llava_data import is_llava_file
    args = build_parser().parse_args(argv)
    if not (args.format == "llava" or (args.format == "auto" and is_llava_file(args.file))):
        return check_text(argv)
    template = "auto" if args.template == DEFAULT_TEMPLATE and args.tokenizer else args.template
    return check_llava(args.file, args.image_folder, args.tokenizer, args.vision, template, args.max_length,
                       resolve_system(args.system, args.system_template) or "", args.show)
