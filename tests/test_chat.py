"""Chat: stop words never shown, the training format end to end, XTuner's terminal keys through a pipe, the widget."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _persona_adapter import CAMP, train_persona_adapter  # noqa: E402

from helpers.chat.session import INPUT_PROMPT, ChatSession, StopFilter, base_session, load_chat, read_message, terminal_chat  # noqa: E402,E501
from helpers.models.generation import GREEDY, Sampling  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return train_persona_adapter(tiny_model_dir, tmp_path_factory.mktemp("persona"))


@pytest.fixture(scope="module")
def session(tiny_model_dir, adapter):
    return load_chat(tiny_model_dir, adapter, sampling=GREEDY)


@pytest.fixture()
def fresh(session):
    session.reset()
    session.system, session.sampling = "", GREEDY
    return session


# ---- the stop-word filter -------------------------------------------------------------------------------------

def feed_all(words, pieces):
    stop = StopFilter(words)
    shown = [stop.feed(p) for p in pieces] + [stop.flush()]
    return shown, stop.stopped


@pytest.mark.parametrize("pieces,expected", [
    (["我是", "小助手", "<|im_end|>"], "我是小助手"),
    (["我是小助手<|im", "_end|>", "\n<|im_start|>user"], "我是小助手"),   # split across pieces, junk after
    (["ok<", "|", "im_", "end", "|>tail"], "ok"),
    (["a</", "s>b"], "a"),                                                # EOS spelled out
    (["x <| not a stop word"], "x <| not a stop word"),                   # a prefix that never completes
    (["ends with <|im"], "ends with <|im"),                               # held back, then flushed at the end
])
def test_stop_words_never_reach_the_user(pieces, expected):
    shown, _ = feed_all(["<|im_end|>", "</s>"], pieces)
    assert "".join(shown) == expected
    for piece in shown:
        assert "<|im_end|>" not in piece and "</s>" not in piece


def test_text_is_held_back_only_while_it_could_be_a_stop_word():
    stop = StopFilter(["<|im_end|>"])
    assert stop.feed("你好<|") == "你好"      # "<|" might start <|im_end|>
    assert stop.feed("x") == "<|x"            # it did not
    assert stop.feed("<|im_end|>") == "" and stop.stopped
    assert stop.feed("more") == "" and stop.flush() == ""


# ---- sessions -------------------------------------------------------------------------------------------------

def test_session_streams_the_same_answer_as_generation_answer(fresh):
    from helpers.models.generation import answer
    for question, expected in CAMP:
        fresh.reset()
        pieces = list(fresh.stream(question))
        assert "".join(pieces) == expected == answer(fresh.model, fresh.tokenizer, fresh.template, question,
                                                     sampling=GREEDY)
        assert len(pieces) > 1 and all("<|" not in p and "</s>" not in p for p in pieces)
    assert fresh.template.name == "internlm2_chat"  # from the adapter's training record


def test_history_follows_the_training_rendering_and_reset_clears_it(fresh):
    first = fresh.prompt_text(CAMP[0][0])
    assert first == "<s><|im_start|>user\n请介绍一下你自己<|im_end|>\n<|im_start|>assistant\n"
    fresh.ask(CAMP[0][0])
    assert [(t.input, t.output) for t in fresh.history] == [CAMP[0]]
    assert fresh.prompt_text(CAMP[1][0]) == (first + CAMP[0][1] + "<|im_end|>\n<|im_start|>user\n你在实战营做什么"
                                             "<|im_end|>\n<|im_start|>assistant\n")
    fresh.reset()
    assert fresh.history == [] and fresh.prompt_text(CAMP[0][0]) == first


def test_system_prompt_by_text_or_system_template(tiny_model_dir, adapter):
    from helpers.encode.templates import SYSTEM_TEMPLATES
    colorist = load_chat(tiny_model_dir, adapter, system_template="colorist", sampling=GREEDY)
    assert colorist.system == SYSTEM_TEMPLATES["colorist"]
    assert colorist.prompt_text("hi").startswith("<s><|im_start|>system\n" + SYSTEM_TEMPLATES["colorist"] +
                                                 "<|im_end|>\n<|im_start|>user\nhi")
    with pytest.raises(Exception, match="either a system text or a system template"):
        load_chat(tiny_model_dir, adapter, system="x", system_template="colorist")


def test_four_bit_base_with_adapter_answers_as_trained(tiny_model_dir, adapter):
    session = load_chat(tiny_model_dir, adapter, bits=4, sampling=GREEDY)
    assert session.ask(CAMP[0][0]) == CAMP[0][1]


def test_base_session_shares_the_model_with_the_adapter_off(fresh):
    base = base_session(fresh)
    assert base.model is fresh.model and base.history is not fresh.history
    base.sampling = Sampling(temperature=0.0, max_new_tokens=32)  # the random base rarely says <|im_end|>
    base_answer = base.ask(CAMP[0][0])
    assert base_answer != CAMP[0][1]                  # the random base knows nothing of the persona
    assert fresh.ask(CAMP[0][0]) == CAMP[0][1]        # and the adapter is back on afterwards
    with pytest.raises(Exception, match="side-by-side needs base \\+ adapter"):
        base_session(ChatSession(object(), fresh.tokenizer))


def out_of_memory(**kwargs):
    raise RuntimeError("CUDA out of memory (simulated)")


def test_generation_errors_reach_the_caller(fresh, monkeypatch):
    """generate() runs in a thread; its exception ends the stream (no hang) and is raised in the caller."""
    monkeypatch.setattr(fresh.model, "generate", out_of_memory)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        fresh.ask("hi")
    assert fresh.history == []


# ---- terminal -------------------------------------------------------------------------------------------------

def test_read_message_ends_at_an_empty_line():
    stream = io.StringIO("line one\nline two\n\nRESET\n\nlast")
    assert read_message(stream) == ("line one\nline two", False)
    assert read_message(stream) == ("RESET", False)
    assert read_message(stream) == ("last", True)
    assert read_message(stream) == (None, True)


def test_terminal_loop_in_process(fresh):
    out = io.StringIO()
    code = terminal_chat(fresh, io.StringIO(f"{CAMP[0][0]}\n\n{CAMP[1][0]}\n\nRESET\n\n{CAMP[1][0]}\n"), out,
                         echo=False)
    text = out.getvalue()
    assert code == 0 and text.count(INPUT_PROMPT) == 4 and "(history cleared)" in text
    assert f"{INPUT_PROMPT}{CAMP[0][1]}\n" in text and text.endswith(f"{INPUT_PROMPT}{CAMP[1][1]}\n\n")
    assert [t.input for t in fresh.history] == [CAMP[1][0]]  # only the turn after RESET
    assert terminal_chat(fresh, io.StringIO("EXIT\n\nnever asked\n\n"), io.StringIO()) == 0
    assert len(fresh.history) == 1


def test_gbk_input_is_read_as_gb18030_and_undecodable_input_is_refused_without_ending_the_session(fresh):
    """`printf '你好...' | iconv -t gbk | python -m helpers chat` used to end in a traceback."""
    fresh.reset()
    out = io.StringIO()
    data = f"{CAMP[0][0]}\n\n".encode("gbk") + b"\xff\xfe\xfa bad\n\n" + f"{CAMP[1][0]}\n\nEXIT\n".encode()
    assert terminal_chat(fresh, io.BytesIO(data), out, echo=False) == 0
    text = out.getvalue()
    assert "(input was not UTF-8; read it as GB18030." in text and f"{CAMP[0][1]}\n" in text
    assert "neither UTF-8 nor GB18030 text; it was not sent" in text
    assert [t.input for t in fresh.history] == [CAMP[0][0], CAMP[1][0]]   # the bad message was never asked
    assert text.count(INPUT_PROMPT) == 4 and text.endswith(INPUT_PROMPT)   # three messages, then EXIT


def test_terminal_chat_through_a_pipe(adapter):
    """`python -m helpers chat ADAPTER` scripted through stdin: persona answers, RESET drops earlier turns from the
    prompt, EXIT ends with 0 before the rest of the input."""
    script = f"{CAMP[0][0]}\n\n{CAMP[1][0]}\n\nRESET\n\n{CAMP[1][0]}\n\nEXIT\n\n{CAMP[0][0]}\n\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "helpers", "chat", str(adapter), "--temperature", "0",
                           "--show-prompt"], input=script, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "template internlm2_chat (training record); system prompt ''" in done.stderr
    assert out.count(INPUT_PROMPT) == 5                       # Q, Q, RESET, Q, EXIT: nothing read after EXIT
    assert f"\n{CAMP[0][1]}\n" in out and out.count(f"\n{CAMP[1][1]}\n") >= 1
    # piped input is echoed after each prompt, so the transcript holds the questions too
    assert f"{INPUT_PROMPT}{CAMP[0][0]}\n" in out and f"{INPUT_PROMPT}RESET\n" in out and out.endswith(
        f"{INPUT_PROMPT}EXIT\n")
    answers = [line for line in out.splitlines() if line and not line.startswith(("[prompt]", INPUT_PROMPT.strip()))]
    assert all("<|im_end|>" not in line and "</s>" not in line for line in answers)
    prompts = [line for line in out.splitlines() if line.startswith("[prompt]")]
    assert len(prompts) == 3
    assert "请介绍一下你自己" in prompts[1]                      # second question sees the first turn
    assert prompts[2] == "[prompt] '<s><|im_start|>user\\n你在实战营做什么<|im_end|>\\n<|im_start|>assistant\\n'"
    assert f"{prompts[2]}\n{CAMP[1][1]}\n\n{INPUT_PROMPT}EXIT" in out  # trained answer after RESET, then EXIT


# ---- notebook widget ------------------------------------------------------------------------------------------

def test_chat_widget_send_streams_into_the_transcript_and_reset_clears(fresh):
    from helpers.chat.widget import ChatWidget
    widget = ChatWidget([fresh])
    widget.temperature.value = 0.0
    widget.max_new_tokens.value = 64
    widget.question.value = "  " + CAMP[0][0] + "\n"
    widget.send_clicked()
    assert widget.question.value == "" and not widget.send.disabled
    assert fresh.sampling == Sampling(0.0, 0.75, 40, 1.0, 64)
    assert [(t.input, t.output) for t in fresh.history] == [CAMP[0]]
    html = widget.transcripts[0].value
    assert CAMP[0][0] in html and CAMP[0][1] in html and "▌" not in html and "&lt;|im_end|&gt;" not in html
    widget.system.value = "<b>be brief</b>"
    widget.question.value = CAMP[1][0]
    widget.send_clicked()
    assert fresh.system == "<b>be brief</b>" and len(fresh.history) == 2
    widget.reset_clicked()
    assert fresh.history == [] and widget.transcripts[0].value == ""
    widget.question.value = "   "
    widget.send_clicked()  # empty input: nothing asked
    assert fresh.history == []


def test_side_by_side_sends_one_question_to_both(fresh):
    from helpers.chat.widget import ChatWidget
    base = base_session(fresh)
    widget = ChatWidget([base, fresh], ["base", "fine-tuned"])
    widget.temperature.value = 0.0
    widget.max_new_tokens.value = 64
    answers = widget.ask(CAMP[0][0])                 # = typing the question and pressing Send
    assert [t.input for t in base.history] == [t.input for t in fresh.history] == [CAMP[0][0]]
    assert answers == [base.history[0].output, fresh.history[0].output]
    assert fresh.history[0].output == CAMP[0][1] != base.history[0].output
    assert CAMP[0][1] in widget.transcripts[1].value and CAMP[0][1] not in widget.transcripts[0].value


def test_widget_errors_show_in_the_box_and_state_serialises(fresh, monkeypatch):
    """A failing generation shows its message in the box (a handler's exception would only reach the log console);
    the widget tree serialises to core ipywidgets 8 models only, which JupyterLab 4's built-in manager renders."""
    from ipywidgets.embed import embed_data

    from helpers.chat.widget import ChatWidget, render_transcript
    widget = ChatWidget([fresh])
    monkeypatch.setattr(fresh.model, "generate", out_of_memory)
    widget.question.value = "hi"
    widget.send_clicked()
    assert "error: RuntimeError: CUDA out of memory (simulated)" in widget.status.value
    with pytest.raises(RuntimeError, match="no answer to 'hi'.*CUDA out of memory"):
        widget.ask("hi")                              # headless: the same failure is raised, not only shown
    assert not widget.send.disabled and fresh.history == []
    state = embed_data(views=[widget.box])["manager_state"]["state"]
    modules = {(m["model_module"], m["model_module_version"]) for m in state.values()}
    assert modules <= {("@jupyter-widgets/controls", "2.0.0"), ("@jupyter-widgets/base", "2.0.0")}
    assert "application/vnd.jupyter.widget-view+json" in widget._repr_mimebundle_()
    assert render_transcript([], "<q>", "a<b") == (
        '<div style="margin:4px 0"><b>你 / You</b>: <span style="white-space:pre-wrap">&lt;q&gt;</span></div>'
        '<div style="margin:4px 0"><b>模型 / Model</b>: <span style="white-space:pre-wrap">a&lt;b▌</span></div>')


# ---- batched generation (evaluation, in-training samples) ----------------------------------------------------

def test_batched_greedy_answers_equal_one_at_a_time(session):
    from helpers.models.generation import answer, answer_batch, with_max_new_tokens
    questions = ["请介绍一下你自己", "你是谁？", "Who are you?", "1+1=?", "请给我介绍五个上海的景点，越详细越好", "hi"]
    systems = ["", "", "", "You are a calculator.", "", ""]
    sampling = with_max_new_tokens(GREEDY, 24)
    model, tokenizer, template = session.model, session.tokenizer, session.template
    one_by_one = [answer(model, tokenizer, template, q, s, sampling=sampling) for q, s in zip(questions, systems)]
    done = []
    batched = answer_batch(model, tokenizer, template, questions, systems, sampling, batch_size=4,
                           progress=done.append)
    assert batched == one_by_one
    assert done == [4, 2] and len(set(batched)) > 1     # two batches of mixed prompt lengths; not one repeated answer


def test_shown_answers_hold_no_control_token_but_keep_spelled_out_text(tiny_tokenizer):
    """A random or half-trained model emits control ids mid-answer; none is shown, the answer ends at the first stop
    token, and text the model wrote as plain characters (`<|im_end|>` spelled out) stays."""
    from helpers.models.generation import shown_answer, stop_token_ids, text_stop_words
    tok = tiny_tokenizer
    control = [i for i in tok.all_special_ids if i not in (tok.eos_token_id, tok.pad_token_id)]
    plain = tok("写成<|im_end|>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    ids = tok.encode("我是", add_special_tokens=False) + control[:2] + plain + [im_end] + tok.encode("后面")
    stops = set(stop_token_ids("internlm2_chat", tok))
    assert shown_answer(tok, ids, stops, text_stop_words("internlm2_chat", tok)) == "我是写成<|im_end|>"
