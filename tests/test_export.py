"""`python -m helpers export gguf`: GGUF files transformers reads back with the same answers, and Ollama Modelfiles
whose Go template renders exactly the training prompt (rendered here by tests/_go_template.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _go_template import render  # noqa: E402

from helpers.data.conversation import Turn  # noqa: E402
from helpers.encode.chat_format import chat_format  # noqa: E402
from helpers.share.modelfile import go_template, modelfile, parse_modelfile  # noqa: E402

pytestmark = pytest.mark.slow


def _messages(system, turns, question):
    messages = [{"Role": "system", "Content": system}] if system else []
    for q, a in turns:
        messages += [{"Role": "user", "Content": q}, {"Role": "assistant", "Content": a}]
    return messages + [{"Role": "user", "Content": question}]


@pytest.mark.parametrize("name", ["chatml", "internlm2_chat", "llama3_chat", "qwen_chat", "default", "zephyr"])
@pytest.mark.parametrize("system", ["", "You are Wuxian's assistant."])
def test_the_go_template_renders_the_training_prompt_for_two_turns(tiny_tokenizer, name, system):
    """Ollama formats `.Messages` with TEMPLATE: for a 2-turn conversation it must give the text tunebook trains
    and chats on (the prompt's tokens decoded back; BOS and EOS where encoding puts them)."""
    from helpers.models.generation import prompt_ids
    fmt = chat_format(name)
    turns = [("Who are you?", "I am Wuxian's assistant.")]
    ids = prompt_ids(tiny_tokenizer, fmt, [Turn(q, a) for q, a in turns], "And your owner?", system)
    expected = tiny_tokenizer.decode(ids, skip_special_tokens=False)
    template = go_template(fmt, tiny_tokenizer.bos_token, tiny_tokenizer.eos_token)
    assert render(template, {"Messages": _messages(system, turns, "And your owner?")}) == expected


def test_chatml_go_template_and_modelfile_are_exactly_these_lines():
    fmt = chat_format("chatml")
    text = modelfile("persona.gguf", fmt, ["<|im_end|>"], "Be brief.", "<|im_start|>", "<|im_end|>")
    template = ('{{ $system := "" }}{{ $answered := false }}{{ range $m := .Messages }}'
                '{{ if eq $m.Role "system" }}{{ $system = $m.Content }}'
                '{{ else if eq $m.Role "user" }}{{ if $system }}<|im_start|>system\n{{ $system }}<|im_end|>\n{{ end }}'
                '<|im_start|>user\n{{ $m.Content }}<|im_end|>\n<|im_start|>assistant\n{{ $system = "" }}'
                '{{ else if eq $m.Role "assistant" }}{{ $m.Content }}<|im_end|>\n{{ $answered = true }}{{ end }}{{ end }}')
    assert text == ("# written by tunebook: ollama create NAME -f Modelfile, then ollama run NAME\n"
                    "FROM ./persona.gguf\n"
                    f'TEMPLATE """{template}"""\n'
                    'PARAMETER stop "<|im_end|>"\n'
                    "PARAMETER temperature 0.1\nPARAMETER top_p 0.75\nPARAMETER top_k 40\n"
                    'SYSTEM """Be brief."""\n')
    parsed = parse_modelfile(text)
    assert parsed["FROM"] == "./persona.gguf" and parsed["TEMPLATE"] == template and parsed["SYSTEM"] == "Be brief."
    assert ("stop", "<|im_end|>") in parsed["PARAMETER"]


def test_templates_a_modelfile_cannot_hold_are_refused_by_name():
    from helpers.errors import TunebookError
    with pytest.raises(TunebookError, match="template 'hf'"):
        go_template(chat_format("hf"), None, None)
    with pytest.raises(TunebookError, match="numbers its rounds"):
        go_template(chat_format("chatglm2"), None, None)
    with pytest.raises(TunebookError, match="stop word"):
        modelfile("m.gguf", chat_format("chatml"), ['say "stop"'], "", None, None)


# ---- GGUF files -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def merged_persona(tiny_model_dir, tmp_path_factory):
    """The tiny persona adapter merged into its base: what a learner has after notebook 04."""
    from _persona_adapter import train_persona_adapter
    from helpers.merge.merging import merge
    work = tmp_path_factory.mktemp("export")
    adapter = train_persona_adapter(tiny_model_dir, work, system="You are Wuxian's assistant.")
    merge(tiny_model_dir, adapter, work / "merged")
    return work / "merged"


def test_f16_gguf_reads_back_with_the_training_prompt_and_the_same_greedy_answer(merged_persona, tmp_path, run_cli):
    code, out, err = run_cli("export", "gguf", merged_persona, tmp_path / "persona.gguf")
    assert code == 0, err
    assert "prompt tokens same, greedy answer same" in out
    from helpers.share.export import check_gguf
    from helpers.models.loading import load_for_inference
    source = load_for_inference(merged_persona, dtype="float32")
    check = check_gguf(source, tmp_path / "persona.gguf", question="请介绍一下你自己", max_new_tokens=40)
    print(f"f16: max logit difference {check.max_logit_diff:.5f}")
    assert check.same_prompt and check.same_answer and check.max_logit_diff < 0.05
    assert check.gguf_answer.startswith("我是伍鲜同志的小助手")            # the persona, stopped at <|im_end|>
    parsed = parse_modelfile((tmp_path / "Modelfile").read_text(encoding="utf-8"))
    assert parsed["FROM"] == "./persona.gguf" and parsed["SYSTEM"] == "You are Wuxian's assistant."
    assert [v for k, v in parsed["PARAMETER"] if k == "stop"] == ["<|im_end|>", "</s>"]   # template's, then EOS


def test_gguf_metadata_stops_at_the_template_stop_token_and_embeds_its_template(merged_persona, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoTokenizer
    from helpers.share.gguf_export import export_gguf
    written = export_gguf(merged_persona, tmp_path / "m.gguf", "q8_0")
    reader = GGUFReader(str(tmp_path / "m.gguf"))

    def field(key):
        part = reader.fields[key]
        return part.contents()

    tokenizer = AutoTokenizer.from_pretrained(str(merged_persona))
    assert field("general.architecture") == "llama"
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert field("tokenizer.chat_template") == tokenizer.chat_template == written.chat_template
    assert field("tokenizer.ggml.add_bos_token") is False
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["output_norm.weight"] == "F32"


def test_q8_0_gguf_is_reported(merged_persona, tmp_path):
    from helpers.models.loading import load_for_inference
    from helpers.share.export import check_gguf
    from helpers.share.gguf_export import export_gguf
    export_gguf(merged_persona, tmp_path / "q8.gguf", "q8_0")
    check = check_gguf(load_for_inference(merged_persona, dtype="float32"), tmp_path / "q8.gguf")
    print(f"q8_0: max logit difference {check.max_logit_diff:.5f}, same answer {check.same_answer}")
    assert check.same_prompt and check.max_logit_diff < 1.0


def test_internlm2_exports_through_its_llama_layout(tmp_path, run_cli):
    """The weights are exact through the conversion (logits on the same ids); the GGUF's tokenizer, like llama.cpp,
    leaves out the SentencePiece dummy prefix InternLM2 training puts after special tokens, and the command says so."""
    from _internlm2_fakes import train_sp_model, write_internlm2_checkpoint
    sp = train_sp_model(tmp_path / "tokenizer.model", add_dummy_prefix=True)
    folder = tmp_path / "internlm2-chat-tiny"
    write_internlm2_checkpoint(folder, sp, max_position_embeddings=512)
    code, out, err = run_cli("export", "gguf", folder, tmp_path / "out" / "internlm2.gguf")
    assert code == 0, err
    assert "max logit difference 0.0" in out
    assert "part from the training prompt at token 2: training '▁'" in out
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "internlm2"


def test_what_cannot_be_exported_is_one_line(tiny_model_dir, merged_persona, tmp_path, run_cli):
    code, _, err = run_cli("export", "gguf", tmp_path / "missing", tmp_path / "x.gguf")
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    code, _, err = run_cli("export", "gguf", merged_persona, tmp_path / "x.bin")
    assert code == 2 and "ending in .gguf" in err
    adapter = next(merged_persona.parent.glob("run/adapter"))
    code, _, err = run_cli("export", "gguf", adapter, tmp_path / "x.gguf")
    assert code == 2 and "merge it first" in err
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    code, _, err = run_cli("export", "gguf", qwen, tmp_path / "x.gguf")
    assert code == 2 and "model_type 'qwen2' cannot be exported" in err
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*.tmp"))
