"""Hugging Face tokenizer.json files: ids equal to an independently built `tokenizers.Tokenizer`, exact byte streams,
special ids (optional BOS, pad distinct from EOS), loading by file or directory, and clear errors on bad files."""

from __future__ import annotations

import json

import pytest
from tokenizer_support import (llama2_style_tokenizer, llama3_style_tokenizer, random_texts, smollm2_gguf,
                               smollm2_reference, write_tokenizer_dir)
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import normalizers, pre_tokenizers

from agentjax.data.tokenizer import HFTokenizer, Tokenizer, copy_tokenizer, find_tokenizer, load_tokenizer
from agentjax.model.gguf_import import open_gguf
from agentjax.model.gguf_tokenizer import hf_tokenizer_files
from agentjax.util.errors import DataError

TEXTS = random_texts(3000)


def as_text_reference(tok: RawTokenizer) -> RawTokenizer:
    """A copy of `tok` that reads special-token text as text (as agentjax's encode does)."""
    copy = RawTokenizer.from_str(tok.to_str())
    copy.encode_special_tokens = True
    return copy


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(agentjax's tokenizer as GGUF import writes it, a reference built independently from the GGUF's vocabulary)."""
    folder = tmp_path_factory.mktemp("smollm2")
    for name, text in hf_tokenizer_files(open_gguf(smollm2_gguf()), "smollm2", max_len=8192).items():
        (folder / name).write_text(text, encoding="utf-8")
    return load_tokenizer(folder), as_text_reference(smollm2_reference()[0])


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    tok, config = llama3_style_tokenizer(TEXTS[:1000])
    return load_tokenizer(write_tokenizer_dir(tmp_path_factory.mktemp("llama3"), tok, config)), as_text_reference(tok)


def assert_exact(tok, reference, texts):
    """Same ids as the reference on every text; decode and the concatenated token bytes give the text back."""
    wrong = [t for t in texts if tok.encode(t) != reference.encode(t, add_special_tokens=False).ids]
    assert not wrong, f"{len(wrong)} of {len(texts)} texts tokenise differently, e.g. {wrong[:3]}"
    for text in texts:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_smollm2_ids_match_a_tokenizer_built_from_the_gguf_vocab_and_merges(smollm2):
    """On 3,000 random strings (digits, whitespace runs, unicode, ReAct text, chat markers) agentjax's ids equal the
    reference's (digits split one by one), and decode / token bytes reproduce every string exactly."""
    tok, reference = smollm2
    assert_exact(tok, reference, TEXTS)
    assert tok.encode("2024") == [tok.encode(d)[0] for d in "2024"]


def test_smollm2_special_ids_no_bos_and_a_pad_that_is_not_eos(smollm2):
    """SmolLM2: no BOS, EOS <|im_end|> = 2, and since its pad is its EOS, pad is <|endoftext|> = 0; controls spell b''."""
    tok, _ = smollm2
    assert isinstance(tok, Tokenizer) and tok.vocab_size == 49152
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, 2, 0)
    assert all(tok.token_bytes(tok.special_id(t)) == b"" for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    assert tok.special_id("<|im_start|>") == 1 and tok.special_id("hello") is None
    assert "pad <|endoftext|> (0): fallback" in tok.describe()
    assert tok.chat_template.startswith("{% for message in messages %}")


def test_llama3_style_ids_bos_from_the_post_processor_and_a_reserved_pad(llama3):
    """Llama-3 layout: ids equal the reference's without specials; BOS is <|begin_of_text|> (the post-processor adds
    it); EOS is the config's <|eot_id|>; with no pad defined, pad is the first reserved special token."""
    tok, reference = llama3
    assert_exact(tok, reference, TEXTS[:1000])
    assert tok.bos_id == tok.special_id("<|begin_of_text|>") == reference.encode("x").ids[0]
    assert tok.eos_id == tok.special_id("<|eot_id|>")
    assert tok.pad_id == tok.special_id("<|reserved_special_token_0|>")
    assert len({tok.bos_id, tok.eos_id, tok.pad_id}) == 3


@pytest.mark.parametrize("legacy", [True, False], ids=["prepend-normalizer", "metaspace"])
def test_llama2_style_metaspace_byte_fallback_is_exact_without_a_dummy_prefix(tmp_path, legacy):
    """A Llama-2-style tokenizer.json (`▁` spaces, `<0xNN>` byte fallback, either way of adding the dummy prefix)
    encodes like the same file with the prefix switched off, and its token bytes spell every string exactly."""
    raw, config = llama2_style_tokenizer(TEXTS[:500], legacy)
    tok = load_tokenizer(write_tokenizer_dir(tmp_path, raw, config))
    reference = as_text_reference(raw)
    if legacy:
        reference.normalizer = normalizers.Replace(" ", "\u2581")
    else:
        reference.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=False)
    assert_exact(tok, reference, TEXTS)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 0)  # <s>, </s>, and <unk> as pad (as the sentencepiece path)
    assert tok.decode(tok.encode("a") + tok.encode(" b")) == "a b"


def test_loads_a_file_or_a_directory_and_copies_under_standard_names(smollm2, tmp_path):
    """load_tokenizer takes the tokenizer.json or its folder; copy_tokenizer writes tokenizer_config.json and
    tokenizer.json into a run directory, where find_tokenizer finds it; a sentencepiece file is told apart by content."""
    tok, _ = smollm2
    source = find_tokenizer(tok.source.rsplit("/", 1)[0])
    assert source.name == "tokenizer.json" and load_tokenizer(source).encode("hi 12") == tok.encode("hi 12")
    copy_tokenizer(source.parent, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    assert load_tokenizer(tmp_path / "run").pad_id == 0


def test_bad_files_are_errors_naming_the_file_and_the_missing_piece(tmp_path, llama3):
    """Not a tokenizer, a config naming a token the vocabulary lacks, no pad candidate, a config that is not UTF-8:
    each a ValueError naming the file."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "junk.model").write_bytes(b"\x01\x02not a model")
    with pytest.raises(ValueError, match="junk.model: not a sentencepiece model"):
        load_tokenizer(tmp_path / "junk.model")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text('{"model": 3}')
    with pytest.raises(ValueError, match="bad/tokenizer.json: not a Hugging Face tokenizer.json"):
        load_tokenizer(tmp_path / "bad")
    raw, config = llama3_style_tokenizer(TEXTS[:200])
    folder = write_tokenizer_dir(tmp_path / "l3", raw, {**config, "eos_token": "<|im_end|>"})
    with pytest.raises(ValueError, match=r"tokenizer_config.json: eos_token '<\|im_end\|>' is not in .*tokenizer.json"):
        HFTokenizer(folder / "tokenizer.json")
    spec = json.loads(raw.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if "reserved" not in t["content"]]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no pad_token distinct from eos"):
        HFTokenizer(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_bytes(b'{"eos_token": "\xff"}')
    with pytest.raises(DataError, match=r"tokenizer_config\.json:1: not valid UTF-8: byte 0xff"):
        HFTokenizer(folder / "tokenizer.json")
