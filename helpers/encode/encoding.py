"""Conversations -> input_ids + labels, exactly as XTuner's encode_fn (v0.1.21, xtuner/dataset/utils.py).

Each XTuner piece (system+instruction / output+suffix / sep) is tokenized on its own with
add_special_tokens=False; BOS comes at the sample start and after every EOS; labels are -100 except on
outputs (+ suffix, + EOS when the template does not use its suffix as EOS); right truncation at max_length;
samples left without a trained token are dropped and counted.

The one deliberate difference: text inside a record that spells a special token of the tokenizer (say a
persona name "<|im_end|>") is encoded as plain characters, never as the control token; records without
such text give exactly XTuner's ids.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from typing import Any

from helpers.data.conversation import Conversation, with_default_system
from helpers.errors import TunebookError
from helpers.encode.chat_format import ChatFormat, chat_format
from helpers.encode.templates import PromptTemplate, Segment, get_template, segments

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"   # LLaVA's placeholder in data and prompts (XTuner's DEFAULT_IMAGE_TOKEN)
_PRETRAIN = get_template("default")  # pretrain records ignore the template; any one renders them


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]
    source: str = ""           # FILE:LINE of the record
    truncated: bool = False
    special_text: bool = False  # content spelled a special token; encoded as plain text

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class EncodeStats:
    conversations: int = 0
    samples: int = 0
    truncated: int = 0
    dropped_prompt_too_long: int = 0   # truncation left no trained token (prompt alone >= max_length)
    dropped_no_trained: int = 0        # nothing to train on (e.g. every output has output_with_loss false)
    special_text: list[str] = field(default_factory=list)  # sources of records whose text spelled a special token
    tokens: int = 0
    trained_tokens: int = 0
    longest: int = 0


def bos_eos_ids(tokenizer) -> tuple[list[int], list[int]]:
    """XTuner get_bos_eos_token_ids: the tokenizer's BOS (none for tokenizers without one, e.g. Qwen) and EOS."""
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    return bos, eos


def pad_token_id(tokenizer) -> int | None:
    """The padding id; tokenizers without a pad token (Llama, InternLM2 converted) pad with EOS, as XTuner does."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def special_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokenizer's control tokens (whatever text spells them)."""
    ids = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return frozenset(ids | {i for i in tokenizer.all_special_ids if i is not None})


def plain_text_ids(tokenizer, text: str, controls: frozenset[int]) -> list[int]:
    """`text` as plain characters, never a control token: special-token matching off, and a spelling that still
    reaches a control id through the tokenizer's normalizer (InternLM2's `[UNUSED_TOKEN_145]`, which its converted
    tokenizer rewrites to `<|im_end|>`) is cut out and given to the tokenizer's model as the characters it is."""
    matched = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    hidden, previous_end = [], 0
    for token_id, (_, end) in zip(matched["input_ids"], matched["offset_mapping"]):
        # a normalizer rewrite aligns its output with the last original character only: the original spelling
        # is everything since the previous token ended
        if token_id in controls and tokenizer.convert_ids_to_tokens(token_id) != text[previous_end:end].strip():
            hidden.append((previous_end, end))
        previous_end = max(previous_end, end)
    plain = tokenizer(text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
    if not hidden:  # control tokens spelled as themselves: matching off keeps their characters
        return plain["input_ids"]
    # Matching off still lets the normalizer rewrite the old spelling; the tokens covering it are replaced by the
    # model's own tokens for its characters (no normalizer, so no rewrite), the rest of the encoding stays.
    model, vocab = tokenizer.backend_tokenizer.model, tokenizer.get_vocab()
    out, pairs, index = [], list(zip(plain["input_ids"], plain["offset_mapping"])), 0
    for start, end in hidden:
        while index < len(pairs) and pairs[index][1][1] <= start:
            out.append(pairs[index][0])
            index += 1
        region_start, region_end = start, end
        while index < len(pairs) and pairs[index][1][0] < end:
            region_end = max(region_end, pairs[index][1][1])
            index += 1
        out += [vocab[t.value] for t in model.tokenize(text[region_start:region_end].replace(" ", "\u2581"))]
    return out + [token_id for token_id, _ in pairs[index:]]


def special_token_texts(tokenizer) -> list[str]:
    """Spellings the tokenizer turns into one control token (longest first, for splitting)."""
    texts = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    texts.update(tokenizer.all_special_tokens)
    return sorted((t for t in texts if t), key=len, reverse=True)


def _split_specials(text: str, specials: list[str]) -> list[tuple[bool, str]]:
    """Split template text into (is_special, text) runs at special-token spellings."""
    runs, i, plain = [], 0, []
    while i < len(text):
        match = next((s for s in specials if text.startswith(s, i)), None)
        if match:
            if plain:
                runs.append((False, "".join(plain)))
                plain = []
            runs.append((True, match))
            i += len(match)
        else:
            plain.append(text[i])
            i += 1
    if plain:
        runs.append((False, "".join(plain)))
    return runs


class Encoder:
    """Encodes conversations for one tokenizer + template (+ default system prompt)."""

    def __init__(self, tokenizer, template: ChatFormat | PromptTemplate | str, max_length: int, system: str = "",
                 image: tuple[int, int] | None = None):
        """image: (image token id, positions per picture) to encode LLaVA's <image> placeholder in content as that
        many image tokens (never trained); without it the placeholder is plain text like any other."""
        if max_length <= 0:
            raise TunebookError(f"max_length must be a positive number of tokens, got {max_length}")
        self.tokenizer = tokenizer
        self.format = chat_format(template)
        self.hf_mode = self.format.uses_tokenizer_template
        self.template = self.format.prompt  # None in hf mode
        self.max_length = max_length
        self.system = system
        self.image = image
        self.bos, self.eos = bos_eos_ids(tokenizer)
        if self.template is not None and self.template.spells_bos(tokenizer.bos_token):
            self.bos = []  # the template's own opening token is the BOS (ChatML tokenizers, e.g. SmolLM2)
        if self.template is not None and self.template.needs_eos and not self.eos:
            raise TunebookError(f"template {self.template.name!r} appends the tokenizer's EOS, but this tokenizer "
                                "has no eos_token; set tokenizer.eos_token or use a template with SUFFIX_AS_EOS")
        self.specials = special_token_texts(tokenizer)
        self.special_ids = special_ids(tokenizer)
        self.stats = EncodeStats()
        # Template pieces and duplicated records repeat a lot (camp3: 2 distinct rows x 8001); remember them.
        self._encode_piece = functools.lru_cache(maxsize=1 << 16)(
            lambda text: tuple(tokenizer.encode(text, add_special_tokens=False)))

    # -- public -------------------------------------------------------------------------------------------------
    def encode(self, conversation: Conversation) -> Sample | None:
        """One conversation -> Sample, or None when it has no trained token left (counted in stats)."""
        conversation = with_default_system(conversation, self.system)
        self.stats.conversations += 1
        if self.hf_mode and not conversation.pretrain:
            from helpers.encode.hf_template import encode_with_chat_template
            ids, labels, special = encode_with_chat_template(self.tokenizer, conversation, self.special_ids)
        else:
            ids, labels, special = self._encode_segments(self._segments(self.template or _PRETRAIN, conversation))
        if special:
            self.stats.special_text.append(conversation.source)
        truncated = len(ids) > self.max_length
        if truncated:  # XTuner keeps the first max_length tokens
            ids, labels = ids[:self.max_length], labels[:self.max_length]
        if all(label == IGNORE_INDEX for label in labels):
            if truncated:
                self.stats.dropped_prompt_too_long += 1
            else:
                self.stats.dropped_no_trained += 1
            return None
        sample = Sample(ids, labels, conversation.source, truncated, special)
        self.stats.samples += 1
        self.stats.truncated += truncated
        self.stats.tokens += len(sample)
        self.stats.trained_tokens += sample.trained_tokens
        self.stats.longest = max(self.stats.longest, len(sample))
        return sample

    def encode_all(self, conversations: list[Conversation], progress: bool = False) -> list[Sample]:
        iterator = conversations
        if progress:
            from tqdm.auto import tqdm
            iterator = tqdm(conversations, desc="tokenizing", unit="rec", leave=False)
        return [s for s in (self.encode(c) for c in iterator) if s is not None]

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """Token ids of the generation prompt for the conversation's last turn (its output is ignored)."""
        conversation = with_default_system(conversation, self.system)
        if self.hf_mode:
            from helpers.encode.hf_template import prompt_ids_with_chat_template
            return prompt_ids_with_chat_template(self.tokenizer, conversation, self.special_ids)
        ids, _, _ = self._encode_segments(self._segments(self.template, conversation, generation=True))
        return ids

    # -- internals ----------------------------------------------------------------------------------------------
    def _segments(self, template: PromptTemplate, conversation: Conversation, generation: bool = False):
        segs = segments(template, conversation, generation=generation)
        if self.image is None:
            return segs
        if self.hf_mode:
            raise TunebookError("LLaVA training needs a tunebook prompt template (template: auto or a name), "
                                "not the tokenizer's own chat_template")
        return image_segments(segs)

    def _encode_segments(self, segs: list[Segment]) -> tuple[list[int], list[int], bool]:
        ids: list[int] = []
        labels: list[int] = []
        any_special = False
        for piece in _group_pieces(segs):
            # Within a piece: optional BOS, then its text (one tokenizer call, as XTuner), then optional EOS.
            text_segments: list[Segment] = []
            for seg in [*piece, None]:
                if seg is not None and seg.kind in ("template", "content"):
                    text_segments.append(seg)
                    continue
                if text_segments:
                    piece_ids, special = self._encode_text(text_segments)
                    any_special |= special
                    ids += piece_ids
                    labels += piece_ids if text_segments[0].trained else [IGNORE_INDEX] * len(piece_ids)
                    text_segments = []
                if seg is not None and seg.kind == "image":
                    image_id, count = self.image
                    ids += [image_id] * count
                    labels += [IGNORE_INDEX] * count
                elif seg is not None:
                    token = self.bos if seg.kind == "bos" else self.eos
                    ids += token
                    labels += token if seg.trained else [IGNORE_INDEX] * len(token)
        return ids, labels, any_special

    def _encode_text(self, texts: list[Segment]) -> tuple[list[int], bool]:
        content_has_special = any(seg.kind == "content" and any(s in seg.text for s in self.specials)
                                  for seg in texts)
        if not content_has_special:
            ids = list(self._encode_piece("".join(seg.text for seg in texts)))
            if self._controls_in(ids) == sum(self._controls_in(self._encode_piece(seg.text))
                                             for seg in texts if seg.kind == "template"):
                return ids, False
            # more control tokens than the template holds: the content spells one another way; protect it
        # Template text keeps its control tokens; everything else (user text and the plain template text
        # around it) is tokenized with special-token matching switched off.
        runs: list[tuple[bool, str]] = []
        for seg in texts:
            seg_runs = _split_specials(seg.text, self.specials) if seg.kind == "template" else [(False, seg.text)]
            for is_special, text in seg_runs:
                if runs and not is_special and not runs[-1][0]:
                    runs[-1] = (False, runs[-1][1] + text)
                else:
                    runs.append((is_special, text))
        ids: list[int] = []
        for is_special, text in runs:
            if is_special:
                ids.append(self.tokenizer.convert_tokens_to_ids(text))
            else:
                ids += plain_text_ids(self.tokenizer, text, self.special_ids)
        return ids, True

    def _controls_in(self, ids) -> int:
        return sum(1 for i in ids if i in self.special_ids)


def image_segments(segs: list[Segment]) -> list[Segment]:
    """Content segments split at <image>: text before, an "image" segment, text after (same piece)."""
    out = []
    for seg in segs:
        if seg.kind != "content" or IMAGE_TOKEN not in seg.text:
            out.append(seg)
            continue
        parts = seg.text.split(IMAGE_TOKEN)
        for i, part in enumerate(parts):
            if i:
                out.append(Segment("image", "", False, seg.piece))
            if part:
                out.append(replace(seg, text=part))
    return out


def _group_pieces(segs: list[Segment]) -> list[list[Segment]]:
    pieces: list[list[Segment]] = []
    for seg in segs:
        if pieces and pieces[-1][0].piece == seg.piece:
            pieces[-1].append(seg)
        else:
            pieces.append([seg])
    return pieces


def decode_with_mask(tokenizer, sample: Sample, open_mark: str = "[", close_mark: str = "]") -> str:
    """The sample's text with trained spans in brackets (special tokens kept), for check-data and notebooks."""
    out, inside, start = [], False, 0
    for i in range(len(sample.input_ids) + 1):
        trained = i < len(sample.labels) and sample.labels[i] != IGNORE_INDEX
        if i == len(sample.input_ids) or trained != inside:
            if i > start:
                out.append(tokenizer.decode(sample.input_ids[start:i], skip_special_tokens=False,
                                            clean_up_tokenization_spaces=False))
            if i < len(sample.input_ids):
                out.append(open_mark if trained else close_mark)
            elif inside:
                out.append(close_mark)
            inside, start = trained, i
    return "".join(out)


def load_tokenizer(path: str | os.PathLike, **kwargs: Any):
    """AutoTokenizer without remote code; a clear message when the folder has no tokenizer."""
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as err:
        raise TunebookError(f"cannot load a tokenizer from {path}: {err}. Give a model folder with tokenizer files "
                            "(tokenizer.json / tokenizer.model + tokenizer_config.json), or make the tiny one with: "
                            "python -m helpers make-tiny-model DIR") from None
