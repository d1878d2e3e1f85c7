"""An Ollama Modelfile for an exported GGUF: the training template as a Go template, its stop words, the system prompt.

Ollama formats a chat with the Modelfile's TEMPLATE (Go text/template over `.Messages`), not the GGUF's Jinja
template, and stops only on its `PARAMETER stop` lines: a Modelfile without them never stops (Ollama #8363). Both are
built here from the same template object training used (helpers.encode.chat_format), so `ollama run` sees exactly the
prompt tunebook trained on. No library writes Modelfiles; the format is a few documented lines.
"""
from __future__ import annotations

import json

from helpers.errors import TunebookError


def _literal(text: str) -> str:
    """Template text as Go template output: plain text, unless it would open an action."""
    if "{{" in text or "}}" in text:
        raise TunebookError(f"template text {text!r} contains '{{{{' or '}}}}', which a Go template cannot hold literally")
    return text


def _fill(text: str, slot: str, value: str) -> str:
    """`text` with its {slot} placeholder replaced by the Go action `value`."""
    before, _, after = text.partition("{" + slot + "}")
    return _literal(before) + value + _literal(after)


def go_template(fmt, bos_token: str | None, eos_token: str | None) -> str:
    """The Go template that renders `.Messages` as `fmt` renders a conversation for training and chat.

    The same rules as the Jinja chat_template (helpers.encode.templates.to_jinja): a system message applies to the
    next user turn; every user turn is the template's instruction (which ends with the assistant opening); an answer
    gets the suffix, EOS when the template does not use the suffix as EOS, and the separator; BOS opens a prompt when
    the template does not spell it and either nothing was answered yet or answers end with EOS."""
    prompt = fmt.prompt
    if prompt is None:
        raise TunebookError("template 'hf' is the tokenizer's own Jinja template, which has no Go form here; train with "
                            "a named template (e.g. chatml) to export an Ollama Modelfile")
    if "{round}" in prompt.instruction:
        raise TunebookError(f"template {fmt.name!r} numbers its rounds ({{round}}); the Modelfile cannot count them")
    spelled = prompt.spells_bos(bos_token)
    bos = _literal(bos_token) if bos_token and not spelled else ""
    bos_part = ""
    if bos:   # before the first prompt always; before later ones only when answers end with EOS
        bos_part = bos if prompt.needs_eos else "{{ if not $answered }}" + bos + "{{ end }}"
    system_part = ""
    if prompt.system is not None:
        system_part = "{{ if $system }}" + _fill(prompt.system, "system", "{{ $system }}") + "{{ end }}"
    answer = ("{{ $m.Content }}" + _literal(prompt.suffix) + (_literal(eos_token or "") if prompt.needs_eos else "")
              + _literal(prompt.sep))
    return ("{{ $system := \"\" }}{{ $answered := false }}"
            "{{ range $m := .Messages }}"
            "{{ if eq $m.Role \"system\" }}{{ $system = $m.Content }}"
            "{{ else if eq $m.Role \"user\" }}" + bos_part + system_part
            + _fill(prompt.instruction, "input", "{{ $m.Content }}") + "{{ $system = \"\" }}"
            "{{ else if eq $m.Role \"assistant\" }}" + answer + "{{ $answered = true }}"
            "{{ end }}{{ end }}")


def _quoted(value: str, what: str) -> str:
    if '"' in value or "\n" in value:
        raise TunebookError(f"{what} {value!r} contains a quote or a newline, which a Modelfile PARAMETER cannot hold")
    return f'"{value}"'


def _block(value: str, what: str) -> str:
    if '"""' in value:
        raise TunebookError(f'{what} contains """, which ends a Modelfile block; remove it')
    return f'"""{value}"""'


def modelfile(gguf_name: str, fmt, stop_words: list[str], system: str, bos_token: str | None,
              eos_token: str | None, temperature: float = 0.1, top_p: float = 0.75, top_k: int = 40) -> str:
    """The Modelfile text: FROM the GGUF beside it, TEMPLATE, a stop line per stop word, sampling as tunebook's chat."""
    lines = ["# written by tunebook: ollama create NAME -f Modelfile, then ollama run NAME",
             f"FROM ./{gguf_name}",
             f"TEMPLATE {_block(go_template(fmt, bos_token, eos_token), 'the template')}"]
    for word in dict.fromkeys(w for w in stop_words if w):
        lines.append(f"PARAMETER stop {_quoted(word, 'stop word')}")
    lines += [f"PARAMETER temperature {temperature}", f"PARAMETER top_p {top_p}", f"PARAMETER top_k {top_k}"]
    if system:
        lines.append(f"SYSTEM {_block(system, 'the system prompt')}")
    return "\n".join(lines) + "\n"


def parse_modelfile(text: str) -> dict:
    """{"FROM": str, "TEMPLATE": str, "SYSTEM": str, "PARAMETER": [(name, value)]}: the instructions Ollama reads."""
    parsed: dict = {"PARAMETER": []}
    rest = text
    while rest:
        line, _, rest = rest.partition("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command, _, value = line.partition(" ")
        if value.startswith('"""'):
            body = value[3:] + "\n" + rest
            end = body.index('"""')
            value, rest = body[:end], body[end + 3:].lstrip("\n")
        if command.upper() == "PARAMETER":
            name, _, raw = value.partition(" ")
            parsed["PARAMETER"].append((name, json.loads(raw) if raw.startswith('"') else raw))
        else:
            parsed[command.upper()] = value
    return parsed
