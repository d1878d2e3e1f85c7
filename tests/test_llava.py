"""LLaVA on the tiny LM + the tiny CLIP-shaped tower: image tokens and masks, the data checks, what each stage
trains, learning swatches from pixels, merge = chat, resume = uninterrupted."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.encode.encoding import IGNORE_INDEX

QUESTION = "What colour is this?"


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tiny_model_dir):
    from helpers.multimodal.tower import tiny_vision
    root = tmp_path_factory.mktemp("llava")
    return {"vision": tiny_vision(root), "lm": tiny_model_dir, "root": root}


@pytest.fixture(scope="module")
def swatches(parts):
    """16 solid + 4 two-colour training swatches (the issue's "up to 20"), 20 held-out ones of other colours."""
    from helpers.data.colorist import load_colorist
    from helpers.multimodal.swatches import write_swatch_dataset
    records, _, _ = load_colorist("synthetic", limit=120)
    return write_swatch_dataset(parts["root"] / "swatches", [r["color"] for r in records], n_train=20,
                                n_heldout=20, two_colour_share=0.2, seed=0)


def llava_config(parts, data, out, **overrides):
    from helpers.multimodal.llava_train import LlavaTrainConfig
    values = dict(vision=str(parts["vision"]), lm=str(parts["lm"]), data_path=str(data), output_dir=str(out),
                  max_length=128, batch_size=4, lr=3e-3, lora_r=16, lora_alpha=32, lora_dropout=0.0,
                  logging_steps=1, save_steps=1000, warmup_ratio=0.0)
    values.update(overrides)
    return LlavaTrainConfig(**values)


def encoder_for(llava, template="internlm2_chat"):
    from helpers.multimodal.llava_data import image_encoder
    return image_encoder(llava.tokenizer, template, 256, llava.model.config.image_token_id, llava.image_tokens)


# ---- image tokens and masks ------------------------------------------------------------------------------------

def test_image_positions_are_the_towers_patches_and_never_trained(parts, swatches):
    from helpers.multimodal.llava import build_llava
    from helpers.multimodal.llava_data import encode_example, load_llava_strict, prompt_ids
    llava = build_llava(parts["vision"], parts["lm"])
    assert llava.image_tokens == (32 // 8) ** 2 == 16
    example = load_llava_strict(swatches["train"])[0]
    encoder = encoder_for(llava)
    sample = encode_example(encoder, example)
    image_id = llava.model.config.image_token_id
    positions = [i for i, t in enumerate(sample.input_ids) if t == image_id]
    assert len(positions) == 16 and positions == list(range(positions[0], positions[0] + 16))
    assert all(sample.labels[i] == IGNORE_INDEX for i in positions)
    tok = llava.tokenizer
    # XTuner's layout: the prompt pieces around one run of image tokens, only the answer + <|im_end|> trained
    before = tok.encode("<s><|im_start|>user\n", add_special_tokens=False)
    assert sample.input_ids[:positions[0]] == before
    trained = [t for t, label in zip(sample.input_ids, sample.labels) if label != IGNORE_INDEX]
    answer = example.conversation.turns[0].output
    assert tok.decode(trained) == answer + "<|im_end|>"
    # the generation prompt is what plain transformers' processor makes of the same question and picture
    from PIL import Image

    from helpers.encode.chat_format import chat_format
    from helpers.multimodal.llava import use_template
    use_template(llava, chat_format("internlm2_chat"))
    messages = [{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                             {"type": "image", "image": Image.new("RGB", (64, 64), (1, 2, 3))}]}]
    made = llava.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
    assert made["input_ids"][0].tolist() == prompt_ids(encoder, QUESTION)
    assert made["pixel_values"].shape == (1, 3, 32, 32)


def write_llava(tmp_path, records, images=()):
    from PIL import Image
    for name in images:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


def record(image, human, answer="red, #c80a0a"):
    item = {"id": "x", "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]}
    if image is not None:
        item["image"] = image
    return item


def test_check_data_names_each_bad_llava_record_and_exits_2(tmp_path, capsys):
    from helpers.cli import main
    (tmp_path / "broken.png").write_bytes(b"not a png")
    path = write_llava(tmp_path, [
        record("ok.png", "<image>\nWhat colour?"),
        record("ok.png", "<image>\n<image>\nTwo placeholders, one picture"),
        record("missing.png", "<image>\nWhere is it?"),
        record("broken.png", "<image>\nUnreadable"),
        record("ok.png", "No placeholder"),
        record(None, "<image>\nA placeholder without a picture"),
        record(None, "text-only is fine"),
    ], images=["ok.png"])
    assert main(["check-data", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(str(path))]
    text = "\n".join(lines)
    assert f"{path}:" in text and "2 <image> placeholder(s) for 1 image(s)" in text
    assert 'image "missing.png" not found' in text and "--image-folder" in text
    assert 'image "broken.png" cannot be read' in text
    assert "0 <image> placeholder(s) for 1 image(s)" in text and "1 <image> placeholder(s) for 0 image(s)" in text
    assert "5 problem(s)" in err
    # each message names the record's line in the file
    numbers = [int(line.split(":")[1]) for line in lines if "placeholder" in line or "image \"" in line]
    file_lines = path.read_text().splitlines()
    assert all(file_lines[n - 1].strip() == "{" for n in numbers), numbers


def test_check_data_reports_image_tokens_and_a_sample(tmp_path, parts, swatches, capsys):
    from helpers.cli import main
    assert main(["check-data", str(swatches["train"]), "--tokenizer", str(parts["lm"]),
                 "--vision", str(parts["vision"])]) == 0
    out = capsys.readouterr().out
    assert "LLaVA format, 20 records, 20 good, 0 bad; 20 with a picture" in out
    assert "image tokens per picture: 16" in out
    assert "<image × 16>" in out and "⟦" in out


def test_training_refuses_bad_data_before_loading_a_model(tmp_path, parts):
    from helpers.errors import TunebookError
    from helpers.multimodal.llava_train import train_llava
    path = write_llava(tmp_path, [record("gone.png", "<image>\nWhat colour?")])
    with pytest.raises(TunebookError, match=r"data.json:\d+: image \"gone.png\" not found"):
        train_llava(llava_config(parts, path, tmp_path / "run", stage="pretrain", max_steps=1), notebook=False)
    assert not (tmp_path / "run" / "projector").exists()


# ---- what each stage trains ------------------------------------------------------------------------------------

class Snapshot:
    """State of every weight at the start and the end of training (a Trainer callback)."""

    def __init__(self):
        from transformers import TrainerCallback
        snapshot = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                snapshot.before = {k: v.detach().clone() for k, v in model.state_dict().items()}

            def on_train_end(self, args, state, control, model=None, **kwargs):
                snapshot.after = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.callback = Callback()

    def changed(self) -> set[str]:
        import torch
        return {k for k in self.before if not torch.equal(self.before[k], self.after[k])}


def test_stage_1_trains_only_the_projector_and_stage_2_adds_lora(parts, swatches, tmp_path):
    from helpers.multimodal.llava_train import train_llava
    first = Snapshot()
    stage1 = train_llava(llava_config(parts, swatches["pretrain"], tmp_path / "s1", stage="pretrain", max_steps=3),
                         notebook=False, callbacks=[first.callback])
    assert first.changed() == {f"model.multi_modal_projector.linear_{i}.{w}" for i in (1, 2)
                               for w in ("weight", "bias")}
    assert {"projector.safetensors", "tunebook_llava.json", "tokenizer.json"} <= {p.name for p in stage1.result_dir.iterdir()}
    second = Snapshot()
    stage2 = train_llava(llava_config(parts, swatches["train"], tmp_path / "s2", projector=str(stage1.result_dir),
                                      max_steps=3), notebook=False, callbacks=[second.callback])
    changed = second.changed()
    assert changed and all("lora_" in k or "multi_modal_projector.modules_to_save" in k for k in changed), changed
    assert any("language_model" in k and "lora_B" in k for k in changed)
    assert any("multi_modal_projector.modules_to_save" in k for k in changed)
    assert not any("vision_tower" in k for k in changed)
    saved = json.loads((stage2.result_dir / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["multi_modal_projector"]


# ---- learning colours from pixels ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(parts, swatches, tmp_path_factory):
    from helpers.multimodal.llava_train import train_llava
    out = tmp_path_factory.mktemp("trained")
    stage1 = train_llava(llava_config(parts, swatches["pretrain"], out / "s1", stage="pretrain", max_steps=40,
                                      lr=3e-3), notebook=False)
    stage2 = train_llava(llava_config(parts, swatches["train"], out / "s2", projector=str(stage1.result_dir),
                                      max_steps=200, lr=5e-3), notebook=False)
    return {"stage1": stage1, "stage2": stage2, "out": out}


def ask_all(llava, folder, rows):
    from helpers.multimodal.llava_chat import answers, chat_for
    from helpers.multimodal.swatches import ANSWER_SAMPLING
    return answers(chat_for(llava, "internlm2_chat"), [folder / image for image, _ in rows], QUESTION,
                   ANSWER_SAMPLING)


@pytest.mark.slow
def test_tiny_llava_answers_each_trained_swatch_exactly(parts, swatches, trained):
    from helpers.multimodal.llava_chat import chat_for
    from helpers.multimodal.llava_train import load_trained
    from helpers.multimodal.swatches import read_swatches
    folder = swatches["folder"]
    train_rows = read_swatches(swatches["train"])
    after = load_trained(trained["stage2"].result_dir, parts["vision"], parts["lm"])
    records = json.loads(swatches["train"].read_text())
    chat = chat_for(after, "internlm2_chat")
    got = []
    for (image, _), row in zip(train_rows, records):
        chat.set_image(folder / image)
        got.append(chat.ask(row["conversations"][0]["value"].removeprefix("<image>\n")))
    # greedy answers are the trained ones; the four phrasings of the question are spread over the swatches, so only
    # the picture tells which answer is wanted
    assert got == [r["conversations"][1]["value"] for r in records]
    assert len({r["conversations"][0]["value"] for r in records}) == 4
    assert sum(len(colours) == 2 for _, colours in train_rows) == 4


@pytest.mark.slow
def test_a_tiny_llava_reads_colours_it_never_saw(parts, tmp_path):
    """Held-out colours: after training the answers give a hex (>= 90%) and it is closer than before.

    On a 4-layer tiny LM (the 2-layer one misspells about a third of the new hex codes), trained on 300 swatches;
    held-out solids are asserted. Held-out two-colour swatches (left + right) are not: the tiny LM reads them less
    reliably, and notebook 05 reports them on the real LM instead."""
    from helpers.data.colorist import load_colorist
    from helpers.models.tiny import TinyConfig, make_tiny_model
    from helpers.multimodal.llava import build_llava
    from helpers.multimodal.llava_train import load_trained, train_llava
    from helpers.multimodal.swatches import read_swatches, swatch_metrics, write_swatch_dataset
    lm = make_tiny_model(tmp_path / "lm", TinyConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                                     num_attention_heads=8, num_key_value_heads=4))
    broad = dict(parts, lm=lm)
    records, _, _ = load_colorist("synthetic", limit=400)
    data = write_swatch_dataset(tmp_path / "data", [r["color"] for r in records], n_train=300, n_heldout=40,
                                two_colour_share=0.25, seed=0)
    stage1 = train_llava(llava_config(broad, data["pretrain"], tmp_path / "s1", stage="pretrain", max_steps=100,
                                      lr=3e-3, batch_size=8), notebook=False)
    stage2 = train_llava(llava_config(broad, data["train"], tmp_path / "s2", projector=str(stage1.result_dir),
                                      max_steps=800, lr=2e-3, batch_size=8, lora_r=32), notebook=False)
    solids = [row for row in read_swatches(data["heldout"]) if len(row[1]) == 1]
    assert len(solids) == 30
    before = swatch_metrics([c for _, c in solids], ask_all(build_llava(parts["vision"], lm), data["folder"], solids))
    now = swatch_metrics([c for _, c in solids], ask_all(load_trained(stage2.result_dir, parts["vision"], lm),
                                                         data["folder"], solids))
    assert now["parse_rate"] >= 0.9, now
    assert now["delta_e_median"] < before["delta_e_median"], (before, now)
    assert now["delta_e_median"] < 30, now      # a real reading of the colour, not only the answer's shape


# ---- merge and chat --------------------------------------------------------------------------------------------

def test_merged_folder_answers_like_tunebook_chat_in_plain_transformers(parts, swatches, trained, tmp_path):
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from helpers.multimodal.llava_chat import load_llava_chat
    from helpers.multimodal.merge import merge_llava
    merged = merge_llava(trained["stage2"].result_dir, tmp_path / "merged")
    image = swatches["folder"] / read_first_image(swatches["train"])
    chat = load_llava_chat(trained["stage2"].result_dir)
    chat.set_image(image)
    ours = chat.ask(QUESTION)

    model = LlavaForConditionalGeneration.from_pretrained(merged)
    processor = AutoProcessor.from_pretrained(merged)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.open(image).convert("RGB")},
                                             {"type": "text", "text": QUESTION}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    plain = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert plain == ours and "#" in ours
    again = load_llava_chat(merged)
    again.set_image(image)
    assert again.ask(QUESTION) == ours


def test_the_notebook_chat_box_takes_a_picture(swatches, trained):
    from helpers.chat.widget import image_chat_box
    from helpers.multimodal.llava_chat import load_llava_chat
    records = json.loads(swatches["train"].read_text())
    box = image_chat_box(load_llava_chat(trained["stage2"].result_dir), swatches["folder"] / records[0]["image"])
    question = records[0]["conversations"][0]["value"].removeprefix("<image>\n")
    assert box.ask(question) == [records[0]["conversations"][1]["value"]]
    box.set_picture((swatches["folder"] / records[1]["image"]).read_bytes())    # what an upload does
    assert box.sessions[0].history == []                                       # a new picture, a new conversation
    question = records[1]["conversations"][0]["value"].removeprefix("<image>\n")
    assert box.ask(question) == [records[1]["conversations"][1]["value"]]
    box.set_picture(b"not an image")
    assert "not a picture" in box.status.value


def read_first_image(path: Path) -> str:
    return json.loads(path.read_text())[0]["image"]


def test_chat_cli_answers_about_an_image(parts, swatches, trained):
    image = swatches["folder"] / read_first_image(swatches["train"])
    expected = json.loads(swatches["train"].read_text())[0]["conversations"][1]["value"]
    run = subprocess.run([sys.executable, "-m", "helpers", "chat", str(trained["stage2"].result_dir), "--image",
                          str(image), "--temperature", "0"], input=f"{QUESTION}\n\nEXIT\n\n", capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout
    # XTuner's spelling: the LM, then --llava (the adapter) and --visual-encoder
    xtuner = subprocess.run([sys.executable, "-m", "helpers", "chat", str(parts["lm"]), "--llava",
                             str(trained["stage2"].result_dir), "--visual-encoder", str(parts["vision"]),
                             "--image", str(image), "--temperature", "0"], input=f"{QUESTION}\n\nEXIT\n\n",
                            capture_output=True, text=True, timeout=300)
    assert xtuner.returncode == 0, xtuner.stderr
    assert expected in xtuner.stdout


# ---- resume ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_stage_2_killed_and_resumed_equals_uninterrupted(parts, swatches, trained, tmp_path):
    import torch
    from safetensors.torch import load_file
    projector = str(trained["stage1"].result_dir)
    settings = ["stage=finetune", f"projector={projector}", f"vision={parts['vision']}", f"lm={parts['lm']}",
                f"data_path={swatches['train']}", "max_steps=12", "save_steps=4", "batch_size=4", "lr=3e-3",
                "lora_r=16", "lora_alpha=32", "lora_dropout=0.1", "max_length=128", "logging_steps=1"]

    def start(out):
        args = [a for s in [*settings, f"output_dir={out}"] for a in ("--set", s)]
        return subprocess.Popen([sys.executable, "-m", "helpers", "train-llava", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    straight = start(tmp_path / "straight")
    assert straight.wait(timeout=600) == 0, straight.stdout.read()
    killed = start(tmp_path / "killed")
    marker = tmp_path / "killed" / "checkpoint-4" / "tunebook_checkpoint.json"
    deadline = time.time() + 300
    while not marker.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert marker.exists() and not (tmp_path / "killed" / "adapter").exists()
    resumed = start(tmp_path / "killed")
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0 and "resuming from" in out, out
    first = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    second = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert first.keys() == second.keys() and any("multi_modal_projector" in k for k in first)
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=1e-6, rtol=0, msg=key)
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "loss.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_train_llava_settings_are_typed_and_typos_named(tmp_path):
    from helpers.errors import TunebookError
    from helpers.multimodal.llava_train import load_llava_config
    config = load_llava_config(None, ["lr=3e-3", "max_steps=12", "max_epochs=2", "stage=pretrain", "lm=007"])
    assert (config.lr, config.max_steps, config.max_epochs, config.stage, config.lm) == (3e-3, 12, 2.0, "pretrain", "007")
    with pytest.raises(TunebookError, match="unknown LLaVA setting 'lora_rank'; did you mean 'lora_r'"):
        load_llava_config(None, ["lora_rank=8"])
    with pytest.raises(TunebookError, match=r"batch_size: 'eight' is not a int"):
        load_llava_config(None, ["batch_size=eight"])
    assert subprocess.run([sys.executable, "-m", "helpers", "train-llava", "--set", "stage=middle",
                           "--set", "data_path=x.json"], capture_output=True, text=True).returncode != 0


def test_an_xtuner_projector_loads_into_the_llava(parts, tmp_path):
    """XTuner saves ProjectorModel(nn.Sequential(Linear, GELU, Linear)): model.0.* / model.2.* (in a .pth under
    projector.*); both spellings land in linear_1 / linear_2, and a projector of other sizes is refused by name."""
    import torch
    from safetensors.torch import save_file

    from helpers.errors import TunebookError
    from helpers.multimodal.llava import build_llava
    llava = build_llava(parts["vision"], parts["lm"])
    shapes = {k: v.shape for k, v in llava.model.model.multi_modal_projector.state_dict().items()}
    torch.manual_seed(1)
    weights = {k.replace("linear_1", "model.0").replace("linear_2", "model.2"): torch.randn(s)
               for k, s in shapes.items()}
    (tmp_path / "projector").mkdir()
    save_file(weights, str(tmp_path / "projector" / "model.safetensors"))
    torch.save({"state_dict": {f"projector.{k}": v for k, v in weights.items()}}, tmp_path / "iter_500.pth")
    for source in (tmp_path, tmp_path / "iter_500.pth"):
        loaded = build_llava(parts["vision"], parts["lm"], projector=source).model.model.multi_modal_projector
        assert torch.equal(loaded.linear_1.weight, weights["model.0.weight"])
        assert torch.equal(loaded.linear_2.bias, weights["model.2.bias"])
    wrong = {k: torch.zeros(2, *v.shape[1:]) for k, v in weights.items()}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(TunebookError, match="do not fit this tower"):
        build_llava(parts["vision"], parts["lm"], projector=tmp_path / "wrong.safetensors")


def test_swatch_answers_errors_and_the_picture_blind_baseline(tmp_path):
    from helpers.multimodal.swatches import Swatch, constant_answer, draw, swatch_errors, swatch_metrics
    assert Swatch(("#87ceeb",), "a.png").answer == "#87ceeb (sky blue)"
    assert Swatch(("#87ceeb", "#ff6347"), "b.png").answer == "Left: #87ceeb (sky blue). Right: #ff6347 (tomato)."
    picture = draw(("#000000", "#ffffff"), 8)
    assert picture.getpixel((0, 0)) == (0, 0, 0) and picture.getpixel((7, 7)) == (255, 255, 255)
    assert picture.getpixel((3, 5)) == (0, 0, 0) and picture.getpixel((4, 5)) == (255, 255, 255)
    assert swatch_errors(("#87ceeb", "#ff6347"), "Left: #87ceeb (sky blue). Right: tomato") == [0.0, 100.0]
    metrics = swatch_metrics([("#87ceeb",), ("#000000", "#ffffff")], ["#87ceeb", "#000000 only"])
    assert metrics["parse_rate"] == 0.5 and metrics["delta_e"] == [[0.0], [0.0, 100.0]]
    assert metrics["delta_e_median"] == 0.0 and metrics["delta_e_mean"] == 100 / 3
    assert metrics["solid"]["delta_e"] == [[0.0]] and metrics["solid"]["parse_rate"] == 1.0
    assert metrics["two_colour"]["delta_e"] == [[0.0, 100.0]] and metrics["two_colour"]["parse_rate"] == 0.0
    assert swatch_metrics([("#87ceeb",)], ["#87ceeb"])["two_colour"] is None
    assert constant_answer([("a", ("#000000",)), ("b", ("#ffffff", "#ffffff"))]) == "Left: #aaaaaa. Right: #aaaaaa."


def test_the_before_after_table_shows_solid_and_two_colour_swatches_apart():
    from helpers.multimodal.swatches import swatch_metrics
    from helpers.notebook.llava_lesson import metrics_table
    references = [("#87ceeb",), ("#000000", "#ffffff")]
    before = swatch_metrics(references, ["no idea", "no idea"])
    after = swatch_metrics(references, ["#87ceeb", "Left: #000000. Right: #ffffff."])
    lines = metrics_table(before, after).splitlines()
    assert lines[0] == f"{'metric':<38}{'before':>13}{'after':>13}"
    assert lines[2] == f"{'hex given (parse rate)':<38}{'0%':>13}{'100%':>13}"
    assert lines[-3:] == [f"{'  solid swatches: ΔE00 median':<38}{'100.0':>13}{'0.0':>13}",
                          f"{'  two-colour: both hexes given':<38}{'0%':>13}{'100%':>13}",
                          f"{'  two-colour: ΔE00 median':<38}{'100.0':>13}{'0.0':>13}"]
    solid_only = swatch_metrics(references[:1], ["#87ceeb"])
    assert metrics_table(solid_only, solid_only).splitlines()[-1].split()[-2:] == ["—", "—"]
