"""The one normalised form every dataset format becomes: a conversation of turns (XTuner's `conversation`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Turn:
    input: str
    output: str
    system: str = ""
    output_with_loss: bool = True   # XTuner `output_with_loss`; OpenAI `"loss": false` sets it False


@dataclass
class Conversation:
    turns: list[Turn]
    pretrain: bool = False          # XTuner pretrain_map_fn: raw text, whole text trained, no template, no EOS
    source: str = ""                # "FILE:LINE" the record came from, for messages

    def to_record(self) -> dict:
        """XTuner conversation JSON (what `xtuner check-custom-dataset` accepts)."""
        if self.pretrain:
            return {"text": "".join(t.output for t in self.turns)}
        turns = []
        for turn in self.turns:
            item = {}
            if turn.system:
                item["system"] = turn.system
            item["input"] = turn.input
            item["output"] = turn.output
            if not turn.output_with_loss:
                item["output_with_loss"] = False
            turns.append(item)
        return {"conversation": turns}


def with_default_system(conversation: Conversation, system: str) -> Conversation:
    """Give the first turn `system` when no turn has a system text of its own (data wins over the default)."""
    if not system or conversation.pretrain or any(t.system for t in conversation.turns):
        return conversation
    first = conversation.turns[0]
    turns = [Turn(first.input, first.output, system, first.output_with_loss), *conversation.turns[1:]]
    return Conversation(turns, conversation.pretrain, conversation.source)


def single_turn(question: str, answer: str, system: str = "") -> Conversation:
    return Conversation([Turn(input=question, output=answer, system=system)])


