"""The page of `python -m helpers demo`; streamlit runs it (start it with the launcher, helpers/chat/demo.py).

One model per server (st.cache_resource), one conversation per browser tab (st.session_state): each tab chats
through its own ChatSession over the shared model, so the training template and system prompt are used and stop
words / control tokens are cut before anything is shown (ChatSession.stream). Answers are generated one at a time:
switching the adapter off for the base column switches it off in the shared model for every tab.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import replace

import streamlit as st

from helpers.chat.demo import app_args
from helpers.chat.session import ChatSession, base_session, load_chat
from helpers.errors import TunebookError
from helpers.models.generation import Sampling

TITLES = {"base": "基座模型 base (adapter off)", "tuned": "微调后 tuned"}


@st.cache_resource(show_spinner="loading the model (once per server) ...")
def shared_model(model: str, adapter: str | None, bits: int | None, system: str | None):
    """The loaded model as a ChatSession to copy, and the lock that lets one answer be generated at a time."""
    return load_chat(model, adapter, bits, system=system), threading.Lock()


def tab_state(shared: ChatSession):
    """This tab's sessions (tuned, and base when there is an adapter) and answer times, made on its first run."""
    state = st.session_state
    if "tuned" not in state:
        state.tuned = replace(shared, history=[], last_prompt_ids=[])
        state.base = base_session(shared) if shared.loaded.adapter_path is not None else None
        state.seconds = []          # per turn: seconds per shown column
    return state


def sessions(state) -> list[ChatSession]:
    """This tab's sessions: tuned, and base when there is an adapter."""
    return [s for s in (state.tuned, state.base) if s is not None]


def caption(title: str, seconds: float, side: bool) -> str:
    return f"{TITLES[title]} · {seconds:.1f} s" if side else f"{seconds:.1f} s"


def reset_tab() -> None:
    state = st.session_state
    for session in sessions(state):
        session.reset()
    state.seconds.clear()


def settings(shared: ChatSession, state) -> bool:
    """The sidebar: system prompt, sampling, side by side, reset. Applies them to this tab's sessions; returns
    whether base and tuned answer side by side."""
    defaults = shared.sampling
    with st.sidebar:
        st.header("设置 settings")
        system = st.text_area("system prompt", value=shared.system, help="default: the training record's")
        temperature = st.slider("temperature", 0.0, 2.0, float(defaults.temperature), 0.05, help="0 = greedy")
        top_p = st.slider("top_p", 0.05, 1.0, float(defaults.top_p), 0.05)
        top_k = st.slider("top_k", 0, 200, int(defaults.top_k))
        max_new_tokens = st.slider("max_new_tokens", 1, 4096, min(int(defaults.max_new_tokens), 4096))
        # the two columns need equal histories, so switching starts a new conversation
        side = state.base is not None and st.checkbox("side by side: base vs tuned", on_change=reset_tab,
                                                      help="the same model with its adapter switched off")
        st.button("清空 reset", on_click=reset_tab, help="clear the conversation history")
        st.caption(describe(shared))
    sampling = Sampling(temperature, top_p, top_k, defaults.repetition_penalty, max_new_tokens)
    for session in sessions(state):
        session.system, session.sampling = system, sampling
    return side


def describe(shared: ChatSession) -> str:
    loaded = shared.loaded
    where = f"model `{loaded.base_path}`" + (f" + adapter `{loaded.adapter_path}`" if loaded.adapter_path else "")
    return f"{where}; template `{shared.template}`"


def columns(state, side: bool) -> list[tuple[str, ChatSession, object]]:
    """(title, session, where to draw) for each answer of a turn: base | tuned side by side, else tuned alone."""
    if not side:
        return [("tuned", state.tuned, st.container())]
    left, right = st.columns(2)
    return [("base", state.base, left), ("tuned", state.tuned, right)]


def show_history(state, side: bool) -> None:
    for turn, (question, seconds) in enumerate(zip(state.tuned.history, state.seconds)):
        with st.chat_message("user"):
            st.markdown(question.input)
        for (title, session, place), took in zip(columns(state, side), seconds):
            with place, st.chat_message("assistant"):
                st.markdown(session.history[turn].output)
                st.caption(caption(title, took, side))


def answer(question: str, state, side: bool, lock: threading.Lock) -> None:
    """Stream each column's answer as it is generated; the sessions add the turn to their histories."""
    with st.chat_message("user"):
        st.markdown(question)
    took, turns = [], len(state.tuned.history)
    try:
        for title, session, place in columns(state, side):
            with place, st.chat_message("assistant"):
                started = time.monotonic()
                with lock:
                    st.write_stream(session.stream(question))
                took.append(time.monotonic() - started)
                st.caption(caption(title, took[-1], side))
    except BaseException:   # an error, or a rerun that cut the stream: no half turn, the columns stay aligned
        for session in sessions(state):
            del session.history[turns:]
        raise
    state.seconds.append(took)


def main() -> None:
    st.set_page_config(page_title="tunebook chat", page_icon="💬", layout="wide")
    args = app_args(sys.argv[1:])
    try:
        shared, lock = shared_model(args.model, args.adapter, args.bits, args.system)
    except TunebookError as err:     # the launcher checked the paths; this is what only loading can find
        st.error(f"error: {err}")
        st.stop()
    state = tab_state(shared)
    side = settings(shared, state)
    st.title("tunebook chat")
    show_history(state, side)
    question = st.chat_input("输入问题 / your question")
    if question and question.strip():
        try:
            answer(question, state, side, lock)
        except TunebookError as err:
            st.error(f"error: {err}")


if __name__ == "__main__":   # streamlit runs the script as __main__
    main()
