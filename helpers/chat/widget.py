"""A chat box for notebooks (ipywidgets 8, JupyterLab 4): streaming answers, system prompt, sampling sliders, Reset,
and a side-by-side mode that asks the base model and the fine-tuned one the same question.

Only core ipywidgets controls are used (Textarea, Button, sliders, HTML, boxes), so JupyterLab 4 renders them with
the widget manager it ships (jupyterlab_widgets); no custom front-end code. The logic lives in plain methods and
`render_transcript`, so tests drive the box without a browser: set `question.value`, call `send_clicked()`, read
`transcripts[i].value` and the sessions' history. Generation runs inside the click handler; each streamed piece
updates the HTML widget at once (the kernel sends widget updates while a handler runs).
"""
from __future__ import annotations

import html

from helpers.chat.session import ChatSession, base_session, load_chat
from helpers.models.generation import Sampling

_TURN = ('<div style="margin:4px 0"><b>{who}</b>: <span style="white-space:pre-wrap">{text}</span></div>')


def render_transcript(history, pending_question: str | None = None, partial: str = "") -> str:
    """The conversation as HTML (escaped), with the question being answered and its answer so far."""
    parts = []
    for turn in history:
        parts.append(_TURN.format(who="你 / You", text=html.escape(turn.input)))
        parts.append(_TURN.format(who="模型 / Model", text=html.escape(turn.output)))
    if pending_question is not None:
        parts.append(_TURN.format(who="你 / You", text=html.escape(pending_question)))
        parts.append(_TURN.format(who="模型 / Model", text=html.escape(partial) + "▌"))
    return "".join(parts)


class ChatWidget:
    """One column per session; `display(ChatWidget(...))` or just leave it as a cell's last expression."""

    def __init__(self, sessions: list[ChatSession], titles: list[str] | None = None):
        import ipywidgets as w

        self.sessions = sessions
        titles = titles or [f"model {i + 1}" for i in range(len(sessions))]
        first = sessions[0]
        self.question = w.Textarea(placeholder="输入问题 / your question", layout=w.Layout(width="100%", height="60px"))
        self.send = w.Button(description="发送 Send", button_style="primary")
        self.reset = w.Button(description="清空 Reset")
        self.system = w.Textarea(value=first.system, description="system", layout=w.Layout(width="100%"))
        style = {"description_width": "110px"}
        self.temperature = w.FloatSlider(value=first.sampling.temperature, min=0.0, max=2.0, step=0.05,
                                         description="temperature", style=style)
        self.top_p = w.FloatSlider(value=first.sampling.top_p, min=0.05, max=1.0, step=0.05, description="top_p",
                                   style=style)
        self.top_k = w.IntSlider(value=first.sampling.top_k, min=0, max=200, description="top_k", style=style)
        self.max_new_tokens = w.IntSlider(value=min(first.sampling.max_new_tokens, 4096), min=1, max=4096,
                                          description="max_new_tokens", style=style)
        self.transcripts = [w.HTML(value="") for _ in sessions]
        self.status = w.HTML(value=f"template <code>{html.escape(str(first.template))}</code>")
        columns = [w.VBox([w.HTML(f"<h4>{html.escape(t)}</h4>"), view],
                          layout=w.Layout(width=f"{100 // len(sessions)}%", border="1px solid #ddd", padding="4px"))
                   for t, view in zip(titles, self.transcripts)]
        self.send.on_click(self.send_clicked)
        self.reset.on_click(self.reset_clicked)
        settings = w.VBox([self.system, w.HBox([self.temperature, self.top_p]),
                           w.HBox([self.top_k, self.max_new_tokens])])
        self.box = w.VBox([w.HBox(columns), self.question, w.HBox([self.send, self.reset]), self.status, settings])

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)

    def sampling(self) -> Sampling:
        return Sampling(self.temperature.value, self.top_p.value, self.top_k.value,
                        self.sessions[0].sampling.repetition_penalty, self.max_new_tokens.value)

    def apply_settings(self) -> None:
        for session in self.sessions:
            session.system = self.system.value
            session.sampling = self.sampling()

    def send_clicked(self, _button=None) -> None:
        question = self.question.value.strip()
        if not question:
            return
        self.question.value = ""
        self.send.disabled = True
        self.apply_settings()
        try:
            for session, view in zip(self.sessions, self.transcripts):
                partial = ""
                for piece in session.stream(question):
                    partial += piece
                    view.value = render_transcript(session.history, question, partial)
                view.value = render_transcript(session.history)
            self.status.value = f"template <code>{html.escape(str(self.sessions[0].template))}</code>"
        except Exception as err:  # a handler's exception would only reach JupyterLab's log console: show it here
            self.status.value = f'<span style="color:#b00">error: {html.escape(f"{type(err).__name__}: {err}")}</span>'
        finally:
            self.send.disabled = False

    def ask(self, question: str) -> list[str]:
        """What typing `question` and pressing Send does, for headless runs (tests, the main job): the answer of
        each column, in order; an error is shown in the status line as in the UI and raised here."""
        self.question.value = question
        asked = [len(session.history) for session in self.sessions]
        self.send_clicked()
        if any(len(session.history) == n for session, n in zip(self.sessions, asked)):
            raise RuntimeError(f"no answer to {question!r}: {self.status.value}")
        return [session.history[-1].output for session in self.sessions]

    def reset_clicked(self, _button=None) -> None:
        for session, view in zip(self.sessions, self.transcripts):
            session.reset()
            view.value = render_transcript(session.history)


def chat_box(model, adapter=None, side_by_side: bool = False, **load_kwargs) -> ChatWidget:
    """Load a model (see helpers.chat.session.load_chat) and return its chat box. side_by_side=True (needs an adapter) adds
    a column where the same model answers with the adapter switched off: base vs fine-tuned, one copy in memory."""
    session = load_chat(model, adapter, **load_kwargs)
    if side_by_side:
        return ChatWidget([base_session(session), session], ["基座模型 base", "微调后 fine-tuned"])
    return ChatWidget([session], ["微调后 fine-tuned" if adapter else str(model)])


def image_chat_box(chat, image=None) -> ChatWidget:
    """The chat box for a LLaVA (helpers.multimodal.llava_chat.LlavaChat) with a picture upload above it: a new
    picture starts a new conversation. `box.set_picture(bytes)` is what an upload does (for headless runs)."""
    import io

    import ipywidgets as w
    from PIL import Image

    box = ChatWidget([chat], ["LLaVA"])
    upload = w.FileUpload(accept="image/*", multiple=False, description="图片 Image")
    preview = w.Image(width=96, height=96)

    def set_picture(data: bytes) -> None:
        try:
            picture = Image.open(io.BytesIO(data))
            picture.load()
        except Exception as err:
            box.status.value = f'<span style="color:#b00">not a picture: {html.escape(str(err))}</span>'
            return
        chat.set_image(picture)
        preview.value = data
        box.transcripts[0].value = render_transcript(chat.history)

    def uploaded(change) -> None:
        if change["new"]:
            set_picture(bytes(change["new"][0]["content"]))

    upload.observe(uploaded, names="value")
    box.set_picture = set_picture
    box.box.children = (w.HBox([upload, preview]), *box.box.children)
    if image is not None:
        with open(image, "rb") as handle:
            set_picture(handle.read())
    return box
