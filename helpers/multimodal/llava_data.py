"""LLaVA data: XTuner/LLaVA JSON + an image folder -> conversations with an image -> input_ids, labels, pixels.

A record: {"id", "image": "relative/path.png", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": "..."}, ...]}; "image" may be absent (a text-only record, as LLaVA's mixes have). As in
XTuner's llava_map_fn the <image> placeholder moves to the front of its message, followed by a newline. Encoding
is the text encoder's (same template, same masks) with the placeholder replaced by one image token per patch of
the vision tower; those positions are never trained (label -100), like the prompt.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from helpers.data.conversation import Conversation, Turn
from helpers.data.formats import RecordError, normalise
from helpers.data.records import Issue, Record, read_records
from helpers.encode.encoding import IGNORE_INDEX, IMAGE_TOKEN, Encoder, Sample
from helpers.errors import TunebookError


@dataclass
class LlavaExample:
    conversation: Conversation
    image: Path | None         # None: a text-only record
    where: str                 # FILE:LINE


class LlavaDataError(TunebookError):
    """The data file has bad records; the message lists them as FILE:LINE: what is wrong and the fix."""


def _image_count(conversation: Conversation) -> int:
    return sum(turn.input.count(IMAGE_TOKEN) + turn.output.count(IMAGE_TOKEN) for turn in conversation.turns)


def _image_first(text: str) -> str:
    """llava_map_fn: '<image>' moves to the front of the message, then a newline."""
    if IMAGE_TOKEN not in text:
        return text
    return (IMAGE_TOKEN + "\n" + text.replace(IMAGE_TOKEN, "").strip()).strip()


def _checked(record: Record, image_folder: Path) -> LlavaExample:
    value = record.value
    if not isinstance(value, dict) or "conversations" not in value:
        keys = ", ".join(value) if isinstance(value, dict) else type(value).__name__
        raise RecordError(f'a LLaVA record needs "conversations" (and "image" when it shows one); found: {keys}')
    conversation = normalise(value, "sharegpt")
    placeholders = _image_count(conversation)
    image = value.get("image")
    if image is not None and not isinstance(image, str):
        raise RecordError(f'"image" must be one file name (a string), not {type(image).__name__}; tunebook trains '
                          "one picture per conversation, as the camp's LLaVA recipe")
    if any(IMAGE_TOKEN in turn.output for turn in conversation.turns):
        raise RecordError(f"an answer (gpt) contains {IMAGE_TOKEN}; the placeholder belongs in a human message")
    wanted = 1 if image else 0
    if placeholders != wanted:
        fix = (f'put one {IMAGE_TOKEN} in the first human message' if image else
               f'add "image": "<file>" or remove the {IMAGE_TOKEN} placeholder')
        raise RecordError(f"{placeholders} {IMAGE_TOKEN} placeholder(s) for {wanted} image(s): {fix}")
    path = None
    if image:
        path = image_folder / image
        if not path.is_file():
            raise RecordError(f'image "{image}" not found: looked for {path}; set the image folder '
                              "(--image-folder) to where the pictures are, or fix the name")
        try:
            from PIL import Image
            with Image.open(path) as picture:
                picture.verify()
        except Exception as err:
            raise RecordError(f'image "{image}" cannot be read ({type(err).__name__}: {err}); '
                              "re-save it as PNG or JPEG") from None
    turns = [replace(turn, input=_image_first(turn.input)) for turn in conversation.turns]
    return LlavaExample(Conversation(turns, source=record.where), path, record.where)


def load_llava(path: str | os.PathLike, image_folder: str | os.PathLike | None = None
               ) -> tuple[list[LlavaExample], list[Issue]]:
    """Every record checked: (good examples, issues). Image names are relative to `image_folder` (default: the data
    file's folder)."""
    folder = Path(image_folder) if image_folder else Path(path).parent
    examples, issues = [], []
    for item in read_records(path):
        if isinstance(item, Issue):
            issues.append(item)
            continue
        try:
            examples.append(_checked(item, folder))
        except RecordError as err:
            issues.append(Issue(item.where, str(err)))
    return examples, issues


def load_llava_strict(path: str | os.PathLike, image_folder: str | os.PathLike | None = None,
                      shown: int = 5) -> list[LlavaExample]:
    examples, issues = load_llava(path, image_folder)
    if issues:
        lines = "\n".join(f"  {issue}" for issue in issues[:shown])
        more = f"\n  ... and {len(issues) - shown} more" if len(issues) > shown else ""
        raise LlavaDataError(f"{len(issues)} bad record(s) in {path}:\n{lines}{more}\n"
                             f"python -m helpers check-data {path} lists them all")
    if not examples:
        raise LlavaDataError(f"{path}: no records")
    return examples


def is_llava_file(path: str | os.PathLike) -> bool:
    """A JSON/JSONL file whose first record has LLaVA's "image" + "conversations" (what check-data dispatches on)."""
    try:
        first = next(iter(read_records(path)))
    except Exception:
        return False
    return isinstance(first, Record) and isinstance(first.value, dict) and {"image", "conversations"} <= set(first.value)


# ---------------------------------------------------------------- encoding

def image_encoder(tokenizer, template, max_length: int, image_token_id: int, image_tokens: int,
                  system: str = "") -> Encoder:
    return Encoder(tokenizer, template, max_length, system, image=(image_token_id, image_tokens))


def encode_example(encoder: Encoder, example: LlavaExample) -> Sample | None:
    sample = encoder.encode(example.conversation)
    if sample is None:
        return None
    image_id, count = encoder.image
    found = sum(1 for i in sample.input_ids if i == image_id)
    if found != (count if example.image else 0):
        raise LlavaDataError(f"{example.where}: max_length {encoder.max_length} cuts the picture's {count} image "
                             f"tokens; raise max_length above {count} + the prompt")
    assert all(label == IGNORE_INDEX for i, label in zip(sample.input_ids, sample.labels) if i == image_id)
    return sample


def prompt_ids(encoder: Encoder, question: str, history: list[Turn] = (), image: bool = True) -> list[int]:
    """The generation prompt for `question` (with the picture in the first message, as in training)."""
    first = not history
    text = f"{IMAGE_TOKEN}\n{question}" if image and first and IMAGE_TOKEN not in question else question
    return encoder.prompt_ids(Conversation([*history, Turn(_image_first(text), "")]))


# ---------------------------------------------------------------- batches

def pixel_values(image_processor, paths: list[Path]):
    from PIL import Image
    pictures = []
    for path in paths:
        with Image.open(path) as picture:
            pictures.append(picture.convert("RGB"))
    return image_processor(images=pictures, return_tensors="pt")["pixel_values"]


class LlavaDataset:
    """Micro-batches (the engine's layout: one item = {"samples": [...]} of batch_size samples) + their images,
    in one order drawn from the seed, loaded lazily so a large image set never sits in memory."""

    def __init__(self, samples: list[Sample], images: list[Path | None], batch_size: int, seed: int):
        import random
        order = list(range(len(samples)))
        random.Random(seed).shuffle(order)
        self.samples, self.images = samples, images
        self.batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        batch = self.batches[index]
        return {"samples": [self.samples[i] for i in batch], "images": [self.images[i] for i in batch]}


def collate(items: list[dict], image_processor, pad_token_id: int, meter=None) -> dict:
    from helpers.encode.packing import collate_micro_batch
    item = items[0]
    if meter is not None:
        meter.observe(item)
    batch = collate_micro_batch([{"samples": item["samples"]}], pad_token_id)
    paths = [p for p in item["images"] if p is not None]
    if paths:
        batch["pixel_values"] = pixel_values(image_processor, paths)
    return batch
