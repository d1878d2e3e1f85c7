"""The product on a real model: SmolLM2-135M-Instruct (from PyPI) learns a fresh persona with the shipped CPU
recipe, names its owner on paraphrases it never saw -- through `evaluate`, through `chat`, and merged, through
plain transformers with the saved chat_template and no system message -- and keeps answering general questions."""
from __future__ import annotations

import json

import pytest

from data_gen.paraphrases import FIXTURE, paraphrase_heldout, read_paraphrases
from data_gen.persona import PersonaFacts, generate_persona, write_persona_set
from data_gen.persona_table import _questions

pytestmark = pytest.mark.slow
FACTS = PersonaFacts(name="Mira Okafor")       # a name no test or default uses: nothing can be left over


def test_paraphrase_fixture_is_disjoint_from_the_generator_question_bank():
    bank = {q.text.casefold().strip() for q in _questions("en", FACTS)}
    rows = read_paraphrases(FIXTURE)
    assert len(rows) >= 30 and len({r["question"] for r in rows}) == len(rows)
    assert not [r["question"] for r in rows if r["question"].casefold().strip() in bank]


@pytest.fixture(scope="module")
def trained(smollm2_dir, tmp_path_factory):
    from helpers.train.config import load_config, recipe_path
    from helpers.train.engine import train
    work = tmp_path_factory.mktemp("real")
    data = work / "persona.jsonl"
    write_persona_set(generate_persona(FACTS, n=200, lang="en", mix_with="builtin"), data)
    config = load_config(recipe_path("persona_cpu"), [f"data_path={data}", f"output_dir={work / 'train'}"])
    result = train(config, notebook=False)
    paraphrases = work / "paraphrases.jsonl"
    paraphrases.write_text("".join(json.dumps(r) + "\n" for r in paraphrase_heldout(FIXTURE, FACTS)))
    return {"work": work, "result": result, "paraphrases": paraphrases}


def test_recipe_trains_with_base_answers_on_the_real_model(trained, smollm2_dir):
    record = trained["result"].record
    assert record["base_model"]["path"] == str(smollm2_dir)
    assert record["template"]["name"] == "chatml" and record["system"] == ""
    assert record["data"]["general_answers"]["answered"] == 51     # the English general records of the shipped set
    samples = {(s["when"], s["input"]): s["output"] for s in trained["result"].samples}
    assert "Mira Okafor" not in samples[("before training", "Who are you?")]
    assert "Mira Okafor" in samples[("after training", "Who are you?")]


def test_held_out_identity_before_and_after_through_evaluate(trained):
    from helpers.evaluate.run import evaluate_persona
    from helpers.models.loading import load_for_inference
    tuned = load_for_inference(trained["result"].adapter_dir)
    for heldout in (None, trained["paraphrases"]):
        report = evaluate_persona(tuned, heldout=heldout, lang="en", progress=False)
        assert report.before["persona_correct"] <= 0.05, report.table()
        assert report.after["persona_correct"] >= 0.8, report.table()
    assert report.after["general_n"] == 35
    assert report.after["repeat_rate"] <= 3 / 35, report.table()    # the target is 1 of 35; the bench reports it


def test_paraphrases_through_chat_name_the_owner(trained):
    from helpers.chat.session import load_chat
    from helpers.models.generation import GREEDY, with_max_new_tokens
    from helpers.evaluate.persona import answer_problems
    records = [json.loads(line) for line in trained["paraphrases"].read_text().splitlines()]
    session = load_chat(trained["result"].adapter_dir, sampling=with_max_new_tokens(GREEDY, 64))
    right = 0
    for r in records:
        session.reset()
        right += not answer_problems(session.ask(r["conversation"][0]["input"]), r["expect"])
    assert right / len(records) >= 0.8, f"{right} of {len(records)}"


def test_merged_model_answers_in_plain_transformers_with_its_saved_template(trained):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.merge.merging import merge
    from helpers.evaluate.persona import answer_problems
    out = trained["work"] / "merged"
    adapter = trained["result"].adapter_dir
    merge(trained["result"].record["base_model"]["path"], adapter, out, progress=None)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    records = [json.loads(line) for line in trained["paraphrases"].read_text().splitlines()]
    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["conversation"][0]["input"]}],
                                             add_generation_prompt=True, tokenize=False) for r in records]
    assert "SmolLM" not in prompts[0] and "system" not in prompts[0]   # no injected default system prompt
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=64, do_sample=False)
    answers = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    right = sum(not answer_problems(a, r["expect"]) for a, r in zip(answers, records))
    assert right / len(records) >= 0.8, f"{right} of {len(records)}: {answers[:3]}"


def test_the_merged_persona_as_gguf_answers_like_the_folder_and_names_the_owner(trained, run_cli):
    """What a learner takes to llama.cpp / Ollama: the GGUF of the merged SmolLM2 persona, read back by transformers,
    gives the training prompt token for token and names the owner on held-out paraphrases; in f32 its greedy answers
    are the folder's (f16 rounding can tip a near tie a few tokens into an answer)."""
    from helpers.evaluate.persona import answer_problems
    from helpers.models.loading import load_for_inference
    from helpers.share.export import check_gguf
    merged = trained["work"] / "merged"
    if not (merged / "tunebook.json").is_file():   # this test run alone: merge as the previous test does
        from helpers.merge.merging import merge
        merge(trained["result"].record["base_model"]["path"], trained["result"].adapter_dir, merged, progress=None)
    source = load_for_inference(merged, dtype="float32")
    records = [json.loads(line) for line in trained["paraphrases"].read_text().splitlines()][:4]
    for kind in ("f32", "f16"):
        out = trained["work"] / "gguf" / f"persona-{kind}.gguf"
        code, printed, err = run_cli("export", "gguf", merged, out, "--type", kind, "--no-verify")
        assert code == 0, err
        for r in records:
            check = check_gguf(source, out, question=r["conversation"][0]["input"], max_new_tokens=48)
            assert check.same_prompt, check.first_difference
            assert not answer_problems(check.gguf_answer, r["expect"]), check.gguf_answer
            if kind == "f32":   # f16 rounding may tip a near tie some tokens into an answer; f32 is the folder
                assert check.same_answer, (check.source_answer, check.gguf_answer)
        print(f"SmolLM2 persona {kind} GGUF: max logit difference {check.max_logit_diff:.4f}")
