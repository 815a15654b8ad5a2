"""A GGUF file's embedded vocabulary as standard Hugging Face tokenizer files (`tokenizer.json` + config).

llama.cpp stores a byte-level BPE vocabulary (`tokenizer.ggml.model` = `gpt2`) as tokens, token types
and merges, and names its pre-tokenizer (`tokenizer.ggml.pre`). This module rebuilds the same tokenizer
with the `tokenizers` library: the BPE model, the pre-tokenizer that name stands for (the split rules are
llama.cpp's), byte-level decoding, control tokens as special added tokens, and a `tokenizer_config.json`
holding the special tokens, `add_bos_token` and the chat template, which `load_tokenizer` and
transformers both read.
"""

from __future__ import annotations

import json
from typing import Callable, NamedTuple

from gguf import GGUFReader, TokenType
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors


class Rule(NamedTuple):
    """How one llama.cpp pre-tokenizer name splits text, in `tokenizers` terms."""

    splits: Callable[[], list]  # pre-tokenizers ahead of the byte-level step
    gpt2_regex: bool  # the ByteLevel step also splits with GPT-2's regex
    ignore_merges: bool = False  # BPE: a word that is a whole token is taken as is (Llama 3)
    nfc: bool = False  # NFC-normalise first (Qwen2)


# llama.cpp pre-tokenizer name -> its rule (names llama-vocab.cpp treats alike share one)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
_DIGITS_THEN_GPT2 = Rule(lambda: [pre_tokenizers.Digits(individual_digits=True)], gpt2_regex=True)
PRE_TOKENIZERS = {
    "default": Rule(lambda: [], gpt2_regex=True),
    "gpt-2": Rule(lambda: [], gpt2_regex=True),
    "smollm": _DIGITS_THEN_GPT2,  # SmolLM/SmolLM2: each digit its own piece, then GPT-2's split
    "starcoder": _DIGITS_THEN_GPT2,
    "llama-bpe": Rule(lambda: [pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), "isolated")], False, ignore_merges=True),
    "qwen2": Rule(lambda: [pre_tokenizers.Split(Regex(_QWEN2_SPLIT), "isolated")], False, nfc=True),
}
SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
               "pad_token": "padding_token_id"}


class GGUFTokenizerError(ValueError):
    """The GGUF's vocabulary cannot be written as a Hugging Face tokenizer (the message names the field)."""


def field(reader: GGUFReader, name: str, default=None):
    """A metadata value (strings decoded, arrays as lists), or `default` when the file lacks it."""
    f = reader.fields.get(name)
    return default if f is None else f.contents()


def hf_tokenizer_files(reader: GGUFReader, where: str, max_len: int) -> dict[str, str]:
    """{file name: text} for `tokenizer.json` and `tokenizer_config.json` from the GGUF's vocabulary."""
    kind = field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFTokenizerError(f"{where}: field 'tokenizer.ggml.model' is {kind!r}; only byte-level BPE "
                                 "('gpt2': Llama 3, SmolLM2, Qwen) vocabularies convert")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise GGUFTokenizerError(f"{where}: field 'tokenizer.ggml.pre' is {pre!r}; known pre-tokenizers: "
                                 f"{sorted(PRE_TOKENIZERS)}")
    tokens = _required(reader, "tokenizer.ggml.tokens", where)
    merges = _required(reader, "tokenizer.ggml.merges", where)
    types = field(reader, "tokenizer.ggml.token_type") or [TokenType.NORMAL] * len(tokens)
    rule = PRE_TOKENIZERS[pre]
    specials = {name: tokens[_token_id(reader, key, where, len(tokens))] for name, key in SPECIAL_IDS.items()
                if field(reader, f"tokenizer.ggml.{key}") is not None}
    add_bos = bool(field(reader, "tokenizer.ggml.add_bos_token", False))
    if add_bos and "bos_token" not in specials:
        raise GGUFTokenizerError(f"{where}: 'tokenizer.ggml.add_bos_token' is set but 'tokenizer.ggml.bos_token_id' is missing")

    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ", 1)) for m in merges],
                               ignore_merges=rule.ignore_merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=rule.gpt2_regex)
    tok.pre_tokenizer = pre_tokenizers.Sequence([*rule.splits(), byte_level])
    if rule.nfc:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types)
                            if ty == TokenType.CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types)
                    if ty == TokenType.USER_DEFINED])
    bos = specials.get("bos_token")
    tok.post_processor = (processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                        special_tokens=[(bos, tokens.index(bos))])
                          if add_bos else processors.ByteLevel(trim_offsets=False))
    config = dict(
        tokenizer_class="PreTrainedTokenizerFast", add_bos_token=add_bos,
        add_eos_token=bool(field(reader, "tokenizer.ggml.add_eos_token", False)), **specials,
        model_max_length=max_len, clean_up_tokenization_spaces=False,
    )
    template = field(reader, "tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = template
    return {"tokenizer.json": tok.to_str(pretty=True), "tokenizer_config.json": json.dumps(config, indent=2) + "\n"}


def _required(reader: GGUFReader, name: str, where: str):
    value = field(reader, name)
    if not value:
        raise GGUFTokenizerError(f"{where}: missing field {name!r}")
    return value


def _token_id(reader: GGUFReader, key: str, where: str, n_tokens: int) -> int:
    token_id = int(field(reader, f"tokenizer.ggml.{key}"))
    if not 0 <= token_id < n_tokens:
        raise GGUFTokenizerError(f"{where}: field 'tokenizer.ggml.{key}' is {token_id}, outside the {n_tokens}-token vocabulary")
    return token_id
