"""Chat templates: one renderer turns a Conversation into token ids + loss weights (training) and prompts (inference).

Each turn is rendered as three texts tokenized separately: an opening (markers, never trained), a
body and a closing (trained when the turn is), then EOS after every assistant turn. Token ids never
depend on train flags, and the opening of a turn depends only on the turn before it, so
`prompt(C)` is exactly a token prefix of `encode(C + [assistant turn]).ids`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agentjax.data.conversation import Conversation, Turn
from agentjax.data.tokenizer import Tokenizer


@dataclass(frozen=True)
class Encoded:
    """A rendered conversation: token ids and, per token, 1.0 when the model is trained to predict it."""

    ids: np.ndarray  # int32 [n]
    weights: np.ndarray  # float32 [n]

    @property
    def num_supervised(self) -> int:
        """How many tokens carry loss."""
        return int(self.weights.sum())


class Template:
    """Base renderer; subclasses say how each turn opens, reads and closes. Options: `train_observations`, `system_prompt`."""

    name = ""
    markers: tuple[str, ...] = ()  # literal marker texts (single pieces in tokenizers trained by agentjax)
    stop_strings: tuple[str, ...] = ()
    reply_prefix = ""  # text the template puts before assistant content, which the model generates itself

    def __init__(self, tokenizer: Tokenizer, train_observations: bool = False, system_prompt: str = ""):
        self.tokenizer = tokenizer
        self.train_observations = bool(train_observations)
        self.system_prompt = system_prompt
        self._cache: dict[str, list[int]] = {}

    # -- what subclasses define -----------------------------------------------------------------

    def opening(self, role: str, prev_role: str | None) -> str:
        """Marker text that opens a turn of `role` after a turn of `prev_role` (None at the start)."""
        raise NotImplementedError

    def body(self, turn: Turn, prev_role: str | None) -> str:
        """The turn's own text as the template writes it."""
        raise NotImplementedError

    def closing(self, role: str) -> str:
        """Text after the body (before EOS for assistant turns)."""
        return ""

    # -- rendering ------------------------------------------------------------------------------

    def encode(self, conv: Conversation) -> Encoded:
        """Token ids and weights for training: BOS once; weights on trained turns' body, closing and EOS."""
        ids, weights, _ = self._render(conv)
        return Encoded(np.asarray(ids, np.int32), np.asarray(weights, np.float32))

    def prompt(self, conv: Conversation) -> list[int]:
        """Ids of `conv` followed by the opening of the next assistant turn: what the model continues from."""
        ids, _, last_role = self._render(conv)
        return ids + self._marker_ids(self.opening("assistant", last_role))

    def reply_content(self, generated: str) -> str:
        """The assistant turn content for text generated after `prompt` (EOS and stop string already removed)."""
        return generated.removeprefix(self.reply_prefix)

    def trained(self, turn: Turn) -> bool:
        """Whether this turn carries loss: its own flag, or an observation when `train_observations`."""
        return turn.train or (self.train_observations and turn.role == "tool")

    def _render(self, conv: Conversation) -> tuple[list[int], list[float], str | None]:
        """Ids, weights and the last role of `conv`, one segment at a time."""
        turns = conv.turns
        if self.system_prompt and not any(t.role == "system" for t in turns):
            turns = (Turn("system", self.system_prompt),) + turns
        tok = self.tokenizer
        ids, weights = [tok.bos_id], [0.0]
        prev: str | None = None
        for turn in turns:
            w = 1.0 if self.trained(turn) else 0.0
            for part, part_weight in (
                (self._marker_ids(self.opening(turn.role, prev)), 0.0),
                (tok.encode(self.body(turn, prev)), w),
                (self._marker_ids(self.closing(turn.role)), w),
                ([tok.eos_id] if turn.role == "assistant" else [], w),
            ):
                ids += part
                weights += [part_weight] * len(part)
            prev = turn.role
        return ids, weights, prev

    def _marker_ids(self, text: str) -> list[int]:
        """Token ids of a marker text, cached (markers repeat in every conversation)."""
        if text not in self._cache:
            self._cache[text] = self.tokenizer.encode(text)
        return self._cache[text]


class ReactTemplate(Template):
    """FireAct's plain ReAct text: the question line, then Thought/Action replies and `Observation: ...` lines.

    Each reply ends with EOS; the line break after it opens the next turn, so the text between the
    EOS tokens is exactly FireAct's. Observations are untrained unless `train_observations`.
    """

    name = "react"
    markers = ("Observation:",)
    stop_strings = ("\nObservation:",)

    def opening(self, role: str, prev_role: str | None) -> str:
        return "\n" if prev_role == "assistant" else ""

    def body(self, turn: Turn, prev_role: str | None) -> str:
        if turn.role == "assistant":
            return turn.content
        if turn.role == "tool":
            return f"Observation: {turn.content}\n"
        return turn.content + "\n"


class Llama2ChatTemplate(Template):
    """Llama-2 chat: `[INST] <<SYS>>...<</SYS>> user [/INST] reply</s>`, spaced as Llama-2's own tokenization is.

    Tool results are user turns, as in AgentLM. The model writes the space before its reply.
    """

    name = "llama2-chat"
    markers = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
    stop_strings = ("[INST]",)
    reply_prefix = " "

    def opening(self, role: str, prev_role: str | None) -> str:
        if role == "assistant" or (role in ("user", "tool") and prev_role == "system"):
            return ""
        return " [INST]"

    def body(self, turn: Turn, prev_role: str | None) -> str:
        if turn.role == "system":
            return f" <<SYS>>\n{turn.content}\n<</SYS>>\n\n"
        if turn.role == "assistant":
            return self.reply_prefix + turn.content
        return turn.content if prev_role == "system" else " " + turn.content

    def closing(self, role: str) -> str:
        return "" if role in ("system", "assistant") else " [/INST]"


class ChatTemplate(Template):
    """A natural multi-turn chat for Agent-FLAN-style data: `<|role|>` marker lines, tool results as their own role."""

    name = "chat"
    markers = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
    stop_strings = ("<|user|>", "<|tool|>")

    def opening(self, role: str, prev_role: str | None) -> str:
        return ("\n" if prev_role == "assistant" else "") + f"<|{role}|>\n"

    def body(self, turn: Turn, prev_role: str | None) -> str:
        return turn.content

    def closing(self, role: str) -> str:
        return "" if role == "assistant" else "\n"


TEMPLATES: dict[str, type[Template]] = {t.name: t for t in (ReactTemplate, Llama2ChatTemplate, ChatTemplate)}


def get_template(name: str, tokenizer: Tokenizer, **options: Any) -> Template:
    """The template called `name` (`react`, `llama2-chat`, `chat`) over `tokenizer`, with its options."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; known templates: {sorted(TEMPLATES)}")
    known = {"train_observations", "system_prompt"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"template {name!r}: unknown option {unknown[0]!r}; known options: {sorted(known)}")
    return TEMPLATES[name](tokenizer, **options)


def template_markers() -> tuple[str, ...]:
    """Every template's marker texts, for training a tokenizer that has a piece for each."""
    return tuple(dict.fromkeys(m for t in TEMPLATES.values() for m in t.markers))
