"""Proof that the chat format travels with a merged model: plain transformers reproduces tunebook's chat.

`check_export(merged_dir, question)` loads the folder with nothing but AutoTokenizer / AutoModelForCausalLM, builds
the prompt with `apply_chat_template(messages, add_generation_prompt=True)` and generates greedily with only the
folder's generation_config.json for stopping; then it asks the same question through tunebook's ChatSession (the
training template, helpers.models.generation). Any tool that uses the saved chat_template and generation_config (vLLM,
LMDeploy, Ollama imports, a learner's own script) therefore gets the format the model was trained on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class ExportReport:
    question: str
    system: str
    plain_prompt: str            # apply_chat_template's text
    project_prompt: str          # the training rendering tunebook's chat uses
    prompt_equal: bool           # same token ids
    plain_answer: str
    project_answer: str
    answer_equal: bool
    last_token: str              # what the plain generate stopped on
    stopped_at_stop_token: bool  # ended on a generation_config eos id (e.g. <|im_end|>), not on max_new_tokens

    @property
    def ok(self) -> bool:
        return self.prompt_equal and self.answer_equal and self.stopped_at_stop_token

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def plain_transformers_answer(model_dir: str | Path, messages: list[dict], max_new_tokens: int = 128):
    """(prompt ids, new token ids, tokenizer) with plain transformers: no tunebook code in this path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    prompt = inputs["input_ids"][0].tolist()
    return prompt, output[0, len(prompt):].tolist(), tokenizer, model.generation_config


def check_export(merged_dir: str | Path, question: str, system: str | None = None,
                 max_new_tokens: int = 128) -> ExportReport:
    """Compare plain transformers with tunebook's chat session (greedy) on one question."""
    from helpers.chat.session import load_chat
    from helpers.models.generation import Sampling

    session = load_chat(merged_dir, sampling=Sampling(temperature=0.0, max_new_tokens=max_new_tokens))
    system = session.system if system is None else system
    session.system = system
    project_ids = session.prompt_ids(question)
    project_answer = session.ask(question)

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    prompt, new_ids, tokenizer, generation_config = plain_transformers_answer(merged_dir, messages, max_new_tokens)
    eos = generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    stopped = bool(new_ids) and new_ids[-1] in eos
    answer_ids = new_ids[:-1] if stopped else new_ids
    decode = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
    plain_answer = tokenizer.decode(answer_ids, **decode)
    return ExportReport(
        question=question, system=system, plain_prompt=tokenizer.decode(prompt, **decode),
        project_prompt=session.tokenizer.decode(project_ids, **decode), prompt_equal=prompt == project_ids,
        plain_answer=plain_answer, project_answer=project_answer, answer_equal=plain_answer == project_answer,
        last_token=tokenizer.convert_ids_to_tokens(new_ids[-1]) if new_ids else "", stopped_at_stop_token=stopped)
