"""Answers about a picture: the training template's prompt with the image tokens, greedy or sampled.

One prompt builder for training samples, evaluation, the CLI and the notebook (helpers.multimodal.llava_data),
so chat sees exactly what training saw. Loading covers XTuner's three ways to name a LLaVA: a merged folder,
a stage-2 adapter folder (its record names the tower and LM), or LM + projector/adapter + vision encoder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from helpers.errors import TunebookError
from helpers.models.generation import Sampling


@dataclass
class LlavaChat:
    model: object
    processor: object
    tokenizer: object
    template: object          # ChatFormat
    system: str = ""
    image_tokens: int = 0
    history: list = field(default_factory=list)   # Turns of the conversation about the current picture
    pixels: object = None
    sampling: Sampling = Sampling(temperature=0.0, max_new_tokens=256)   # greedy: the same picture, the same answer

    def encoder(self):
        from helpers.multimodal.llava_data import image_encoder
        return image_encoder(self.tokenizer, self.template, 1 << 20, self.model.config.image_token_id,
                             self.image_tokens, self.system)

    def set_image(self, image) -> None:
        """A new picture (path or PIL image) starts a new conversation."""
        from PIL import Image
        if isinstance(image, (str, os.PathLike)):
            if not Path(image).is_file():
                raise TunebookError(f"{image}: no such image file")
            with Image.open(image) as picture:
                image = picture.convert("RGB")
        self.pixels = self.processor.image_processor(images=[image.convert("RGB")],
                                                     return_tensors="pt")["pixel_values"]
        self.history = []

    def ask(self, question: str, sampling: Sampling | None = None) -> str:
        import torch

        from helpers.data.conversation import Turn
        from helpers.models.generation import stop_token_ids
        from helpers.multimodal.llava_data import prompt_ids
        sampling = sampling or self.sampling
        if self.pixels is None:
            raise TunebookError("no picture yet: give one first (chat --image PATH, or set_image)")
        ids = prompt_ids(self.encoder(), question, self.history, image=True)
        device = self.model.get_input_embeddings().weight.device
        inputs = torch.tensor([ids], device=device)
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=sampling.temperature > 0,
                      eos_token_id=stop_token_ids(self.template, self.tokenizer),
                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        if sampling.temperature > 0:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                          repetition_penalty=sampling.repetition_penalty)
        with torch.no_grad():
            out = self.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                                      pixel_values=self.pixels.to(device, self.model.dtype), **kwargs)
        answer = self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()
        self.history.append(Turn(f"<image>\n{question}" if not self.history else question, answer))
        return answer


    # what helpers.chat.session.terminal_chat drives (the terminal loop: RESET, EXIT, double Enter)
    def reset(self) -> None:
        self.history = []

    def prompt_text(self, message: str) -> str:
        from helpers.multimodal.llava_data import prompt_ids
        ids = prompt_ids(self.encoder(), message, self.history, image=True)
        return self.tokenizer.decode(ids, skip_special_tokens=False).replace(
            "<image>" * self.image_tokens, f"<image × {self.image_tokens}>")

    def stream(self, message: str):
        yield self.ask(message)


def chat_for(llava, template, system: str = "") -> LlavaChat:
    """A LlavaChat over a helpers.multimodal.llava.Llava (built or loaded)."""
    llava.model.eval()
    return LlavaChat(llava.model, llava.processor, llava.tokenizer, template, system, llava.image_tokens)


def answers(chat: LlavaChat, images: list, question: str, sampling: Sampling | None = None) -> list[str]:
    out = []
    for image in images:
        chat.set_image(image)
        out.append(chat.ask(question, sampling))
    return out


def load_llava_chat(model: str | os.PathLike, llava: str | os.PathLike | None = None,
                    vision: str | os.PathLike | None = None, template: str | None = None,
                    system: str | None = None) -> LlavaChat:
    """model: a merged LLaVA folder, a stage-1/2 output (its record names tower + LM), or an LM with
    llava= (stage-1 projector or stage-2 adapter) and vision= (the CLIP folder)."""
    from helpers.multimodal.llava import read_llava_record
    from helpers.models.find import resolve_template
    path = Path(model)
    record = read_llava_record(path) if path.is_dir() else None
    if llava is None and record and record.get("stage") == "merged":
        from helpers.multimodal.merge import load_merged
        loaded = load_merged(path)
    else:
        part = Path(llava) if llava else path
        record = read_llava_record(part) if part.is_dir() else None
        if record is None and (vision is None or llava is None):
            raise TunebookError(f"{model}: not a LLaVA folder of tunebook's (no tunebook_llava.json). Give a merged "
                                "LLaVA folder, a stage-1/stage-2 output folder, or an LM with --llava PROJECTOR_OR_"
                                "ADAPTER and --visual-encoder CLIP_FOLDER (XTuner's flags)")
        from helpers.multimodal.llava_train import load_trained
        loaded = load_trained(part, vision=vision or record["vision"], lm=model if llava else record["lm"])
        record = record or {}
    chosen = template or record.get("template") or "auto"
    fmt = resolve_template(chosen, loaded.lm_path)
    return chat_for(loaded, fmt, record.get("system", "") if system is None else system)
