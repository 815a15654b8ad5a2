"""Helpers shared by the data tests (not a test module): a small tokenizer trained once per session, fixture paths."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from agentjax.data.formats import read_conversations
from agentjax.data.templates import template_markers
from agentjax.data.tokenizer import SentencePieceTokenizer, train_sentencepiece

FIXTURES = {  # file under fixtures/ -> format
    "agentinstruct_sample.jsonl": "agentinstruct",
    "sharegpt_sample.json": "sharegpt",
    "nat_sample.json": "nat",
    "agentflan_sample.jsonl": "agentflan",
    "openai_tools_sample.jsonl": "openai",
}
FIREACT = "fireact/finetune/gpt_format"


@functools.lru_cache(maxsize=None)
def small_tokenizer(shared_data: Path, vocab_size: int = 512) -> SentencePieceTokenizer:
    """A BPE tokenizer trained on FireAct HotpotQA and the fixtures' text (about 0.2 s; cached per session)."""
    texts = [t.content for c in read_conversations(shared_data / FIREACT / "hotpotqa.jsonl", "fireact") for t in c.turns]
    for name, fmt in FIXTURES.items():
        texts += [t.content for c in read_conversations(shared_data / "fixtures" / name, fmt) for t in c.turns]
    out = Path(tempfile.mkdtemp(prefix="agentjax-test-tok-")) / "tokenizer.model"
    return train_sentencepiece(texts, vocab_size, out, user_symbols=template_markers())


def fixture_conversations(shared_data: Path) -> list:
    """Every conversation of every invented fixture (all formats but FireAct's)."""
    return [c for name, fmt in FIXTURES.items() for c in read_conversations(shared_data / "fixtures" / name, fmt)]
