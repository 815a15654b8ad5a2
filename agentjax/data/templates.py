"""Chat templates: one renderer turns a Conversation into token ids + loss weights (training) and prompts (inference).

Each turn is rendered as three texts tokenized separately: an opening (markers, never trained), a
body and a closing (trained when the turn is), then the end-of-turn token after every assistant turn
(EOS, or the chat format's own: `<|im_end|>`, `<|eot_id|>`). Control tokens inside marker texts are
inserted by id, never tokenized from text. Token ids never depend on train flags, and the opening of
a turn depends only on the turn before it, so `prompt(C)` is exactly a token prefix of
`encode(C + [assistant turn]).ids`. A rendering ends at its last end-of-turn token: the line break
some formats write after it opens the next turn instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentjax.data.chat_template import PROBE, chat_template_family, check_renders_like_chat_template
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
    specials: tuple[str, ...] = ()  # control tokens the marker texts contain; the tokenizer must have each
    end_of_turn: str | None = None  # the control token that ends an assistant turn (None: the tokenizer's EOS)
    stop_strings: tuple[str, ...] = ()
    reply_prefix = ""  # text the template puts before assistant content, which the model generates itself
    reply_suffix = ""  # text the template puts after assistant content, before the end-of-turn token
    strip_content = False  # the format trims surrounding whitespace from every turn's content
    observation_prefix = ""  # what a tool result reads as, once it is a user message of a model's chat format

    def __init__(self, tokenizer: Tokenizer, train_observations: bool = False, system_prompt: str = ""):
        self.tokenizer = tokenizer
        self.train_observations = bool(train_observations)
        self.system_prompt = system_prompt
        self._special_ids = {token: self._special(token) for token in self.specials}
        self._split = re.compile("(" + "|".join(map(re.escape, self.specials)) + ")") if self.specials else None
        self.eot_id = self._special(self.end_of_turn) if self.end_of_turn else tokenizer.eos_id
        self._cache: dict[str, list[int]] = {}

    def _special(self, token: str) -> int:
        i = self.tokenizer.special_id(token)
        if i is None:
            raise ValueError(f"{self.tokenizer.source}: template {self.name!r} needs the special token {token!r}, "
                             "which this tokenizer does not have")
        return i

    # -- what subclasses define -----------------------------------------------------------------

    def start_ids(self) -> list[int]:
        """The ids every rendering starts with: the tokenizer's BOS, if it has one."""
        return [] if self.tokenizer.bos_id is None else [self.tokenizer.bos_id]

    def opening(self, role: str, prev_role: str | None) -> str:
        """Marker text that opens a turn of `role` after a turn of `prev_role` (None at the start)."""
        raise NotImplementedError

    def body(self, turn: Turn, prev_role: str | None) -> str:
        """The turn's own text as the template writes it."""
        raise NotImplementedError

    def closing(self, role: str) -> str:
        """Text after the body (before the end-of-turn token for assistant turns)."""
        return ""

    # -- rendering ------------------------------------------------------------------------------

    @property
    def end_ids(self) -> tuple[int, ...]:
        """Tokens that end a generated reply: the end-of-turn token and the tokenizer's EOS."""
        return tuple(dict.fromkeys((self.eot_id, self.tokenizer.eos_id)))

    def encode(self, conv: Conversation) -> Encoded:
        """Token ids and weights for training: start ids once; weights on trained turns' body, closing and end of turn."""
        ids, weights, _ = self._render(conv)
        return Encoded(np.asarray(ids, np.int32), np.asarray(weights, np.float32))

    def prompt(self, conv: Conversation) -> list[int]:
        """Ids of `conv` followed by the opening of the next assistant turn: what the model continues from."""
        ids, _, last_role = self._render(conv)
        return ids + self._marker_ids(self.opening("assistant", last_role))

    def reply_text(self, content: str) -> str:
        """What the model writes for an assistant turn with `content`, up to its end-of-turn token."""
        return self.reply_prefix + (content.strip() if self.strip_content else content) + self.reply_suffix

    def reply_content(self, generated: str) -> str:
        """The assistant turn content for text generated after `prompt` (end of turn and stop string already removed)."""
        content = generated.removeprefix(self.reply_prefix).removesuffix(self.reply_suffix)
        return content.strip() if self.strip_content else content

    def trained(self, turn: Turn) -> bool:
        """Whether this turn carries loss: its own flag, or an observation when `train_observations`."""
        return turn.train or (self.train_observations and turn.role == "tool")

    def messages(self, conv: Conversation) -> list[dict[str, str]]:
        """`conv` as Hugging Face chat messages, as this template reads it: tool results are user messages."""
        return [{"role": "user", "content": self.observation_prefix + t.content} if t.role == "tool"
                else {"role": t.role, "content": t.content} for t in self._turns(conv)]

    def spell(self, ids: list[int]) -> str:
        """The text of `ids` with control tokens written out, as a Jinja chat template writes it."""
        tok = self.tokenizer
        return b"".join(tok.token_bytes(i) or tok.piece(i).encode() for i in ids).decode("utf-8", errors="replace")

    def _turns(self, conv: Conversation) -> tuple[Turn, ...]:
        """The turns rendered: the template's system prompt first when the conversation has none."""
        if self.system_prompt and not any(t.role == "system" for t in conv.turns):
            return (Turn("system", self.system_prompt),) + conv.turns
        return conv.turns

    def _render(self, conv: Conversation) -> tuple[list[int], list[float], str | None]:
        """Ids, weights and the last role of `conv`, one segment at a time."""
        turns = self._turns(conv)
        ids = self.start_ids()
        weights = [0.0] * len(ids)
        prev: str | None = None
        for turn in turns:
            w = 1.0 if self.trained(turn) else 0.0
            for part, part_weight in (
                (self._marker_ids(self.opening(turn.role, prev)), 0.0),
                (self.tokenizer.encode(self.body(turn, prev)), w),
                (self._marker_ids(self.closing(turn.role)), w),
                ([self.eot_id] if turn.role == "assistant" else [], w),
            ):
                ids += part
                weights += [part_weight] * len(part)
            prev = turn.role
        return ids, weights, prev

    def _marker_ids(self, text: str) -> list[int]:
        """Token ids of a marker text, its control tokens by id, cached (markers repeat in every conversation)."""
        if text not in self._cache:
            parts = self._split.split(text) if self._split else [text]
            self._cache[text] = [i for p in parts if p for i in
                                 ([self._special_ids[p]] if p in self._special_ids else self.tokenizer.encode(p))]
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
    """Llama-2 chat as Meta's reference code writes it: `<s>[INST] <<SYS>>...<</SYS>> user [/INST] reply </s>`, with
    `<s>` before every `[INST]`, contents trimmed, a space before and after each reply; spaced as Llama-2's
    tokenization with its dummy prefix is. Tool results are user turns, as in AgentLM."""

    name = "llama2-chat"
    markers = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
    specials = ("<s>",)
    stop_strings = ("[INST]",)
    reply_prefix = reply_suffix = " "
    strip_content = True

    def start_ids(self) -> list[int]:
        return [self._special_ids["<s>"]]

    def opening(self, role: str, prev_role: str | None) -> str:
        if role == "assistant" or (role in ("user", "tool") and prev_role == "system"):
            return ""
        return ("<s>" if prev_role == "assistant" else "") + " [INST]"

    def body(self, turn: Turn, prev_role: str | None) -> str:
        if turn.role == "system":
            return f" <<SYS>>\n{turn.content.strip()}\n<</SYS>>\n\n"
        if turn.role == "assistant":
            return self.reply_prefix + turn.content.strip()
        return turn.content.strip() if prev_role == "system" else " " + turn.content.strip()

    def closing(self, role: str) -> str:
        return {"system": "", "assistant": self.reply_suffix}.get(role, " [/INST]")

    def spell(self, ids: list[int]) -> str:
        return super().spell(ids).replace("<s> [INST]", "<s>[INST]")  # that space is Llama-2's dummy prefix


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


class ModelChatTemplate(Template):
    """A model family's own chat format. Trajectories enter it as the chat datasets do: replies (Thought/Action)
    are assistant turns, tool results are user turns reading `Observation: ...`; a reply that goes on to
    write an observation itself is cut at `\\nObservation:`."""

    stop_strings = ("\nObservation:",)
    observation_prefix = "Observation: "

    @staticmethod
    def role(role: str) -> str:
        return "user" if role == "tool" else role

    def body(self, turn: Turn, prev_role: str | None) -> str:
        content = (self.observation_prefix if turn.role == "tool" else "") + turn.content
        return content.strip() if self.strip_content else content


class ChatMLTemplate(ModelChatTemplate):
    """ChatML (SmolLM2, Qwen): `<|im_start|>role\\n...<|im_end|>\\n`, no BOS; replies end with `<|im_end|>`.

    Contents are kept as they are; one that starts with whitespace is tokenized apart from the line break before
    it, where transformers' whole-text tokenization may merge the two (same text, exact loss weights)."""

    name = "chatml"
    specials = ("<|im_start|>", "<|im_end|>")
    end_of_turn = "<|im_end|>"

    def start_ids(self) -> list[int]:
        return []

    def opening(self, role: str, prev_role: str | None) -> str:
        return ("\n" if prev_role == "assistant" else "") + f"<|im_start|>{self.role(role)}\n"

    def closing(self, role: str) -> str:
        return "" if role == "assistant" else "<|im_end|>\n"


class Llama3Template(ModelChatTemplate):
    """Llama 3 Instruct: `<|begin_of_text|>` once, then `<|start_header_id|>role<|end_header_id|>\\n\\n` + trimmed
    content + `<|eot_id|>` per turn; replies end with `<|eot_id|>`."""

    name = "llama3"
    specials = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    end_of_turn = "<|eot_id|>"
    strip_content = True

    def start_ids(self) -> list[int]:
        return [self._special_ids["<|begin_of_text|>"]]

    def opening(self, role: str, prev_role: str | None) -> str:
        return f"<|start_header_id|>{self.role(role)}<|end_header_id|>\n\n"

    def closing(self, role: str) -> str:
        return "" if role == "assistant" else "<|eot_id|>"


TEMPLATES: dict[str, type[Template]] = {t.name: t for t in (ReactTemplate, Llama2ChatTemplate, ChatTemplate,
                                                            ChatMLTemplate, Llama3Template)}
AUTO = "auto"  # the tokenizer's own chat template family


def get_template(name: str, tokenizer: Tokenizer, **options: Any) -> Template:
    """The template called `name` (`react`, `llama2-chat`, `chat`, `chatml`, `llama3`, or `auto`: the family of the
    tokenizer's own chat template, checked to render what that template renders) over `tokenizer`."""
    if name != AUTO and name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; known templates: {sorted(TEMPLATES)} or {AUTO!r}")
    known = {"train_observations", "system_prompt"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"template {name!r}: unknown option {unknown[0]!r}; known options: {sorted(known)}")
    template = TEMPLATES[chat_template_family(tokenizer) if name == AUTO else name](tokenizer, **options)
    if name == AUTO:
        check_renders_like_chat_template(template.name, tokenizer, template.messages(PROBE), template.spell(template.prompt(PROBE)))
    return template


def template_markers() -> tuple[str, ...]:
    """Every template's marker texts, for training a tokenizer that has a piece for each."""
    return tuple(dict.fromkeys(m for t in TEMPLATES.values() for m in t.markers))
