"""SentencePiece `tokenizer.model` (+ its tokenizer_config.json) -> a fast `tokenizer.json` that transformers loads
without remote code and that gives the ids the checkpoint's own slow tokenizer gives.

The reference is InternLM2's `InternLM2Tokenizer` (modified from transformers 4.x's slow LlamaTokenizer): split the text
on the added tokens of tokenizer_config.json, `sp.encode` each text segment (so every segment gets its own dummy
prefix when the model has one), BOS first. InternLM2 renames SentencePiece pieces in its config
(`[UNUSED_TOKEN_145]` at 92542 becomes `<|im_end|>`), and the SentencePiece model still matches the old spelling as a
user-defined piece, so both spellings must reach the same id.

Why not `transformers.convert_slow_tokenizer.LlamaConverter`: in transformers 5.23 its BPE path calls
`SentencePieceExtractor.extract(vocab_scores)` against a signature that now takes a model type and raises; it ignores
the normalizer spec's precompiled charsmap and `remove_extra_whitespaces`; and it adds user-defined pieces as
pre-normalization tokens (SentencePiece matches them inside the normalized segment). A `tokenizers` vocab holds one
string per id, so the old spelling cannot be a second added token for the same id: it is rewritten to the new
spelling by the normalizer, which makes the renamed tokens "normalized" added tokens, and the per-segment dummy prefix
they would get as split-first tokens is reproduced with regex rules (`_normalizer`). Everything else (BPE with byte
fallback, normalizers, decoders, post-processor) is the `tokenizers` library's own machinery.

Known, documented deviation (spare pieces only): with a dummy prefix, a text segment that starts the text or follows
<s>/</s>/<unk> and consists of exactly one unrenamed user-defined piece (e.g. "<s>[UNUSED_TOKEN_3]") gets no "▁"
before it (SentencePiece gives "▁" + piece), because the normalizer cannot tell that segment from the added token's
own content. The renamed chat tokens, in either spelling, are not affected.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from helpers.errors import TunebookError

SPIECE_UNDERLINE = "▁"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece piece types
# Text the conversion is checked on against SentencePiece before anything is written.
_PROBES = ("Hello  world,\tthis is 上海AI实验室 书生·浦语 🙂!\n\n  leading spaces\t\ttabs\r\n end  ",
           "<|im_start|>system\n  你是助手 <|im_end|>\n<|im_start|>user\n请介绍一下你自己<|im_end|>\n"
           "<|im_start|>assistant\n我是 assistant<|im_end|> \n<|im_end|><|im_start|>  x",
           "[UNUSED_TOKEN_146]user\n旧的写法[UNUSED_TOKEN_145]\n<s> x</s> end", " ", "")


class TokenizerConversionError(TunebookError):
    """The SentencePiece model uses a feature this converter does not reproduce exactly."""


def load_sp_proto(path: str | Path):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


def _added_tokens(config: dict) -> dict[int, dict]:
    """tokenizer_config.json's added_tokens_decoder as {id: {content, special, ...}} (ids as ints)."""
    return {int(i): dict(t) for i, t in (config.get("added_tokens_decoder") or {}).items()}


def _token_name(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _alternation(strings) -> str:
    return "|".join(re.escape(s) for s in sorted(strings, key=len, reverse=True))


def _check_spec(proto, source: str) -> None:
    spec, trainer = proto.normalizer_spec, proto.trainer_spec
    if trainer.model_type != 2:
        raise TokenizerConversionError(f"{source}: trainer_spec.model_type is {trainer.model_type}; only BPE (2) "
                                       "SentencePiece models (InternLM2, Llama) are supported")
    if not spec.escape_whitespaces or trainer.treat_whitespace_as_suffix:
        raise TokenizerConversionError(f"{source}: normalizer_spec.escape_whitespaces=false or "
                                       "trainer_spec.treat_whitespace_as_suffix=true is not supported")


def _merges(proto, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges from the piece scores: SentencePiece merges the adjacent pair whose result has the highest score,
    so every split of a normal piece into two normal pieces becomes a merge ranked by that piece's score."""
    normal = {p.piece for p in proto.pieces if p.type == NORMAL}
    ranked = []
    for piece in proto.pieces:
        if piece.type != NORMAL:
            continue
        text = piece.piece
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in normal and right in normal:
                ranked.append((-piece.score, vocab[text], vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _normalizer(proto, renamed: dict[str, str], in_segment: list[str]):
    """SentencePiece normalization of one text segment, plus the rules that make renamed tokens behave as
    split-first tokens although they are matched after normalization (see the module docstring)."""
    from tokenizers import Regex, normalizers

    spec = proto.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    new_names = _alternation(renamed.values()) if renamed else None
    if spec.remove_extra_whitespaces:  # SentencePiece: strip leading/trailing spaces, collapse runs (per segment)
        steps += [normalizers.Replace(Regex("^ +| +$"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
        if new_names:
            steps += [normalizers.Replace(Regex(f" +(?={new_names})"), ""),
                      normalizers.Replace(Regex(f"(?<={new_names}) +"), "")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend(SPIECE_UNDERLINE))
    steps.append(normalizers.Replace(" ", SPIECE_UNDERLINE))
    if spec.add_dummy_prefix:
        if new_names:  # a split-first token at the start of a segment has no dummy prefix before it ...
            steps.append(normalizers.Replace(Regex(f"^{SPIECE_UNDERLINE}(?={new_names})"), ""))
            for name in renamed.values():  # ... and the text after it starts a new segment, with its own prefix
                steps.append(normalizers.Replace(Regex(f"{re.escape(name)}(?=[\\s\\S])(?!{new_names})"),
                                                 name + SPIECE_UNDERLINE))
        if in_segment:  # an added token's own content must normalize to itself, or it never matches
            steps.append(normalizers.Replace(Regex(f"^{SPIECE_UNDERLINE}(?=(?:{_alternation(in_segment)})$)"), ""))
    for old, new in renamed.items():  # the old spelling, matched inside the segment like SentencePiece does
        steps.append(normalizers.Replace(old, new))
    return normalizers.Sequence(steps)


def build_fast_tokenizer(sp_model_path: str | Path, tokenizer_config: dict | None = None):
    """A `tokenizers.Tokenizer` equivalent to the slow SentencePiece tokenizer described by `tokenizer_config`."""
    from tokenizers import AddedToken, Tokenizer, decoders
    from tokenizers.models import BPE

    config = tokenizer_config or {}
    proto = load_sp_proto(sp_model_path)
    _check_spec(proto, str(sp_model_path))
    pieces = list(proto.pieces)
    added = _added_tokens(config)
    renamed, split_first = {}, []
    names = [p.piece for p in pieces]
    for index, token in sorted(added.items()):
        content = token["content"]
        if index >= len(pieces):
            raise TokenizerConversionError(f"added token {content!r} has id {index} beyond the SentencePiece "
                                           f"vocabulary ({len(pieces)} pieces); only renamed pieces are supported")
        if content != pieces[index].piece and pieces[index].type == USER_DEFINED:
            renamed[pieces[index].piece] = content  # both spellings must reach this id
        else:
            split_first.append(content)
        names[index] = content
    # user-defined pieces SentencePiece matches inside text (the spare [UNUSED_TOKEN_n] of InternLM2)
    plain_user = [p.piece for i, p in enumerate(pieces) if p.type == USER_DEFINED and i not in added]
    in_segment = list(renamed.values()) + plain_user
    if len(set(names)) != len(names):
        raise TokenizerConversionError(f"{sp_model_path}: tokenizer_config.json renames a piece to a name another "
                                       "piece already has")
    vocab = {name: i for i, name in enumerate(names)}
    unk = names[proto.trainer_spec.unk_id] if proto.trainer_spec.unk_id >= 0 else None
    tokenizer = Tokenizer(BPE(vocab, _merges(proto, vocab), unk_token=unk, fuse_unk=True,
                              byte_fallback=proto.trainer_spec.byte_fallback))
    tokenizer.normalizer = _normalizer(proto, renamed, in_segment)
    tokens = [AddedToken(c, normalized=False, special=_is_special(added, c)) for c in split_first]
    tokens += [AddedToken(c, normalized=True, special=_is_special(added, c)) for c in renamed.values()]
    tokens += [AddedToken(c, normalized=True, special=False) for c in plain_user]
    tokenizer.add_tokens(tokens)
    steps = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if proto.normalizer_spec.add_dummy_prefix:  # drop the dummy prefix of the first segment and after split tokens
        steps.append(decoders.Strip(content=" ", left=1, right=0))
        steps += [decoders.Replace(t + " ", t) for t in split_first + list(renamed.values())]
    tokenizer.decoder = decoders.Sequence(steps)
    tokenizer.post_processor = _post_processor(config, vocab)
    return tokenizer


def _is_special(added: dict[int, dict], content: str) -> bool:
    return any(t["content"] == content and t.get("special", True) for t in added.values())


def _post_processor(config: dict, vocab: dict[str, int]):
    from tokenizers import processors

    bos, eos = _token_name(config.get("bos_token", "<s>")), _token_name(config.get("eos_token", "</s>"))
    add_bos, add_eos = config.get("add_bos_token", True), config.get("add_eos_token", False)
    # InternLM2Tokenizer.build_inputs_with_special_tokens: [bos] + a (+ b) (+ [eos])
    head, tail = ([f"{bos}:0"] if add_bos else []), ([f"{eos}:1"] if add_eos else [])
    single = head + ["$A:0"] + ([f"{eos}:0"] if add_eos else [])
    pair = head + ["$A:0", "$B:1"] + tail
    special = [(t, vocab[t]) for t, used in ((bos, add_bos), (eos, add_eos)) if used]
    return processors.TemplateProcessing(single=" ".join(single), pair=" ".join(pair), special_tokens=special)


def reference_encode(sp, split_tokens: dict[str, int], text: str, bos_id: int | None,
                     eos_id: int | None = None) -> list[int]:
    """The slow tokenizer's algorithm: split on its added tokens (longest first), `sp.encode` each text segment."""
    out = [] if bos_id is None else [bos_id]
    parts = re.split(f"({_alternation(split_tokens)})", text) if split_tokens else [text]
    for part in parts:
        if part in split_tokens:
            out.append(split_tokens[part])
        elif part:
            out.extend(sp.encode(part))
    return out + ([] if eos_id is None else [eos_id])


def write_fast_tokenizer(src_dir: str | Path, dst_dir: str | Path, chat_template: str | None = None) -> dict:
    """Write tokenizer.json + tokenizer_config.json for `src_dir`'s tokenizer.model into `dst_dir`.

    The result is checked against SentencePiece on a mixed Chinese/English/whitespace/chat probe before it is
    written; a model whose ids would differ raises TokenizerConversionError instead of training on wrong ids.
    `dst_dir` is meant to be a folder being built under helpers.io.atomic_dir (as the checkpoint conversion does).
    Returns the tokenizer_config written.
    """
    import sentencepiece as spm

    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    sp_path = src_dir / "tokenizer.model"
    if not sp_path.is_file():
        raise TokenizerConversionError(f"{src_dir}: no tokenizer.model (the SentencePiece model) to convert")
    config_path = src_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    tokenizer = build_fast_tokenizer(sp_path, config)

    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    split = {t["content"]: i for i, t in _added_tokens(config).items()}
    add_bos, add_eos = config.get("add_bos_token", True), config.get("add_eos_token", False)
    bos_id = sp.piece_to_id(_token_name(config.get("bos_token", "<s>"))) if add_bos else None
    eos_id = sp.piece_to_id(_token_name(config.get("eos_token", "</s>"))) if add_eos else None
    for text in _PROBES:
        expected = reference_encode(sp, split, text, bos_id, eos_id)
        if tokenizer.encode(text).ids != expected:
            spec = load_sp_proto(sp_path).normalizer_spec
            raise TokenizerConversionError(
                f"{sp_path}: the converted tokenizer gives other ids than SentencePiece for {text!r} (normalizer "
                f"{spec.name!r}, add_dummy_prefix={spec.add_dummy_prefix}, remove_extra_whitespaces="
                f"{spec.remove_extra_whitespaces}); please report it, and meanwhile load this model with its own "
                "remote code on transformers 4.x")
    out_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # tokenizer.json as written; no remote code
        "bos_token": _token_name(config.get("bos_token", "<s>")),
        "eos_token": _token_name(config.get("eos_token", "</s>")),
        "unk_token": _token_name(config.get("unk_token", "<unk>")),
        "pad_token": _token_name(config.get("pad_token")) or _token_name(config.get("eos_token", "</s>")),
        "add_bos_token": add_bos, "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
    }
    if "model_max_length" in config:
        out_config["model_max_length"] = config["model_max_length"]
    if chat_template is not None:
        out_config["chat_template"] = chat_template
    dst_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(dst_dir / "tokenizer.json"))
    (dst_dir / "tokenizer_config.json").write_text(json.dumps(out_config, ensure_ascii=False, indent=2) + "\n",
                                                  encoding="utf-8")
    return out_config
