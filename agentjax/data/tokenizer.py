"""The tokenizer interface the rest of agentjax codes against, and its two implementations.

Sentencepiece models (`tokenizer.model`: Llama 2, and tiny ones trained on the fly) and Hugging Face
`tokenizer.json` files (byte-level BPE: Llama 3, SmolLM2, Qwen; Metaspace/byte-fallback: Llama 2).
Nothing outside this module knows which. Text is encoded *without* a dummy prefix space and without
special tokens, so `encode(a) + encode(b)` spells exactly `a + b` and `token_bytes` reproduces the stream.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

import sentencepiece as spm
import tokenizers
from sentencepiece import sentencepiece_model_pb2

from agentjax.util.atomic import atomic_write
from agentjax.util.records import read_json
from agentjax.util.storage import as_path

SENTENCEPIECE_FILE, HF_FILE, HF_CONFIG_FILE = "tokenizer.model", "tokenizer.json", "tokenizer_config.json"
# Never-emitted tokens that pad when a tokenizer.json defines no pad distinct from EOS, tried in order:
# Llama 3.1's fine-tuning pad, Llama 3's first reserved token, SmolLM2's/GPT-2's end of text, the usual names.
PAD_FALLBACKS = ("<|finetune_right_pad_id|>", "<|reserved_special_token_0|>", "<|endoftext|>", "<pad>", "<unk>")
# EOS of a tokenizer.json without a tokenizer_config.json, tried in order.
EOS_FALLBACKS = ("</s>", "<|end_of_text|>", "<|endoftext|>")


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids. `pad_id` differs from `eos_id`; `encode` adds no BOS/EOS; `bos_id` is None for models
    whose sequences start without one (SmolLM2, Qwen). `chat_template` is the file's own Jinja chat template, if any."""

    vocab_size: int
    bos_id: int | None
    eos_id: int
    pad_id: int
    source: str  # the file it was loaded from, for error messages
    chat_template: str | None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, nothing added."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`; control tokens (BOS, EOS, pad) spell nothing."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes this token appends to the text when it follows other tokens (b'' for control tokens)."""
        ...

    def special_id(self, token: str) -> int | None:
        """The id of the control token spelled `token` (e.g. `<|im_end|>`), None when the vocabulary has none."""
        ...

    def piece(self, token_id: int) -> str:
        """The raw vocabulary entry of a token (for debugging views such as `data inspect`)."""
        ...

    def describe(self) -> str:
        """One line naming the BOS, EOS and pad tokens and where pad came from."""
        ...


class SentencePieceTokenizer:
    """A sentencepiece model (a Llama-2 `tokenizer.model` works as is), with its dummy prefix space turned off.

    Llama-2 has no pad token: the pad id is then the unknown token's id (0), which byte fallback
    never emits for real text, so it stays distinct from EOS and from every real token.
    """

    def __init__(self, model: str | Path | bytes):
        self.source = "<sentencepiece bytes>" if isinstance(model, bytes) else str(model)
        self.chat_template = None
        proto = sentencepiece_model_pb2.ModelProto()
        try:
            proto.ParseFromString(model if isinstance(model, bytes) else as_path(model).read_bytes())
        except Exception as e:  # protobuf's DecodeError says nothing of the file
            raise ValueError(f"{self.source}: not a sentencepiece model ({type(e).__name__}: {e})") from None
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

    def special_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)
        return i if self._sp.id_to_piece(i) == token and self._sp.is_control(i) else None

    def piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(token_id)

    def describe(self) -> str:
        pad = "unknown token (never emitted with byte fallback)" if self.pad_id == self._sp.unk_id() else "the model's own"
        return (f"sentencepiece {self.source}: bos {self.piece(self.bos_id)} ({self.bos_id}), "
                f"eos {self.piece(self.eos_id)} ({self.eos_id}), pad {self.piece(self.pad_id)} ({self.pad_id}): {pad}")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level spelling, inverted (character -> byte): printable Latin-1 bytes stand for themselves, the
    other 68 bytes for the code points 256, 257, ... in byte order."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}


def _types(component: dict | None) -> set[str]:
    """Every `type` inside a tokenizer.json component (a normalizer, pre-tokenizer or decoder, maybe a Sequence)."""
    if not isinstance(component, dict):
        return set()
    found = {component.get("type", "")}
    for key in ("normalizers", "pretokenizers", "decoders", "processors"):
        for part in component.get(key) or ():
            found |= _types(part)
    return found


def _without_prefix_space(component: dict | None) -> dict | None:
    """The component with its dummy prefix space switched off (Prepend normalizers dropped, Metaspace and ByteLevel
    told not to add one): segment-wise encoding must concatenate exactly."""
    if not isinstance(component, dict):
        return component
    kind = component.get("type")
    if kind == "Prepend":
        return None
    component = dict(component)
    if kind == "Metaspace":
        component.update(prepend_scheme="never", add_prefix_space=False)
    if kind == "ByteLevel":
        component["add_prefix_space"] = False
    for key in ("normalizers", "pretokenizers"):
        if key in component:
            component[key] = [c for c in map(_without_prefix_space, component[key]) if c is not None]
    return component


def _token_name(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict with `content`."""
    return value.get("content") if isinstance(value, dict) else value


class HFTokenizer:
    """A Hugging Face `tokenizer.json`, with the `tokenizer_config.json` beside it when there is one.

    The config names BOS/EOS/pad, `add_bos_token` and the chat template. BOS is added only when the config
    says so or the file's post-processor prepends one (Llama 3's `<|begin_of_text|>`); SmolLM2 and Qwen have
    none. Where the file's pad is missing or equals EOS (SmolLM2's `<|im_end|>`), pad is the first of
    PAD_FALLBACKS the vocabulary holds: special tokens a trained model never emits (SmolLM2: `<|endoftext|>`
    = 0; Llama 3: a reserved special token). Unlike transformers, `encode` reads special-token text in its
    input as plain text, so data cannot forge a turn boundary and `decode(encode(s)) == s` always; templates
    insert control tokens by id (`special_id`).
    """

    def __init__(self, path: str | Path):
        path = as_path(path)
        self.source = str(path)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            spec["normalizer"] = _without_prefix_space(spec.get("normalizer"))
            spec["pre_tokenizer"] = _without_prefix_space(spec.get("pre_tokenizer"))
            self._tk = tokenizers.Tokenizer.from_str(json.dumps(spec))
            self._tk.encode_special_tokens = True  # marker text in data is text: only templates insert control tokens
        except Exception as e:  # tokenizers raises bare Exceptions; JSON and shape errors land here too
            raise ValueError(f"{path}: not a Hugging Face tokenizer.json ({type(e).__name__}: {e})") from None
        config_path = path.parent / HF_CONFIG_FILE
        config = read_json(config_path) if config_path.is_file() else {}
        self._config_source = str(config_path) if config else f"{path} (no {HF_CONFIG_FILE} beside it)"
        self._specials = {t.content: i for i, t in self._tk.get_added_tokens_decoder().items() if t.special}
        vocab = self._tk.get_vocab(with_added_tokens=True)
        self.vocab_size: int = max(vocab.values()) + 1
        self._bytes = self._all_token_bytes(spec, vocab)
        self.eos_id: int = self._eos(config)
        self.bos_id: int | None = self._bos(config)
        self.pad_id, self._pad_note = self._pad(config)
        template = config.get("chat_template")
        if isinstance(template, list):  # several named templates: the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        self.chat_template: str | None = template

    def _all_token_bytes(self, spec: dict, vocab: dict[str, int]) -> list[bytes]:
        """Each token's exact bytes: byte-level BPE via GPT-2's byte map; Metaspace files via `▁` and `<0xNN>`."""
        kinds = _types(spec.get("pre_tokenizer")) | _types(spec.get("decoder"))
        byte_level = "ByteLevel" in kinds
        if not byte_level and not kinds & {"Metaspace", "Replace", "ByteFallback"}:
            raise ValueError(f"{self.source}: unsupported tokenizer.json (pre-tokenizer/decoder types {sorted(kinds - {''})}); "
                             "agentjax reads byte-level BPE and Metaspace/byte-fallback files")
        alphabet = _byte_level_alphabet()
        added = {i: t for i, t in self._tk.get_added_tokens_decoder().items()}
        unk = (spec.get("model") or {}).get("unk_token")
        table = [b""] * self.vocab_size
        for token, i in vocab.items():
            if i in added:
                table[i] = b"" if added[i].special else added[i].content.encode("utf-8")
            elif token == unk:
                table[i] = b""
            elif byte_level:
                try:
                    table[i] = bytes(alphabet[c] for c in token)
                except KeyError as e:
                    raise ValueError(f"{self.source}: token {i} {token!r} has {e.args[0]!r}, not a byte-level character") from None
            elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                table[i] = bytes([int(token[3:5], 16)])
            else:
                table[i] = token.replace("\u2581", " ").encode("utf-8")
        return table

    def _named(self, config: dict, key: str) -> int | None:
        """The id of the token `key` (bos_token, eos_token, pad_token) in tokenizer_config.json names, if it names one."""
        name = _token_name(config.get(key))
        if name is None:
            return None
        i = self._tk.token_to_id(name)
        if i is None:
            raise ValueError(f"{self._config_source}: {key} {name!r} is not in {self.source}")
        return i

    def _eos(self, config: dict) -> int:
        eos = self._named(config, "eos_token")
        if eos is None:
            eos = next((self._specials[t] for t in EOS_FALLBACKS if t in self._specials), None)
        if eos is None:
            raise ValueError(f"{self._config_source}: no eos_token, and {self.source} has none of {list(EOS_FALLBACKS)}")
        return eos

    def _bos(self, config: dict) -> int | None:
        if "add_bos_token" in config:
            if not config["add_bos_token"]:
                return None
            bos = self._named(config, "bos_token")
            if bos is None:
                raise ValueError(f"{self._config_source}: add_bos_token is true but no bos_token is named")
            return bos
        plain, full = self._tk.encode("a", add_special_tokens=False).ids, self._tk.encode("a").ids
        prepended = any(full[k:k + len(plain)] == plain for k in range(1, len(full) - len(plain) + 1))
        return full[0] if prepended else None  # the post-processor puts a token before the text (maybe also after)

    def _pad(self, config: dict) -> tuple[int, str]:
        pad = self._named(config, "pad_token")
        if pad is not None and pad != self.eos_id:
            return pad, "the tokenizer's own"
        taken = {self.eos_id, self.bos_id}
        for name in PAD_FALLBACKS:
            if self._specials.get(name, self.eos_id) not in taken:
                why = "it defines none" if pad is None else "its pad is its eos"
                return self._specials[name], f"fallback {name}, never emitted ({why})"
        raise ValueError(f"{self._config_source}: no pad_token distinct from eos, and {self.source} has none of "
                         f"{list(PAD_FALLBACKS)}; name a never-emitted special token as pad_token")

    def encode(self, text: str) -> list[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self._bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def special_id(self, token: str) -> int | None:
        return self._specials.get(token)

    def piece(self, token_id: int) -> str:
        return self._tk.id_to_token(token_id) or ""

    def describe(self) -> str:
        bos = "none" if self.bos_id is None else f"{self.piece(self.bos_id)} ({self.bos_id})"
        return (f"tokenizer.json {self.source}: bos {bos}, eos {self.piece(self.eos_id)} ({self.eos_id}), "
                f"pad {self.piece(self.pad_id)} ({self.pad_id}): {self._pad_note}")


def find_tokenizer(path: str | Path) -> Path | None:
    """The tokenizer file at `path`: the file itself, or in a directory its tokenizer.json (else tokenizer.model)."""
    path = as_path(path)
    if path.is_dir():
        return next((path / n for n in (HF_FILE, SENTENCEPIECE_FILE) if (path / n).is_file()), None)
    return path if path.is_file() else None


def _is_json(file: Path) -> bool:
    with file.open("rb") as f:
        return f.read(64).lstrip()[:1] == b"{"


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a sentencepiece `.model`, a `tokenizer.json`, or a directory holding either (told apart by content)."""
    files = tokenizer_files(path)
    return HFTokenizer(files[HF_FILE]) if HF_FILE in files else SentencePieceTokenizer(files[SENTENCEPIECE_FILE])


def tokenizer_files(path: str | Path) -> dict[str, Path]:
    """The files that make up the tokenizer at `path`, by their standard names: a tokenizer.json (with the
    tokenizer_config.json beside it, listed first) or a sentencepiece model."""
    file = find_tokenizer(path)
    if file is None:
        raise FileNotFoundError(f"{path}: no tokenizer (expected a {HF_FILE}, a sentencepiece .model, "
                                "or a directory holding one)")
    if not _is_json(file):
        return {SENTENCEPIECE_FILE: file}
    config = file.parent / HF_CONFIG_FILE
    return ({HF_CONFIG_FILE: config} if config.is_file() else {}) | {HF_FILE: file}


def copy_tokenizer(path: str | Path, directory: str | Path) -> None:
    """Copy the tokenizer at `path` into `directory` under its standard names, each file atomically; a
    tokenizer.json's tokenizer_config.json comes first, so a found tokenizer file means a complete copy."""
    for name, source in tokenizer_files(path).items():
        with atomic_write(as_path(directory) / name, "wb") as f:
            f.write(source.read_bytes())


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
    return SentencePieceTokenizer(out_path)
