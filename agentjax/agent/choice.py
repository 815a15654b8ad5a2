"""Multiple choice by likelihood (MMLU as AgentTuning measures general ability): no generation, no parsing.

The question with its lettered options is the user turn of the model's own template; the model's pick is the
option letter it gives the highest probability as the first token of its reply. One forward pass per batch of
prompts (sorted by length, padded to a few bucket widths so few programs compile), and only the letters'
logits are made: each row's last hidden state times the letters' columns of the output projection.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from agentjax import sharding
from agentjax.data.conversation import Conversation, Turn
from agentjax.data.templates import Template
from agentjax.model.llama import Llama
from agentjax.tasks.base import Question
from agentjax.tasks.mmlu import LETTERS

INSTRUCTION = "Answer with the letter of the correct option."
BUCKET = 64  # prompt lengths are padded up to a multiple of this


def letter_ids(template: Template) -> list[int]:
    """The token each option letter starts a reply with; an error if the tokenizer spells two letters alike."""
    ids = [template.tokenizer.encode(letter)[0] for letter in LETTERS]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the tokenizer starts the option letters {LETTERS} with the same token ids {ids}")
    return ids


def prompt_ids(template: Template, question: Question) -> list[int]:
    """The ids the model continues with its answer: the question, its options and the instruction as a user turn."""
    return template.prompt(Conversation(turns=(Turn("user", f"{question.question}\n{INSTRUCTION}"),)))


def choice_accuracy(model: Llama, template: Template, questions: list[Question], batch_size: int = 16,
                    progress: bool = True) -> dict:
    """Accuracy (%) of the most likely option letter over `questions` (gold: `answers[0]`), overall and per
    subject, and how often (%) each letter was picked (a model's letter prior)."""
    picks = choose(model, template, questions, batch_size, progress)
    right = [pick == q.answers[0] for pick, q in zip(picks, questions)]
    by_subject = collections.defaultdict(list)
    for ok, q in zip(right, questions):
        by_subject[q.meta.get("subject", "")].append(ok)
    mean = lambda xs: 100 * sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return {"accuracy": mean(right), "n": len(questions),
            "picked": {letter: mean([p == letter for p in picks]) for letter in LETTERS},
            "per_subject": {s: mean(xs) for s, xs in sorted(by_subject.items())}}


def choose(model: Llama, template: Template, questions: list[Question], batch_size: int = 16,
           progress: bool = True) -> list[str]:
    """The option letter the model finds most likely for each question, in order."""
    mesh = sharding.mesh_of(nnx.state(model)) or sharding.make_mesh(devices=jax.devices()[:1])
    graphdef, params = nnx.split(model)
    columns = jnp.asarray(letter_ids(template))

    @jax.jit
    def letter_logits(params, tokens, lengths):
        m = nnx.merge(graphdef, params)
        segments = (jnp.arange(tokens.shape[1])[None] < lengths[:, None]).astype(jnp.int32)
        last = m.features(tokens, segment_ids=segments)[jnp.arange(tokens.shape[0]), lengths - 1]
        return jnp.dot(last.astype(jnp.float32), jnp.take(m.head_kernel(), columns, axis=1).astype(jnp.float32))

    prompts = [prompt_ids(template, q) for q in questions]
    order = sorted(range(len(questions)), key=lambda i: len(prompts[i]))
    picks: dict[int, int] = {}
    bar = tqdm(total=len(questions), desc="multiple choice", unit="question", disable=not progress, dynamic_ncols=True)
    with sharding.activate(mesh):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = -(-max(len(prompts[i]) for i in chunk) // BUCKET) * BUCKET
            tokens = np.full((batch_size, width), template.tokenizer.pad_id, np.int32)
            lengths = np.ones(batch_size, np.int32)  # rows past the chunk's end: one pad token, ignored
            for row, i in enumerate(chunk):
                tokens[row, :len(prompts[i])], lengths[row] = prompts[i], len(prompts[i])
            best = np.asarray(letter_logits(params, tokens, lengths)).argmax(-1)
            picks.update((i, int(best[row])) for row, i in enumerate(chunk))
            bar.update(len(chunk))
    bar.close()
    return [LETTERS[picks[i]] for i in range(len(questions))]


def spread(questions: list[Question], n: int | None) -> list[Question]:
    """`n` questions spaced evenly through the list (each MMLU subject in proportion); all if None."""
    if n is None or n >= len(questions):
        return questions
    return [questions[i * len(questions) // n] for i in range(n)]
