"""A LLaVA model = vision tower + 2-layer MLP projector + chat LM, as transformers' LlavaForConditionalGeneration.

XTuner's LLaVA (llava_internlm2_chat_1_8b_..._clip_vit_large_p14_336) keeps the three as separate folders and
needs its own code to load them; here they are one transformers model, so a merged result loads with plain
`LlavaForConditionalGeneration.from_pretrained` + `AutoProcessor`. The recipe's choices are kept: the image is
read at the vision tower's second-to-last layer, its CLS token dropped (vision_feature_layer=-2, "default"), and
the projector is Linear -> GELU -> Linear into the LM's hidden size. An InternLM2 LM is converted to Llama first
(helpers.models.loading.prepare_checkpoint), as for text training.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from helpers.encode.encoding import IMAGE_TOKEN
from helpers.errors import TunebookError

PROJECTOR_FILE = "projector.safetensors"
LLAVA_RECORD = "tunebook_llava.json"   # beside an adapter / projector / merged folder: which tower + LM it belongs to
# XTuner saves its ProjectorModel as nn.Sequential(Linear, GELU, Linear): model.0.* and model.2.*
_XTUNER_PROJECTOR_KEYS = {"model.0.": "linear_1.", "model.2.": "linear_2."}


@dataclass
class Llava:
    model: object          # LlavaForConditionalGeneration
    processor: object      # LlavaProcessor (image processor + tokenizer with <image>)
    tokenizer: object
    vision_path: Path
    lm_path: Path          # the LM folder it was built from (an InternLM2 model: its converted Llama copy)
    image_tokens: int      # image positions per picture = the tower's patch count


def image_token_count(vision_config) -> int:
    """Patches of one picture ("default" strategy drops CLS): 576 for ViT-L/14 at 336 px, 16 for the tiny tower."""
    return (vision_config.image_size // vision_config.patch_size) ** 2


def add_image_token(tokenizer) -> int:
    """The id of <image> in `tokenizer`, added as a special token when missing (so text never spells it)."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]},
                                     replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def build_llava(vision: str | os.PathLike, lm: str | os.PathLike, projector: str | os.PathLike | None = None,
                dtype=None, bits: int | None = None) -> Llava:
    """Assemble a LLaVA from a CLIP vision folder and an LM folder (+ a trained projector: our folder / file or
    XTuner's projector `.pth` / safetensors). Without a projector it is freshly initialised (stage 1 trains it).
    bits=4 loads the LM in NF4 (QLoRA); the vision tower and projector stay in `dtype`."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    from helpers.encode.encoding import load_tokenizer
    from helpers.models.find import resolve_model
    from helpers.models.loading import from_pretrained, prepare_checkpoint
    from helpers.multimodal.tower import load_vision

    dtype = dtype or torch.float32
    tower, image_processor = load_vision(vision, dtype=dtype)
    lm_path = prepare_checkpoint(resolve_model(lm))
    language = from_pretrained(lm_path, dtype=dtype, bits=bits)
    device = language.get_input_embeddings().weight.device
    tower.to(device)
    tokenizer = load_tokenizer(lm_path)
    image_id = add_image_token(tokenizer)
    if image_id >= language.get_input_embeddings().num_embeddings:
        # the id lands past the LM's vocabulary (SmolLM2, InternLM2): one more row, rounded up as LLaVA-1.5 does.
        # The row is never read (image positions take the projector's output) and generation suppresses it.
        language.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    config = LlavaConfig(vision_config=tower.config, text_config=language.config, image_token_id=image_id,
                         projector_hidden_act="gelu", vision_feature_layer=-2,
                         vision_feature_select_strategy="default", multimodal_projector_bias=True,
                         tie_word_embeddings=bool(getattr(language.config, "tie_word_embeddings", False)))
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = language.model
    model.lm_head = language.lm_head
    torch.manual_seed(0)    # the projector's first draw is the same every time
    model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(device=device, dtype=dtype)
    if projector is not None:
        load_projector(model, projector)
    model.generation_config = language.generation_config
    model.generation_config.suppress_tokens = [image_id]
    processor = make_processor(image_processor, tokenizer, tower.config)
    return Llava(model, processor, tokenizer, resolve_model(vision), lm_path, image_token_count(tower.config))


_TEXT_CONTENT = "{% set ns.input = ns.input + message['content'] %}"
# Processors hand the template a message's content as parts ([{"type": "image"}, {"type": "text", "text": ...}]).
# The picture goes first, then a newline, then the text: where llava_map_fn puts it for training.
_PARTS_CONTENT = ("{% if message['content'] is string %}" + _TEXT_CONTENT + "{% else %}"
                  "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
                  "{% set ns.input = ns.input + '" + IMAGE_TOKEN + "\n' %}{% endif %}{% endfor %}"
                  "{% for part in message['content'] %}{% if part['type'] == 'text' %}"
                  "{% set ns.input = ns.input + part['text'] %}{% endif %}{% endfor %}{% endif %}")


def llava_chat_template(text_template: str | None) -> str | None:
    """The training template's Jinja (helpers.encode.templates.to_jinja) taught to read image + text parts."""
    if text_template is None or _TEXT_CONTENT not in text_template:
        return text_template
    return text_template.replace(_TEXT_CONTENT, _PARTS_CONTENT)


def use_template(llava: "Llava", template) -> None:
    """The training template (a ChatFormat) as chat_template of the tokenizer and of the processor."""
    template.apply_to(llava.tokenizer)
    llava.tokenizer.chat_template = llava_chat_template(llava.tokenizer.chat_template)
    llava.processor.chat_template = llava.tokenizer.chat_template


def make_processor(image_processor, tokenizer, vision_config):
    from transformers import LlavaProcessor
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision_config.patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          image_token=IMAGE_TOKEN, chat_template=tokenizer.chat_template)


def projector_state(path: str | os.PathLike) -> dict:
    """Projector weights as linear_1/linear_2 tensors from our file/folder or XTuner's (projector/ folder, .pth)."""
    import torch
    from safetensors.torch import load_file
    path = Path(path)
    if path.is_dir():
        candidates = [path / PROJECTOR_FILE, path / "projector" / "model.safetensors", path / "model.safetensors"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise TunebookError(f"{path}: no projector weights ({', '.join(c.name for c in candidates)}); give the "
                                "stage-1 output folder, its projector.safetensors, or XTuner's projector folder")
        path = found
    if not path.is_file():
        raise TunebookError(f"{path}: no such projector file")
    if path.suffix == ".pth":
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    else:
        state = load_file(str(path))
    out = {}
    for key, value in state.items():
        key = key.split("multi_modal_projector.")[-1].removeprefix("projector.")
        for old, new in _XTUNER_PROJECTOR_KEYS.items():
            if key.startswith(old):
                key = new + key[len(old):]
        if key.startswith(("linear_1.", "linear_2.")):
            out[key] = value
    if sorted(out) != ["linear_1.bias", "linear_1.weight", "linear_2.bias", "linear_2.weight"]:
        raise TunebookError(f"{path}: not a 2-layer MLP projector (found {', '.join(sorted(state)[:6]) or 'nothing'})")
    return out


def load_projector(model, path: str | os.PathLike) -> None:
    projector = model.model.multi_modal_projector
    state = projector_state(path)
    expected = {k: tuple(v.shape) for k, v in projector.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise TunebookError(f"{path}: projector shapes {found} do not fit this tower + LM ({expected}); it was "
                            "trained for another vision encoder or LM")
    projector.load_state_dict({k: v.to(projector.linear_1.weight.dtype) for k, v in state.items()})


def save_projector(model, out_dir: Path) -> Path:
    from safetensors.torch import save_file
    state = {k: v.detach().cpu().contiguous() for k, v in model.model.multi_modal_projector.state_dict().items()}
    save_file(state, str(out_dir / PROJECTOR_FILE))
    return out_dir / PROJECTOR_FILE


def write_llava_record(folder: Path, vision: Path, lm: Path, stage: str, extra: dict | None = None) -> None:
    record = {"vision": str(vision), "lm": str(lm), "stage": stage, **(extra or {})}
    (folder / LLAVA_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_llava_record(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / LLAVA_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
