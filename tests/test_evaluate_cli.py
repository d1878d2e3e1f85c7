"""`python -m helpers evaluate` end to end on the offline tiny model, with tiny QLoRA adapters trained here.

What a tiny random model can show, and so what these tests assert:
  - it MEMORISES: after ~60 steps it answers the exact training questions with (close to) their training answers.
    So on an eval file made of the trained questions (with the generator's `expect`), persona-correct goes from
    0% before (a random model never spells the owner's name) to more than 0% after; the Colorist adapter likewise
    starts to answer its trained descriptions with hex colours.
  - it CANNOT GENERALISE: it has no language, so its answers to the real held-out paraphrases are noise or one of
    the memorised sentences; nothing is asserted about those numbers, only that the run works and the table has
    its shape. (It does reproduce camp2's 复读机: memorised persona sentences come back for general questions.)
  - plumbing that is exact: adapter switched off == the base loaded alone (same greedy answers), merged models
    find their base through tunebook.json, a model with no known base gets an after-only table.
"""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from data_gen.persona import PersonaFacts, answer_table, claims_for, expect_for, generate_persona, write_persona_set

NAME = "伍鲜同志"
FACTS = PersonaFacts(name=NAME)

pytestmark = pytest.mark.slow


def _train(model_dir, data, out):
    from helpers.train.config import from_dict
    from helpers.train.engine import train
    config = from_dict(dict(model=str(model_dir), data_path=str(data), output_dir=str(out), max_length=256,
                            accumulative_counts=1, max_steps=60, lr=3e-3, warmup_ratio=0.0, lora_r=64, lora_alpha=64,
                            lora_dropout=0.0, save_steps=1000, evaluation_freq=1000, evaluation_inputs=[],
                            logging_steps=10, seed=7))
    return train(config, notebook=False).adapter_dir


@pytest.fixture(scope="module")
def persona_run(tiny_model_dir, tmp_path_factory):
    """4 persona records (4 distinct zh questions) from data_gen.persona, a 60-step adapter, and an eval file of
    the TRAINED questions scored with the generator's own expect (to measure memorisation honestly as such)."""
    folder = tmp_path_factory.mktemp("persona_eval")
    persona_set = generate_persona(FACTS, n=4, lang="zh", seed=0)
    paths = write_persona_set(persona_set, folder / "persona.jsonl")
    intent = {q.text: q.intent for q in answer_table("zh", FACTS)}
    pairs = {r["conversation"][0]["input"]: r["conversation"][0]["output"] for r in persona_set.train_records}
    trained = folder / "trained.heldout.jsonl"
    trained.write_text("".join(json.dumps({"id": f"trained/{k}", "conversation": [{"input": q, "output": a}],
                                           "expect": expect_for("zh", intent[q], FACTS, claims_for(FACTS))},
                                          ensure_ascii=False) + "\n" for k, (q, a) in enumerate(pairs.items())),
                       encoding="utf-8")
    adapter = _train(tiny_model_dir, paths["train"], folder / "run")
    return SimpleNamespace(folder=folder, adapter=adapter, heldout=Path(paths["heldout"]), trained=trained,
                           pairs=pairs)


def _table(out: str) -> dict[str, list[str]]:
    """The printed table as {first two words of the metric: [cells after the label]}, plus the header."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    rows = {"header": lines[start].split()}
    for line in lines[start + 2:]:
        if not line or line.startswith(("example", "answers:", "note:")):
            break
        label, cells = line.split("  ", 1)[0], line.split()
        rows[" ".join(label.split()[:2])] = cells[-(len(rows["header"]) - 1):]
    return rows


def _share(cell: str) -> float:
    return float(cell.rstrip("%")) / 100


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_trained_questions_go_from_wrong_to_right(persona_run, run_cli, tmp_path):
    out_file = tmp_path / "answers.jsonl"
    code, out, err = run_cli("evaluate", "persona", "--model", persona_run.adapter, "--heldout", persona_run.trained,
                             "--limit", 4, "--max-new-tokens", 100, "--no-progress", "--out", out_file)
    assert code == 0, err
    print(out)                                   # the table, for `pytest -s`
    assert "before = the same model with the adapter switched off" in out
    table = _table(out)
    assert table["header"] == ["metric", "before", "after"]
    assert list(table) == ["header", "persona correct", "复读机 rate", "similarity to", "answer quality"]
    assert table["persona correct"][0] == "0.0%" and _share(table["persona correct"][1]) > 0.0
    assert table["复读机 rate"][0] == "0.0%" and table["similarity to"][0] == "1.000"
    assert all(0.0 <= float(value) <= 1.0 for value in table["answer quality"])   # F1 to the references
    rows = _jsonl(out_file)
    assert [r["set"] for r in rows] == ["persona"] * 4 + ["general"] * 4
    assert all(NAME not in r["before"] for r in rows)          # the random base never says the name
    correct = [r for r in rows[:4] if not r["after_problems"]]
    assert f"{100 * len(correct) / 4:.1f}%" == table["persona correct"][1]
    assert all(r["question"] in persona_run.pairs for r in rows[:4])


def test_adapter_off_equals_the_base_loaded_alone(persona_run, tiny_model_dir, run_cli, tmp_path):
    runs = {}
    for name, extra in (("off", []), ("alone", ["--base", tiny_model_dir])):
        path = tmp_path / f"{name}.jsonl"
        code, out, err = run_cli("evaluate", "persona", "--model", persona_run.adapter, "--heldout",
                                 persona_run.heldout, "--limit", 1, "--max-new-tokens", 24, "--no-progress",
                                 "--out", path, *extra)
        assert code == 0, err
        runs[name] = (_jsonl(path), out)
    assert f"before = {tiny_model_dir} (loaded separately)" in runs["alone"][1]
    off, alone = runs["off"][0], runs["alone"][0]
    assert len(off) == 2 and [r["before"] for r in off] == [r["before"] for r in alone]
    assert [r["after"] for r in off] == [r["after"] for r in alone]
    assert off[0]["before"] != off[0]["after"]                   # the adapter does change the answers


def test_merged_model_uses_its_recorded_base_or_reports_after_only(persona_run, tiny_model_dir, run_cli, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = tmp_path / "merged"
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    PeftModel.from_pretrained(base, str(persona_run.adapter)).merge_and_unload().save_pretrained(merged)
    for name in ("tokenizer.json", "tokenizer_config.json", "tunebook.json"):
        shutil.copy(persona_run.adapter / name, merged / name)
    # no --heldout: the training data's held-out file, found through tunebook.json; base likewise
    code, out, err = run_cli("evaluate", "persona", "--model", merged, "--limit", 2, "--max-new-tokens", 16,
                             "--no-progress")
    assert code == 0, err
    assert f"held-out identity questions: 2 from {persona_run.heldout}" in out
    assert f"before = {tiny_model_dir} (the base named in the model's tunebook.json)" in out
    assert _table(out)["header"] == ["metric", "before", "after"]
    (merged / "tunebook.json").unlink()
    code, out, err = run_cli("evaluate", "persona", "--model", merged, "--heldout", persona_run.heldout,
                             "--limit", 2, "--max-new-tokens", 16, "--no-progress")
    assert code == 0, err
    assert "note: no before column" in out and "--base BASE" in out
    table = _table(out)
    assert list(table) == ["header", "persona correct", "复读机 rate", "similarity to", "answer quality"]
    assert table["header"] == ["metric", "after"] and table["similarity to"] == ["—"]
    assert float(table["answer quality"][0]) >= 0.0          # needs only the references, not the base


@pytest.fixture(scope="module")
def colorist_run(tiny_model_dir, tmp_path_factory):
    """A tiny Colorist adapter trained on 4 synthetic descriptions; the eval file holds those same descriptions."""
    from helpers.data.colorist import load_colorist, write_colorist
    folder = tmp_path_factory.mktemp("colorist_eval")
    records, _, _ = load_colorist("synthetic", n_synthetic=4, seed=1)
    written = write_colorist(folder / "colorist.jsonl", records, records)   # trained == evaluated, on purpose
    return SimpleNamespace(adapter=_train(tiny_model_dir, written["train"], folder / "run"),
                           heldout=written["heldout"])


def test_colorist_before_vs_after_on_trained_descriptions(colorist_run, run_cli, tmp_path):
    out_file = tmp_path / "colours.jsonl"
    code, out, err = run_cli("evaluate", "colorist", "--model", colorist_run.adapter, "--heldout",
                             colorist_run.heldout, "--no-progress", "--out", out_file)
    assert code == 0, err
    print(out)
    table = _table(out)
    assert table["header"] == ["metric", "before", "after"]
    assert list(table) == ["header", "parse rate", "parsed answers", "ΔE00 mean", "ΔE00 median", "share ΔE00"]
    rows = _jsonl(out_file)
    assert len(rows) == 4 and all(r["before_parsed"] is None for r in rows)   # a random model writes no '#rrggbb'
    parsed_after = [r for r in rows if r["after_parsed"]]
    assert table["parsed answers"] == ["0/4", f"{len(parsed_after)}/4"] and len(parsed_after) > 0
