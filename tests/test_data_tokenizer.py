"""The tokenizer contract: exact byte streams, special ids, single-piece markers, deterministic training, Llama-2 style models."""

from __future__ import annotations

import io

import pytest
import sentencepiece as spm
from data_support import FIREACT

from agentjax.data.formats import read_conversations
from agentjax.data.templates import template_markers
from agentjax.data.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer, train_sentencepiece

TEXTS = ["Thought: I need to search.\nAction: search[x]", "  leading and  double spaces ", "é ü 😀 中文 \t tab\r\n",
         "Observation: 1/2\n\n", "<|user|>\n[INST] <<SYS>>", ""]


def test_satisfies_the_protocol_with_distinct_special_ids(tok):
    """The sentencepiece tokenizer is a Tokenizer; BOS, EOS and pad are distinct and spell nothing."""
    assert isinstance(tok, Tokenizer)
    assert len({tok.bos_id, tok.eos_id, tok.pad_id}) == 3
    assert all(tok.token_bytes(i) == b"" for i in (tok.bos_id, tok.eos_id, tok.pad_id))
    assert tok.decode([tok.bos_id, *tok.encode("hi"), tok.eos_id]) == "hi"


@pytest.mark.parametrize("text", TEXTS)
def test_token_bytes_spell_the_text_exactly(tok, text):
    """Any text round-trips, and the token_bytes of its ids concatenate to its UTF-8 bytes (no dummy prefix space)."""
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_segmentwise_encoding_concatenates_to_the_joined_text(tok):
    """encode(a) + encode(b) decodes to a + b: what lets templates tokenize per segment."""
    for a in TEXTS:
        for b in TEXTS:
            assert tok.decode(tok.encode(a) + tok.encode(b)) == a + b


def test_template_markers_and_newline_are_single_pieces(tok):
    """Every template marker (and the line break) is one token in a tokenizer trained by agentjax."""
    for marker in (*template_markers(), "\n"):
        assert len(tok.encode(marker)) == 1, marker


def test_training_is_deterministic_and_the_file_loads_back(shared_data, tmp_path):
    """Same texts and vocab size -> byte-identical model; load_tokenizer of the written file encodes identically."""
    texts = [t.content for c in read_conversations(shared_data / FIREACT / "hotpotqa.jsonl", "fireact") for t in c.turns][:2000]
    first = train_sentencepiece(texts, 400, tmp_path / "a.model", user_symbols=template_markers())
    train_sentencepiece(texts, 400, tmp_path / "b.model", user_symbols=template_markers())
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    loaded = load_tokenizer(tmp_path / "a.model")
    assert loaded.vocab_size == first.vocab_size == 400
    assert all(loaded.encode(t) == first.encode(t) for t in TEXTS)


def test_too_small_a_vocabulary_is_a_clear_error(tmp_path):
    """A vocabulary that cannot hold the bytes, specials and markers fails with a message naming the size."""
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_sentencepiece(["some text"] * 10, 100, tmp_path / "t.model", user_symbols=template_markers())
    assert not (tmp_path / "t.model").exists()


def test_llama2_style_model_loads_without_dummy_prefix_and_pads_with_unk():
    """A model like Llama-2's (dummy prefix on, no pad piece) encodes without the prefix space and pads with unk (0)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(["Thought: search the web for the answer"] * 50 + ["Action: finish[yes]"] * 50),
        model_writer=model, vocab_size=300, model_type="bpe", byte_fallback=True, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2, hard_vocab_limit=False,
    )
    tok = SentencePieceTokenizer(model.getvalue())
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 0)
    assert tok.decode(tok.encode("Thought: x")) == "Thought: x"
    assert tok.decode(tok.encode("a") + tok.encode(" b")) == "a b"
