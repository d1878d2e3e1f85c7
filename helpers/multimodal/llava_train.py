"""LLaVA's two stages on the text engine's parts (TrainingArguments, checkpoints, resume, live view, publishing).

stage "pretrain": only the projector learns (vision tower and LM frozen), on image -> caption pairs; the result is
    <output_dir>/projector/ (projector.safetensors + the tokenizer with <image> + tunebook_llava.json).
stage "finetune": the projector (fully) and LoRA on the LM's linear layers learn, on LLaVA conversations, starting
    from a stage-1 projector; the result is <output_dir>/adapter/ (a PEFT adapter whose modules_to_save holds the
    projector + tokenizer + tunebook_llava.json). The vision tower is never trained, as in the camp's recipe.
Image positions and prompts are never trained (label -100). Checkpoints, resume and "already trained" work as
for text (helpers.train.engine); a rerun into the same output_dir resumes only with the same settings.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from helpers.errors import TunebookError
from helpers.io import check_writable, folder_lock, publish_dir, read_jsonl, write_json

STAGES = ("pretrain", "finetune")
# the LM's linear layers only: LoRA never touches the vision tower or the projector (trained in full instead)
LM_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


@dataclass
class LlavaTrainConfig:
    vision: str = "clip-vit-large-patch14-336"  # CLIP vision encoder (camp: openai/clip-vit-large-patch14-336)
    lm: str = "internlm2-chat-1_8b"             # the chat LM (camp: internlm2-chat-1_8b, converted to Llama)
    stage: str = "finetune"                      # "pretrain" (projector only) or "finetune" (projector + LoRA)
    projector: str | None = None                 # finetune: stage 1's output folder (or XTuner's projector / .pth)
    data_path: str = ""                          # LLaVA JSON / JSONL
    image_folder: str | None = None              # where "image" names are found (default: the data file's folder)
    output_dir: str = "work/llava"
    template: str = "auto"                       # prompt template (auto: from the LM, as for text)
    system: str = ""
    mode: str = "lora"                           # "qlora" = LM in NF4 (GPU), "lora" = LM in the compute dtype
    dtype: str = "auto"
    max_length: int = 2048                       # image tokens count too (576 per picture for ViT-L/14-336)
    batch_size: int = 8                          # pictures per micro-batch
    accumulative_counts: int = 1
    max_epochs: float = 1
    max_steps: int = -1
    lr: float = 2e-4                             # camp finetune 2e-4; LLaVA pretrain uses 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    max_norm: float = 1.0
    warmup_ratio: float = 0.03
    lora_r: int = 64                             # camp LLaVA finetune: r 512, alpha 256 (on a GPU)
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    optim: str = "auto"
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    report_to: str = "none"
    dataloader_num_workers: int = 0
    deepspeed: str | None = None

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise TunebookError(f"stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        if self.mode not in ("lora", "qlora"):
            raise TunebookError(f"mode: {self.mode!r}; LLaVA trains the LM with lora or qlora")
        if not self.data_path:
            raise TunebookError("data_path: give the LLaVA JSON file to train on")
        if self.stage == "finetune" and not self.projector:
            raise TunebookError("projector: stage finetune starts from a trained projector; run stage pretrain "
                                "first and give its output folder (or XTuner's projector)")
        for name in ("batch_size", "accumulative_counts", "max_length", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise TunebookError(f"{name}: must be at least 1, got {getattr(self, name)}")

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data


@dataclass
class LlavaResult:
    output_dir: Path
    result_dir: Path            # projector/ (pretrain) or adapter/ (finetune)
    steps: int
    losses: list
    record: dict
    resumed_from: str | None = None


RESUME_KEYS = tuple(f.name for f in dataclasses.fields(LlavaTrainConfig)
                    if f.name not in ("output_dir", "logging_steps", "save_steps", "save_total_limit", "report_to",
                                      "dataloader_num_workers"))


def _digest(config: LlavaTrainConfig) -> str:
    import hashlib
    chosen = {k: config.as_dict()[k] for k in RESUME_KEYS}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def train_llava(config: LlavaTrainConfig, notebook: bool | None = None, callbacks: list | None = None) -> LlavaResult:
    """Train (or resume, or return the finished result of) one stage."""
    from helpers.train.engine import _check_resumable
    config.validate()
    output_dir = Path(config.output_dir)
    final_dir = output_dir / ("projector" if config.stage == "pretrain" else "adapter")
    digest = _digest(config)
    check_writable(output_dir, "output_dir")
    with folder_lock(output_dir, f"LLaVA {config.stage} of {config.lm}"):
        done = _finished(output_dir, final_dir, digest)
        if done:
            return done
        _check_resumable(output_dir, digest)
        return _fit(config, output_dir, final_dir, digest, notebook, callbacks or [])


def _fit(config, output_dir: Path, final_dir: Path, digest: str, notebook, callbacks) -> LlavaResult:
    from helpers.models.find import resolve_template
    from helpers.models.loading import compute_dtype
    from helpers.multimodal.llava import build_llava, use_template
    from helpers.multimodal.llava_data import LlavaDataset, encode_example, image_encoder, load_llava_strict
    from helpers.train.engine import choose_optimizer, device_kind_for_training, training_arguments, _resume_point
    from helpers.train.live_view import LiveView, TokenMeter

    examples = load_llava_strict(config.data_path, config.image_folder)   # bad data fails before any loading
    device = device_kind_for_training()
    dtype = compute_dtype(config.dtype)
    llava = build_llava(config.vision, config.lm, config.projector if config.stage == "finetune" else None,
                        dtype=dtype, bits=4 if config.mode == "qlora" else None)
    template = resolve_template(config.template, llava.lm_path)
    use_template(llava, template)
    encoder = image_encoder(llava.tokenizer, template, config.max_length, llava.model.config.image_token_id,
                            llava.image_tokens, config.system)
    pairs = [(encode_example(encoder, e), e.image) for e in examples]
    pairs = [(s, image) for s, image in pairs if s is not None]
    if not pairs:
        raise TunebookError(f"{config.data_path}: no record has anything to train on after encoding")
    samples, images = [p[0] for p in pairs], [p[1] for p in pairs]
    model = _trainable(llava.model, config)
    optim = choose_optimizer(config, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"LLaVA {config.stage}: vision {llava.vision_path}, LM {llava.lm_path}, template {template}")
    print(f"trainable  {trainable:,} of {total:,} parameters ({trainable / total:.2%}): "
          + ("the projector" if config.stage == "pretrain" else "the projector + LoRA on the LM"))
    print(f"data       {config.data_path}: {len(samples)} samples, {sum(i is not None for i in images)} pictures "
          f"x {llava.image_tokens} image tokens, {sum(s.trained_tokens for s in samples):,} trained tokens")
    write_json(output_dir / "run.json", {"digest": digest, "settings": config.as_dict()})
    resume = _resume_point(output_dir, 0)
    meter = TokenMeter()
    view = LiveView(meter, [], notebook=notebook)
    dataset = LlavaDataset(samples, images, config.batch_size, config.seed)
    trainer = _trainer(config, model, llava, dataset, training_arguments(config, device, dtype, optim), digest,
                       meter, [view, *callbacks])
    started = time.time()
    trainer.train(resume_from_checkpoint=resume)
    record = {"vision": str(llava.vision_path), "lm": str(llava.lm_path), "stage": config.stage,
              "template": template.name, "system": config.system, "image_tokens": llava.image_tokens,
              "projector_from": config.projector if config.stage == "finetune" else None,
              "training": {"steps": trainer.state.global_step, "seconds": round(time.time() - started, 1),
                           "trainable_parameters": trainable, "samples": len(samples), "lr": config.lr,
                           "final_loss": view.losses[-1][1] if view.losses else None, "resumed_from": resume}}
    _publish(trainer, llava, record, output_dir, final_dir, config.stage)
    return LlavaResult(output_dir, final_dir, trainer.state.global_step, view.losses, record, resume)


def _trainable(model, config: LlavaTrainConfig):
    """pretrain: only the projector has gradients; finetune: LoRA on the LM + the projector (modules_to_save)."""
    for param in model.parameters():
        param.requires_grad = False
    model.model.multi_modal_projector.float()   # trained in full: fp32 master weights (mixed precision autocasts)
    model.config.use_cache = False
    if config.stage == "pretrain":
        for param in model.model.multi_modal_projector.parameters():
            param.requires_grad = True
        return model
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed
    set_seed(config.seed)   # LoRA's A matrices are drawn here
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=LM_LINEAR, modules_to_save=["multi_modal_projector"], task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _trainer(config, model, llava, dataset, args, digest: str, meter, callbacks):
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    from helpers.encode.encoding import pad_token_id
    from helpers.multimodal.llava import load_projector, save_projector
    from helpers.multimodal.llava_data import collate
    from helpers.train.callbacks import CheckpointMarker, LogMilestones, LossLog

    class ProjectorTrainer(Trainer):
        # Stage 1 trains a few million weights of a model that is not a PEFT model: the Trainer would save (and on
        # resume load) the whole LLaVA in every checkpoint. Only the projector changes, so only it is kept.
        def _save(self, output_dir=None, state_dict=None):
            out = Path(output_dir or self.args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            save_projector(self.model, out)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            load_projector(model or self.model, resume_from_checkpoint)

    kind = ProjectorTrainer if config.stage == "pretrain" else Trainer
    output_dir = Path(config.output_dir)
    trainer = kind(model=model, args=args, train_dataset=dataset, processing_class=llava.tokenizer,
                   data_collator=partial(collate, image_processor=llava.processor.image_processor,
                                         pad_token_id=pad_token_id(llava.tokenizer), meter=meter),
                   callbacks=[CheckpointMarker(digest, meter), LogMilestones(), LossLog(output_dir / "loss.jsonl"),
                              *callbacks])
    trainer.remove_callback(PrinterCallback)
    return trainer


def _publish(trainer, llava, record: dict, output_dir: Path, final_dir: Path, stage: str) -> None:
    from helpers.multimodal.llava import save_projector, write_llava_record
    staging = output_dir / f".{final_dir.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if stage == "pretrain":
        save_projector(trainer.model, staging)
    else:
        trainer.save_model(str(staging))
        (staging / "training_args.bin").unlink(missing_ok=True)
    llava.processor.save_pretrained(staging)   # tokenizer with <image> + the training template, image processor
    write_llava_record(staging, Path(record["vision"]), Path(record["lm"]), stage,
                       {k: v for k, v in record.items() if k not in ("vision", "lm", "stage")})
    publish_dir(staging, final_dir)
    print(f"{'projector' if stage == 'pretrain' else 'adapter'} saved to {final_dir}")


def _finished(output_dir: Path, final_dir: Path, digest: str) -> LlavaResult | None:
    from helpers.multimodal.llava import read_llava_record
    record, run = read_llava_record(final_dir), output_dir / "run.json"
    if record is None or not run.is_file():
        return None
    if json.loads(run.read_text(encoding="utf-8")).get("digest") != digest:
        raise TunebookError(f"{output_dir} holds a finished run with different settings; choose a new output_dir "
                            "or delete the old one")
    print(f"already trained: {final_dir} (delete {output_dir} to train again)")
    losses = [(e["step"], e["loss"]) for e in read_jsonl(output_dir / "loss.jsonl")]
    return LlavaResult(output_dir, final_dir, record["training"]["steps"], losses, record)


def load_trained(folder: str | Path, vision: str | Path, lm: str | Path, dtype=None):
    """A Llava with a stage's result applied: stage 1's projector, or stage 2's adapter (LoRA + projector)."""
    from helpers.multimodal.llava import PROJECTOR_FILE, build_llava
    folder = Path(folder)
    if (folder / PROJECTOR_FILE).is_file() or not (folder / "adapter_config.json").is_file():
        llava = build_llava(vision, lm, folder, dtype=dtype)
        _use_saved_tokenizer(llava, folder)
        return llava
    from peft import PeftModel
    llava = build_llava(vision, lm, dtype=dtype)
    llava.model = PeftModel.from_pretrained(llava.model, str(folder))
    _use_saved_tokenizer(llava, folder)
    return llava


def _use_saved_tokenizer(llava, folder: Path) -> None:
    """The saved tokenizer carries the training template as chat_template."""
    from helpers.encode.encoding import load_tokenizer
    from helpers.multimodal.llava import llava_chat_template
    if (folder / "tokenizer_config.json").is_file():
        llava.tokenizer = load_tokenizer(folder)
        llava.tokenizer.chat_template = llava_chat_template(llava.tokenizer.chat_template)
        llava.processor.tokenizer = llava.tokenizer
        llava.processor.chat_template = llava.tokenizer.chat_template


# ---------------------------------------------------------------- command line

def load_llava_config(path: str | None, overrides: list[str]) -> LlavaTrainConfig:
    """A YAML file of LlavaTrainConfig fields (or none), then `key=value` overrides; unknown keys are named."""
    import difflib

    import yaml
    values: dict = {}
    if path:
        source = Path(path)
        if not source.is_file():
            raise TunebookError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise TunebookError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise TunebookError(f"{path}: a LLaVA config is a mapping of settings (key: value)")
    for item in overrides:
        if "=" not in item:
            raise TunebookError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        field = next((f for f in dataclasses.fields(LlavaTrainConfig) if f.name == key), None)
        # text settings stay verbatim ("007" is a name, not a number)
        values[key] = raw if field is not None and "str" in str(field.type) else yaml.safe_load(raw) if raw.strip() else ""
    known = {f.name: f for f in dataclasses.fields(LlavaTrainConfig)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise TunebookError(f"unknown LLaVA setting {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                f"; known: {', '.join(known)}"))
    defaults = LlavaTrainConfig()
    for key, value in values.items():
        values[key] = _typed(key, value, getattr(defaults, key))
    return LlavaTrainConfig(**values)


def _typed(key: str, value, default):
    """A setting in its field's type: YAML reads 3e-3 as text and 7 where 7.0 is meant."""
    if value is None or default is None and isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, int) and not isinstance(value, bool):
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TunebookError(f"{key}: {value!r} is not a {type(default).__name__} (default {default!r})") from None
    return str(value)


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m helpers train-llava",
                                     description="Train LLaVA stage 1 (pretrain: the projector) or stage 2 "
                                                 "(finetune: projector + LoRA on the LM), resuming when asked again.")
    parser.add_argument("config", nargs="?", help="YAML of settings (see LlavaTrainConfig); or only --set")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting, e.g. --set stage=pretrain --set data_path=work/data/swatches/pretrain.json")
    args = parser.parse_args(argv)
    config = load_llava_config(args.config, args.set)
    result = train_llava(config, notebook=False)
    print(f"done: {result.steps} steps; {config.stage} result: {result.result_dir}")
    return 0
