"""The tokenizer interface the rest of agentjax codes against, and its sentencepiece implementation.

Nothing outside this module knows about sentencepiece. Text is encoded *without* a dummy prefix
space, so `encode(a) + encode(b)` spells exactly `a + b` and `token_bytes` reproduces the stream.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from agentjax.util.atomic import atomic_write


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids. `pad_id` differs from `eos_id`; `encode` adds no BOS/EOS."""

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, nothing added."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`; control tokens (BOS, EOS, pad) spell nothing."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes this token appends to the text when it follows other tokens (b'' for control tokens)."""
        ...


class SentencePieceTokenizer:
    """A sentencepiece model (a Llama-2 `tokenizer.model` works as is), with its dummy prefix space turned off.

    Llama-2 has no pad token: the pad id is then the unknown token's id (0), which byte fallback
    never emits for real text, so it stays distinct from EOS and from every real token.
    """

    def __init__(self, model: str | Path | bytes):
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(model if isinstance(model, bytes) else Path(model).read_bytes())
        proto.normalizer_spec.add_dummy_prefix = False  # segment-wise encoding must concatenate exactly
        proto.normalizer_spec.remove_extra_whitespaces = False
        self._sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.vocab_size: int = self._sp.vocab_size()
        self.bos_id: int = self._sp.bos_id()
        self.eos_id: int = self._sp.eos_id()
        self.pad_id: int = self._sp.pad_id() if self._sp.pad_id() >= 0 else self._sp.unk_id()
        if min(self.bos_id, self.eos_id, self.pad_id) < 0 or self.pad_id == self.eos_id:
            raise ValueError(f"tokenizer needs distinct BOS, EOS and pad ids; got bos={self.bos_id} eos={self.eos_id} pad={self.pad_id}")
        self._bytes = [self._piece_bytes(i) for i in range(self.vocab_size)]

    def _piece_bytes(self, i: int) -> bytes:
        piece = self._sp.id_to_piece(i)
        if self._sp.is_control(i) or self._sp.is_unknown(i) or self._sp.is_unused(i):
            return b""
        if self._sp.is_byte(i):  # byte-fallback pieces are spelled <0xNN>
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self._bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def piece(self, token_id: int) -> str:
        """The raw sentencepiece piece of a token (for debugging views such as `data inspect`)."""
        return self._sp.id_to_piece(token_id)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer from a file (a sentencepiece `.model` today; other kinds will be told apart here)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file not found")
    return SentencePieceTokenizer(path)


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    out_path: str | Path,
    *,
    user_symbols: Sequence[str],
) -> SentencePieceTokenizer:
    """Train a small BPE sentencepiece model on `texts`, deterministically, and write it atomically to `out_path`.

    Byte fallback is on (any text round-trips), normalisation is identity, `\\n` is its own piece,
    and `user_symbols` (pass `templates.template_markers()` for every template's markers) become single pieces.
    Ids: unk 0, BOS 1, EOS 2, pad 3.
    """
    symbols = list(dict.fromkeys(["\n", *user_symbols]))
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.Train(
            sentence_iterator=iter([t for t in texts if t]),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="bpe",
            byte_fallback=True,
            character_coverage=0.9995,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            user_defined_symbols=symbols,
            unk_id=0, bos_id=1, eos_id=2, pad_id=3,
            max_sentence_length=1 << 20,
            shuffle_input_sentence=False,
            num_threads=1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(f"sentencepiece training failed (vocab_size={vocab_size}, {len(symbols)} user symbols): {e}") from None
    with atomic_write(out_path, "wb") as f:
        f.write(model.getvalue())
    return SentencePieceTokenizer(model.getvalue())
