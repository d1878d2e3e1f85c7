"""`python -m helpers upload` and its model card: the exact card of an adapter and of a merged model (evaluated and
not), --dry-run's listing without the run's junk, `evaluate` writing evaluation.json, and the real upload through
huggingface_hub against a local stand-in of the hub's HTTP API that records every file it receives."""
from __future__ import annotations

import base64
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
import yaml

from helpers.share.card import CARD_MARK, model_card
from helpers.share.upload import HF_NO_TOKEN, MS_MISSING

TOKEN = "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0123"

CHATML = {"name": "chatml", "instruction": "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
          "system": "<|im_start|>system\n{system}<|im_end|>\n", "suffix": "<|im_end|>", "suffix_as_eos": True,
          "sep": "\n", "stop_words": ["<|im_end|>"]}
ADAPTER_RECORD = {
    "tunebook_version": "0.1.0", "written": "2026-12-03T10:00:00",
    "base_model": {"name": "smollm2-135m-instruct", "path": "/cache/tunebook/models/smollm2-135m-instruct",
                   "loaded_path": "/cache/tunebook/models/smollm2-135m-instruct", "config_hash": "0123456789abcdef"},
    "template": CHATML, "system": "", "mode": "lora",
    "lora": {"r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": ["down_proj", "o_proj", "q_proj", "v_proj"],
             "top_layers": 16},
    "data": {"path": "/home/learner/work/data/persona.jsonl", "format": "conversation", "records": 251,
             "general_answers": {"from": "base", "file": "/home/learner/work/train/base_answers.jsonl",
                                 "answered": 51},
             "samples": 251, "tokens": 17000, "trained_tokens": 6800, "truncated": 0, "dropped": 0},
    "batching": {"strategy": "packed", "pack": True, "max_length": 256, "batch_size": 4, "accumulative_counts": 1,
                 "world_size": 1, "micro_batches_per_epoch": 80, "efficiency": 0.95, "trained_share": 0.4},
    "training": {"optim": "adamw_torch", "dtype": "bfloat16", "lr": 0.001, "loss_chunk": 256, "device": "cpu",
                 "trainable_parameters": 1843200, "total_parameters": 136358208, "steps": 120, "epochs": 6.0,
                 "seconds": 182.4, "final_loss": 0.41234, "resumed_from": None},
    "settings": {"lr": 0.001, "max_epochs": 6.0, "max_steps": -1, "max_length": 256, "batch_size": 4,
                 "accumulative_counts": 1, "evaluation_inputs": ["Who are you?"]},
}
INTERNLM2 = {"name": "internlm2_chat", "instruction": "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
             "system": "<|im_start|>system\n{system}<|im_end|>\n", "suffix": "<|im_end|>", "suffix_as_eos": True,
             "sep": "\n", "stop_words": ["<|im_end|>"]}
MERGED_RECORD = {
    "tunebook_version": "0.1.0", "written": "2026-12-04T09:30:00",
    "base_model": {"name": "internlm2-chat-1_8b",
                   "path": "/root/share/new_models/Shanghai_AI_Laboratory/internlm2-chat-1_8b",
                   "loaded_path": "/root/.cache/tunebook/internlm2-llama/internlm2-chat-1_8b",
                   "config_hash": "fedcba9876543210"},
    "template": INTERNLM2, "system": "你是伍鲜同志的小助手，回答用 `中文`。", "mode": "qlora",
    "lora": {"r": 64, "alpha": 16.0, "dropout": 0.1, "target_modules": ["wqkv_q", "o_proj"], "top_layers": None},
    "data": {"path": "work/data/persona.jsonl", "format": "conversation", "records": 1700, "general_answers": None,
             "samples": 1700, "tokens": 120000, "trained_tokens": 60000, "truncated": 2, "dropped": 1},
    "batching": {"strategy": "packed", "pack": True, "max_length": 2048, "batch_size": 1, "accumulative_counts": 16,
                 "world_size": 2, "micro_batches_per_epoch": 60, "efficiency": 0.97, "trained_share": 0.5},
    "training": {"optim": "paged_adamw_32bit", "dtype": "bfloat16", "lr": 0.0002, "loss_chunk": 256,
                 "device": "cuda", "trainable_parameters": 1, "total_parameters": 2, "steps": 6, "epochs": 3.0,
                 "seconds": 95.0, "final_loss": 0.0213, "resumed_from": None},
    "settings": {"lr": 0.0002, "max_epochs": 3.0, "max_steps": -1, "max_length": 2048, "batch_size": 1,
                 "accumulative_counts": 16, "evaluation_inputs": ["请介绍一下你自己"]},
    "merged_from": {"dtype": "bfloat16", "base": {"name": "internlm2-chat-1_8b"}},
}
EVALUATION = {
    "task": "persona", "date": "2026-12-04T10:00:00", "heldout": "/root/work/data/persona.heldout.jsonl",
    "counts": {"identity": 25, "general": 35},
    "before": "before = /root/share/new_models/Shanghai_AI_Laboratory/internlm2-chat-1_8b (the base named in the "
              "model's tunebook.json)",
    "headers": ["metric", "before", "after"],
    "rows": [["persona correct (held-out identity, n=25)", "0.0%", "92.0%"],
             ["复读机 rate (general questions, n=35)", "0.0%", "5.7%"],
             ["similarity to base (general, mean bigram F1)", "1.000", "0.533"],
             ["answer quality (general, bigram F1 to reference)", "0.258", "0.259"]],
    "metrics": {"before": {"persona_correct": 0.0}, "after": {"persona_correct": 0.92}},
}


ADAPTER_CARD = """---
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
library_name: peft
license: apache-2.0
pipeline_tag: text-generation
tags:
- tunebook
- lora
---
<!-- written by tunebook from tunebook.json and evaluation.json; delete this line to keep your edits -->

# me/persona

A LoRA adapter for `HuggingFaceTB/SmolLM2-135M-Instruct`, trained with tunebook (transformers Trainer + PEFT).

## Training data

- `persona.jsonl` (conversation format): 251 records, 251 samples, 17,000 tokens of which 6,800 trained (40.0%)
- truncated: 0, dropped: 0
- 51 general questions answered by the base model itself before training (`general_answers: base`), so they keep the base's answers

## Prompt format

- template: `chatml`, saved in the tokenizer as its `chat_template` (`apply_chat_template` formats prompts exactly as in training)
- system prompt: none

## Training settings

| setting | value |
|---|---|
| mode | lora |
| LoRA | r 16, alpha 32, dropout 0.05 |
| LoRA modules | down_proj, o_proj, q_proj, v_proj (top 16 layers only) |
| learning rate | 0.001 |
| length | 120 optimizer steps, 6 epochs (max_epochs: 6) |
| max length | 256 tokens |
| batch | 4 × 1 accumulation × 1 process(es), packed |
| optimizer, dtype | adamw_torch, bfloat16 |
| final loss | 0.4123 |

## Evaluation

Not evaluated. `python -m helpers evaluate persona --model FOLDER` (or `colorist`) writes evaluation.json beside the model; upload again to add its table here.

## Use it with PEFT and transformers

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

repo = "me/persona"
base = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")
model = PeftModel.from_pretrained(base, repo)
tokenizer = AutoTokenizer.from_pretrained(repo)  # its chat_template is the training template
messages = [{"role": "user", "content": "Who are you?"}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
stop = [tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(["<|im_end|>"])]
output = model.generate(**inputs, max_new_tokens=128, do_sample=False, eos_token_id=stop)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""

MERGED_CARD = """---
base_model: internlm/internlm2-chat-1_8b
library_name: transformers
pipeline_tag: text-generation
tags:
- tunebook
- qlora
- merged
---
<!-- written by tunebook from tunebook.json and evaluation.json; delete this line to keep your edits -->

# me/persona-merged

`internlm/internlm2-chat-1_8b` with a QLoRA adapter (LoRA trained on a 4-bit NF4 base) merged into its weights (bfloat16), trained with tunebook (transformers Trainer + PEFT).

It is saved in the native Llama layout (no `trust_remote_code`); `python -m helpers convert llama-to-internlm2` writes InternLM2's own layout back.

## Training data

- `persona.jsonl` (conversation format): 1,700 records, 1,700 samples, 120,000 tokens of which 60,000 trained (50.0%)
- truncated: 2, dropped: 1

## Prompt format

- template: `internlm2_chat`, saved in the tokenizer as its `chat_template` (`apply_chat_template` formats prompts exactly as in training)
- system prompt (use it when you ask the model):

```text
你是伍鲜同志的小助手，回答用 `中文`。
```

## Training settings

| setting | value |
|---|---|
| mode | qlora |
| LoRA | r 64, alpha 16, dropout 0.1 |
| LoRA modules | wqkv_q, o_proj |
| learning rate | 0.0002 |
| length | 6 optimizer steps, 3 epochs (max_epochs: 3) |
| max length | 2048 tokens |
| batch | 1 × 16 accumulation × 2 process(es), packed |
| optimizer, dtype | paged_adamw_32bit, bfloat16 |
| final loss | 0.0213 |

## Evaluation

`python -m helpers evaluate persona` (2026-12-04T10:00:00): 25 held-out identity questions from `persona.heldout.jsonl` and 35 general questions; before = /root/share/new_models/Shanghai_AI_Laboratory/internlm2-chat-1_8b (the base named in the model's tunebook.json).

| metric | before | after |
|---|---|---|
| persona correct (held-out identity, n=25) | 0.0% | 92.0% |
| 复读机 rate (general questions, n=35) | 0.0% | 5.7% |
| similarity to base (general, mean bigram F1) | 1.000 | 0.533 |
| answer quality (general, bigram F1 to reference) | 0.258 | 0.259 |

## Use it with transformers

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

repo = "me/persona-merged"
model = AutoModelForCausalLM.from_pretrained(repo)
tokenizer = AutoTokenizer.from_pretrained(repo)  # its chat_template is the training template
messages = [{"role": "system", "content": "你是伍鲜同志的小助手，回答用 `中文`。"}, {"role": "user", "content": "请介绍一下你自己"}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=128, do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""

NOT_EVALUATED = ("## Evaluation\n\nNot evaluated. `python -m helpers evaluate persona --model FOLDER` (or `colorist`) "
                 "writes evaluation.json beside the model; upload again to add its table here.\n\n")
PEFT_PLACEHOLDER = "---\nlibrary_name: peft\n---\n\n# Model Card for Model ID\n\n- **Developed by:** [More Information Needed]\n"
MODEL_FILES = ["README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "tokenizer.json",
               "tokenizer_config.json", "tunebook.json"]
JUNK = ["optimizer.pt", "rng_state.pth", "training_args.bin", ".tunebook.lock", ".README.md.x1.tmp", "checkpoint-4/",
        "data_cache/", "logs/", ".adapter.staging/"]


# ---------------------------------------------------------------- the card

def test_the_adapter_card_is_exactly_this():
    assert model_card(ADAPTER_RECORD, None, "me/persona", adapter=True) == ADAPTER_CARD


def test_the_merged_card_evaluated_and_not_is_exactly_this():
    assert model_card(MERGED_RECORD, EVALUATION, "me/persona-merged", adapter=False) == MERGED_CARD
    evaluated = MERGED_CARD[MERGED_CARD.index("## Evaluation"):MERGED_CARD.index("## Use it")]
    assert model_card(MERGED_RECORD, None, "me/persona-merged", adapter=False) == MERGED_CARD.replace(
        evaluated, NOT_EVALUATED)


def test_a_base_converted_from_pypi_is_named_by_its_hub_id(tmp_path):
    """The record of a SmolLM2 run names its base by the cache path; the card names the hub model it came from."""
    from helpers.share.card import base_model_id
    cache = tmp_path / "models" / "smollm2-135m-instruct"
    cache.mkdir(parents=True)
    record = {"base_model": {"name": str(cache), "path": str(cache)}}
    assert base_model_id(record) is None                                      # a local folder: no hub id
    (cache / "tunebook_source.json").write_text(json.dumps({"name": "smollm2-135m-instruct"}))
    assert base_model_id(record) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_the_cards_front_matter_is_yaml_the_hub_reads():
    front = yaml.safe_load(MERGED_CARD.split("---\n")[1])
    assert front == {"base_model": "internlm/internlm2-chat-1_8b", "library_name": "transformers",
                     "pipeline_tag": "text-generation", "tags": ["tunebook", "qlora", "merged"]}
    local = dict(ADAPTER_RECORD, base_model={"name": "/data/my-base", "path": "/data/my-base"})
    text = model_card(local, None, "me/x", adapter=True)
    assert "base_model" not in yaml.safe_load(text.split("---\n")[1])   # a local path is no hub id: left out
    assert 'from_pretrained("/data/my-base")  # a local folder where it was trained' in text


# ---------------------------------------------------------------- the folder: what is sent, what stays

def _write_adapter(folder: Path, record: dict = ADAPTER_RECORD) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}), encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
    (folder / "tokenizer.json").write_text('{"model": {}}', encoding="utf-8")
    (folder / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}', encoding="utf-8")
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}", encoding="utf-8")
    (folder / "tunebook.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "README.md").write_text(PEFT_PLACEHOLDER, encoding="utf-8")
    return folder


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    """A training output_dir as train leaves it (checkpoints, cache, logs, lock) with junk inside adapter/ as well."""
    run = tmp_path / "train-persona"
    adapter = _write_adapter(run / "adapter")
    for name in JUNK:
        target = adapter / name.rstrip("/")
        if name.endswith("/"):
            target.mkdir()
            (target / "optimizer.pt").write_bytes(b"state")
        else:
            target.write_bytes(b"junk")
    for name in ("checkpoint-4", "data_cache", "logs"):
        (run / name).mkdir()
        (run / name / "x.bin").write_bytes(b"x")
    for name in ("loss.jsonl", "run.json", ".tunebook.lock"):
        (run / name).write_text("{}\n", encoding="utf-8")
    return run


def _listed(out: str) -> list[str]:
    start = next(i for i, line in enumerate(out.splitlines()) if line.startswith("to send to "))
    names = []
    for line in out.splitlines()[start + 1:]:
        if not line.startswith("  "):
            break
        names.append(line.split()[0])
    return names


def test_dry_run_writes_the_card_and_lists_only_the_model_files(run_dir, run_cli, monkeypatch):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "HfApi", None)   # any use of the network would fail loudly
    code, out, err = run_cli("upload", run_dir, "me/persona", "--dry-run")
    assert code == 0, err
    adapter = run_dir / "adapter"
    lines = out.splitlines()
    assert lines[0] == f"note: {run_dir} is a training run; uploading its result {adapter} (checkpoints stay here)"
    assert lines[1] == f"model card: written to {adapter / 'README.md'} (it replaces PEFT's empty template card)"
    assert lines[2].startswith("to send to me/persona on the Hugging Face hub: 7 files, ")
    assert _listed(out) == MODEL_FILES
    assert lines[-2] == ("not sent (checkpoints, optimizer states, caches, logs, locks): " + ", ".join(sorted(JUNK)))
    assert lines[-1] == "dry run: nothing was sent (run again without --dry-run to upload)"
    card = (adapter / "README.md").read_text(encoding="utf-8")
    assert card == model_card(ADAPTER_RECORD, None, "me/persona", adapter=True)
    assert [p.name for p in adapter.glob(".README.md.*.tmp")] == [".README.md.x1.tmp"]   # planted; no temp left
    # a second run rewrites its own card (an evaluation may have been added since), and says so
    (adapter / "evaluation.json").write_text(json.dumps(EVALUATION), encoding="utf-8")
    code, out, _ = run_cli("upload", adapter, "me/persona", "--dry-run")
    assert code == 0 and f"model card: written to {adapter / 'README.md'} (rewritten)" in out
    assert "evaluation.json" in _listed(out) and "| persona correct (held-out identity, n=25) | 0.0% | 92.0% |" in \
        (adapter / "README.md").read_text(encoding="utf-8")


def test_a_readme_you_wrote_is_kept_and_sent_as_it_is(tmp_path, run_cli):
    adapter = _write_adapter(tmp_path / "adapter")
    (adapter / "README.md").write_text("# my own card\n", encoding="utf-8")
    code, out, err = run_cli("upload", adapter, "me/persona", "--dry-run")
    assert code == 0, err
    assert f"model card: keeping {adapter / 'README.md'} (you wrote it; delete it to get the generated card)" in out
    assert (adapter / "README.md").read_text(encoding="utf-8") == "# my own card\n" and "README.md" in _listed(out)


def test_a_read_only_folder_gets_its_card_in_a_temporary_folder(tmp_path, run_cli, monkeypatch):
    import errno
    import helpers.share.upload as upload
    adapter = _write_adapter(tmp_path / "adapter")

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(upload, "atomic_file", read_only)
    code, out, err = run_cli("upload", adapter, "me/persona", "--dry-run")
    assert code == 0, err
    note = next(line for line in out.splitlines() if line.startswith("model card:"))
    match = re.fullmatch(rf"model card: {re.escape(str(adapter))} is not writable \(Read-only file system\); "
                         r"written to (.+) instead", note)
    assert match and Path(match[1]).read_text(encoding="utf-8") == model_card(ADAPTER_RECORD, None, "me/persona", True)
    assert (adapter / "README.md").read_text(encoding="utf-8") == PEFT_PLACEHOLDER


# ---------------------------------------------------------------- one-line refusals

def test_refusals_are_one_line_and_exit_2(tmp_path, run_cli, monkeypatch):
    import huggingface_hub
    code, _, err = run_cli("upload", tmp_path / "nope", "me/persona")
    assert code == 2 and err.strip().splitlines() == [
        f"error: {tmp_path / 'nope'}: no such folder (relative paths start from {Path.cwd()})"]
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("upload", tmp_path / "empty", "me/persona")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "holds no model or adapter" in err
    adapter = _write_adapter(tmp_path / "adapter")
    code, _, err = run_cli("upload", adapter, "not a repo")
    assert code == 2 and err.strip() == "error: not a repo: not a repo name; write OWNER/NAME (letters, digits, - _ .)"
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    code, out, err = run_cli("upload", adapter, "me/persona")
    assert code == 2 and err.strip().splitlines() == [f"error: {HF_NO_TOKEN}"] and out == ""
    assert (adapter / "README.md").read_text(encoding="utf-8") == PEFT_PLACEHOLDER   # refused before writing
    assert "hf auth login" in HF_NO_TOKEN and "HF_TOKEN" in HF_NO_TOKEN


def test_modelscope_without_its_package_says_how_to_install_it(tmp_path, run_cli, monkeypatch):
    for name in ("modelscope", "modelscope.hub", "modelscope.hub.api"):
        monkeypatch.setitem(sys.modules, name, None)   # import fails as if it were not installed
    adapter = _write_adapter(tmp_path / "adapter")
    code, _, err = run_cli("upload", adapter, "me/persona", "--hub", "modelscope")
    assert code == 2 and err.strip().splitlines() == [f"error: {MS_MISSING}"]
    assert (adapter / "README.md").read_text(encoding="utf-8") == PEFT_PLACEHOLDER
    assert "pip install 'tunebook[modelscope]'" in MS_MISSING


# ---------------------------------------------------------------- the real upload, against a local hub

class _HubStandIn(BaseHTTPRequestHandler):
    """Just what huggingface_hub 2.x's create_repo + upload_folder call. Every file is answered "regular" (sent
    inline in the commit), so no LFS or xet storage is involved; anything else is recorded as unexpected (404)."""

    def log_message(self, *args):
        pass

    def _reply(self, payload: dict, status: int = 200):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().strip(), 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)

    def do_POST(self):
        hub, path, body = self.server.hub, urlparse(self.path).path, self._body()
        hub.calls.append(path)
        hub.authorizations.add(self.headers.get("Authorization"))
        here = f"http://127.0.0.1:{self.server.server_port}"
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply({"error": "Invalid credentials in Authorization header"}, 401)
        commit = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/main", path)
        if path == "/api/repos/create":
            hub.created.append(json.loads(body))
            return self._reply({"url": f"{here}/{hub.created[-1]['organization']}/{hub.created[-1]['name']}"})
        if path == "/api/validate-yaml":
            yaml.safe_load(json.loads(body)["content"].split("---\n")[1])   # the card's front matter must parse
            return self._reply({"errors": [], "warnings": []})
        if commit and commit[2] == "preupload":
            return self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                           "oid": None} for f in json.loads(body)["files"]]})
        if commit:
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    hub.received[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    hub.unexpected.append(item["key"])
            return self._reply({"commitUrl": f"{here}/{commit[1]}/commit/{'0' * 40}", "commitOid": "0" * 40})
        hub.unexpected.append(path)
        return self._reply({"error": f"the stand-in has no {path}"}, 404)

    do_GET = do_POST


@pytest.fixture()
def local_hub(monkeypatch):
    import huggingface_hub
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubStandIn)
    server.hub = SimpleNamespace(calls=[], created=[], received={}, unexpected=[], authorizations=set(),
                                 url=f"http://127.0.0.1:{server.server_port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)   # the test session is offline
    yield server.hub
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("private", [False, True])
def test_upload_sends_exactly_the_listed_files_and_never_shows_the_token(run_dir, run_cli, local_hub, private):
    code, out, err = run_cli("upload", run_dir, "me/persona", "--endpoint", local_hub.url,
                             *(["--private"] if private else []))
    assert code == 0, err
    adapter = run_dir / "adapter"
    assert sorted(local_hub.received) == MODEL_FILES
    assert local_hub.received == {name: (adapter / name).read_bytes() for name in MODEL_FILES}
    assert local_hub.received["README.md"].decode() == model_card(ADAPTER_RECORD, None, "me/persona", True)
    assert local_hub.created == [{"name": "persona", "organization": "me",
                                  "visibility": "private" if private else "public"}]
    assert local_hub.unexpected == [] and local_hub.authorizations == {f"Bearer {TOKEN}"}
    assert out.splitlines()[-1] == f"uploaded 7 files: {local_hub.url}/me/persona"
    assert TOKEN not in out + err


def test_a_refused_token_and_an_unreachable_hub_are_one_line(tmp_path, run_cli, local_hub, monkeypatch):
    import socket
    adapter = _write_adapter(tmp_path / "adapter")
    monkeypatch.setenv("HF_TOKEN", "hf_revokedTokenNeverPrinted")
    code, out, err = run_cli("upload", adapter, "me/persona", "--endpoint", local_hub.url)
    assert code == 2 and err.strip().splitlines() == [
        "error: the Hugging Face hub did not accept your token (401): `hf auth login` again with a write token"]
    assert "hf_revokedTokenNeverPrinted" not in out + err and local_hub.received == {}
    with socket.socket() as probe:   # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    code, _, err = run_cli("upload", adapter, "me/persona", "--endpoint", closed)
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.fullmatch(
        rf"error: cannot reach {re.escape(closed)} \(\w+\): check the network, or pass --endpoint \(a mirror such as "
        r"https://hf-mirror\.com\)", err.strip())


# ---------------------------------------------------------------- evaluate -> evaluation.json -> the card

def test_evaluation_json_holds_the_table_and_a_read_only_folder_is_a_note(tmp_path, monkeypatch):
    import errno
    import helpers.evaluate.results as results
    from helpers.evaluate.colorist import colorist_report
    report = colorist_report(["a calm sea", "dry grass"], ["#2e8b57", "#c2b280"], ["#2e8b57", "no idea"],
                             ["blue", "#000000"], "before = the same model with the adapter switched off")
    record = results.evaluation_record("colorist", report, tmp_path / "colors.heldout.jsonl")
    assert record["counts"] == {"descriptions": 2} and record["headers"] == ["metric", "before", "after"]
    assert record["rows"][:2] == [["parse rate (answers with a hex colour)", "50.0%", "50.0%"],
                                  ["parsed answers", "1/2", "1/2"]]
    assert record["metrics"]["after"]["parse_rate"] == 0.5 and "delta_e" not in record["metrics"]["after"]
    assert results.save_evaluation(tmp_path, record) == tmp_path / "evaluation.json"
    assert json.loads((tmp_path / "evaluation.json").read_text(encoding="utf-8")) == record
    notes = []

    def read_only(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(results, "write_json", read_only)
    assert results.save_evaluation(tmp_path / "ro", record, note=notes.append) is None
    assert notes == [f"note: {tmp_path / 'ro' / 'evaluation.json'} not written (Permission denied): the table above "
                     "is not saved for `upload`'s model card"]


@pytest.mark.slow
def test_evaluate_then_upload_and_the_cards_code_loads_the_adapter_and_the_merged_model(tiny_model_dir, tmp_path,
                                                                                         run_cli):
    """A tiny adapter trained here: `evaluate` writes evaluation.json, the dry-run card carries the same table, and
    the card's own loading code (repo -> the local folder) runs on the adapter and on its merged model."""
    from data_gen.persona import PersonaFacts, generate_persona, write_persona_set
    from helpers.merge.merging import merge
    from helpers.train.config import from_dict
    from helpers.train.engine import train
    paths = write_persona_set(generate_persona(PersonaFacts(name="伍鲜同志"), n=4, lang="zh", seed=0),
                              tmp_path / "persona.jsonl")
    adapter = train(from_dict(dict(model=str(tiny_model_dir), data_path=paths["train"], output_dir=str(tmp_path / "run"),
                                   mode="lora", max_length=128, accumulative_counts=1, max_steps=2, save_steps=100,
                                   evaluation_inputs=[], logging_steps=1)), notebook=False).adapter_dir
    code, out, err = run_cli("evaluate", "persona", "--model", adapter, "--limit", 1, "--max-new-tokens", 4,
                             "--no-progress")
    assert code == 0, err
    assert f"evaluation table: {adapter / 'evaluation.json'}" in out
    evaluation = json.loads((adapter / "evaluation.json").read_text(encoding="utf-8"))
    assert evaluation["task"] == "persona" and evaluation["heldout"] == paths["heldout"]
    assert evaluation["counts"] == {"identity": 1, "general": 1}
    table = out[out.index("metric"):].splitlines()[2:6]
    assert [row[0] for row in evaluation["rows"]] == [line.split("  ")[0] for line in table]
    code, out, err = run_cli("upload", adapter, "me/tiny", "--dry-run")
    card = (adapter / "README.md").read_text(encoding="utf-8")
    assert code == 0 and CARD_MARK in card and "| " + " | ".join(evaluation["rows"][0]) + " |" in card
    merged = tmp_path / "merged"
    merge(tiny_model_dir, adapter, merged, progress=lambda *a: None)
    for folder, is_adapter in ((adapter, True), (merged, False)):
        text = model_card(json.loads((folder / "tunebook.json").read_text(encoding="utf-8")), None, "me/tiny",
                          is_adapter)
        code_block = text.split("```python\n")[1].split("```")[0].replace('"me/tiny"', json.dumps(str(folder)))
        code_block = code_block.replace("max_new_tokens=128", "max_new_tokens=8")   # a random model never stops
        printed = []
        exec(code_block, {"print": printed.append})
        assert len(printed) == 1 and isinstance(printed[0], str)

