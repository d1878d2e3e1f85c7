"""Go text/template, the part Ollama Modelfile templates use, evaluated in Python for the Modelfile test (Ollama is
not installable here). Written from Go's text/template documentation, independent of helpers/share/modelfile.py:
actions {{ ... }} with optional trim markers, string/bool literals, variables ($x := v, $x = v, scoped as in Go:
assignment writes the innermost declaration), .Field and $x.Field, `range $m := .List` / `range $i, $m := .List`,
if / else if / else / end, and the functions eq, ne, not, and, or. Anything else raises, so an unsupported
construct cannot pass silently."""
from __future__ import annotations

import re

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|:=|=|,|\(|\)|[^\s,()]+')


def _lex(template: str) -> list:
    """[("text", s) | ("action", words)] with Go's trim markers applied to the neighbouring text."""
    parts, pos = [], 0
    for match in _ACTION.finditer(template):
        text = template[pos:match.start()]
        if match.group(1):
            text = text.rstrip(" \t\r\n")
        parts.append(["text", text])
        parts.append(["action", _TOKEN.findall(match.group(2)), bool(match.group(3))])
        pos = match.end()
    parts.append(["text", template[pos:]])
    for i, part in enumerate(parts):   # a right trim marker trims the text after the action
        if part[0] == "action" and part[2]:
            parts[i + 1][1] = parts[i + 1][1].lstrip(" \t\r\n")
    return [(p[0], p[1]) for p in parts if p[0] == "action" or p[1]]


def _parse(parts: list, at: int = 0, until=("end",)):
    """A list of nodes up to one of `until`; returns (nodes, index of the closing action, its words)."""
    nodes = []
    while at < len(parts):
        kind, value = parts[at]
        if kind == "text":
            nodes.append(("text", value))
            at += 1
            continue
        word = value[0] if value else ""
        if word in until or (word == "else" and "else" in until):
            return nodes, at, value
        if word == "if":
            branches, at = _parse_if(parts, at)
            nodes.append(("if", branches))
        elif word == "range":
            body, end, _ = _parse(parts, at + 1, ("end",))
            nodes.append(("range", value[1:], body))
            at = end + 1
        elif word in ("end", "else"):
            raise ValueError(f"unexpected {{{{ {' '.join(value)} }}}}")
        else:
            nodes.append(("expr", value))
            at += 1
    if until != ():
        raise ValueError("missing {{ end }}")
    return nodes, at, None


def _parse_if(parts: list, at: int):
    branches, condition = [], parts[at][1][1:]
    at += 1
    while True:
        body, at, closing = _parse(parts, at, ("end", "else"))
        branches.append((condition, body))
        if closing[0] == "end":
            return branches, at + 1
        condition = closing[2:] if len(closing) > 1 and closing[1] == "if" else None
        at += 1
        if condition is None:
            body, at, _ = _parse(parts, at, ("end",))
            branches.append((None, body))
            return branches, at + 1


class _Scope:
    def __init__(self, parent=None):
        self.values, self.parent = {}, parent

    def find(self, name):
        scope = self
        while scope is not None:
            if name in scope.values:
                return scope
            scope = scope.parent
        raise NameError(f"undefined variable {name}")


def _value(words: list, dot, scope: _Scope):
    """Evaluate a pipeline of words (a function call, or one operand)."""
    if not words:
        raise ValueError("empty expression")
    head, args = words[0], words[1:]
    functions = {"eq": lambda a, *b: any(a == x for x in b), "ne": lambda a, b: a != b, "not": lambda a: not a,
                 "and": lambda *a: next((x for x in a if not x), a[-1]), "or": lambda *a: next((x for x in a if x), a[-1])}
    if head in functions:
        return functions[head](*[_operand(w, dot, scope) for w in args])
    if args:
        raise ValueError(f"unsupported expression {' '.join(words)}")
    return _operand(head, dot, scope)


def _operand(word: str, dot, scope: _Scope):
    if word.startswith('"'):
        return bytes(word[1:-1], "utf-8").decode("unicode_escape")
    if word in ("true", "false"):
        return word == "true"
    if word.startswith("$"):
        name, _, field = word.partition(".")
        value = scope.find(name).values[name]
        return value[field] if field else value
    if word.startswith("."):
        return dot if word == "." else dot[word[1:]]
    raise ValueError(f"unsupported operand {word}")


def _run(nodes, dot, scope: _Scope, out: list) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            words = node[1]
            if len(words) >= 3 and words[0].startswith("$") and words[1] in (":=", "="):
                target = scope if words[1] == ":=" else scope.find(words[0])
                target.values[words[0]] = _value(words[2:], dot, scope)
            else:
                value = _value(words, dot, scope)
                out.append("" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
        elif node[0] == "if":
            for condition, body in node[1]:
                if condition is None or _value(condition, dot, scope):
                    _run(body, dot, _Scope(scope), out)
                    break
        elif node[0] == "range":
            words = node[1]
            if ":=" in words:
                names, items = [w for w in words[:words.index(":=")] if w != ","], words[words.index(":=") + 1:]
            else:
                names, items = [], words
            for index, item in enumerate(_value(items, dot, scope)):
                inner = _Scope(scope)
                if len(names) == 1:
                    inner.values[names[0]] = item
                elif len(names) == 2:
                    inner.values[names[0]], inner.values[names[1]] = index, item
                _run(node[2], item, inner, out)


def render(template: str, data: dict) -> str:
    nodes, _, _ = _parse(_lex(template), 0, ())
    out: list[str] = []
    _run(nodes, data, _Scope(), out)
    return "".join(out)
