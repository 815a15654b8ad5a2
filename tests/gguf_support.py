"""Helpers for the GGUF tests (not a test module): a tiny Llama written as a GGUF file the way llama.cpp does.

The weights are a random transformers LlamaForCausalLM; q/k rows are permuted as llama.cpp's converter
permutes them, and each weight is stored in one of the quantization types agentjax must read. The
vocabulary is a byte-level BPE trained here with the `tokenizers` library (vocab + merges + 3 control
tokens), so the tokenizer rebuilt from the GGUF can be checked against the one that made it.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

DIM, HEADS, KV_HEADS, HEAD_DIM, MLP, LAYERS, VOCAB = 256, 4, 2, 64, 512, 2, 320  # K-quants need rows of 256
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# the weight types of the issue, rotated over the 7 projections of each layer so q and k meet several of them
WEIGHT_TYPES = [Q.Q4_K, Q.Q6_K, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.BF16, Q.F16, Q.F32]
PROJECTIONS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}
TRAINING_TEXT = ["Thought: I should search for the capital of France.\nAction: search[capital of France]",
                 "Observation: Paris is the capital and largest city of France.", "the quick brown fox 12 345",
                 "Answer: finish[Paris] and then the river Seine runs through the city of lights."] * 20


def byte_level_bpe() -> Tokenizer:
    """A 320-token GPT-2-style byte-level BPE (control tokens 0-2) trained on a few agent-like lines."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def llama_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (HF half-split pairs -> interleaved), as its converter writes it."""
    out, d_in = w.shape
    return w.reshape(n_heads, 2, out // n_heads // 2, d_in).swapaxes(1, 2).reshape(out, d_in)


def encode(w: np.ndarray, kind: Q, rng: np.random.RandomState) -> np.ndarray:
    """`w` stored as `kind`: quantized by the gguf package, or (types it cannot quantize, K-quants among them)
    random blocks, with scales for Q4_K/Q6_K that keep |w| < 0.05 like the rest, whatever values they dequantize to."""
    try:
        return gguf.quants.quantize(w, kind)
    except NotImplementedError:
        pass
    block, size = gguf.GGML_QUANT_SIZES[kind]
    blocks = rng.randint(0, 256, (w.shape[0], w.shape[1] // block, size)).astype(np.uint8)
    f16 = lambda x: np.frombuffer(np.float16(x).tobytes(), np.uint8)  # noqa: E731
    if kind == Q.Q4_K:  # d, dmin first; |w| <= 63 * 15 * d
        blocks[..., 0:2], blocks[..., 2:4] = f16(5e-5), f16(5e-5)
    elif kind == Q.Q6_K:  # d last; |w| <= 128 * 32 * d
        blocks[..., -2:] = f16(1e-5)
    return blocks.reshape(w.shape[0], -1)


def write_tiny_gguf(path: Path, *, arch: str = "llama", drop: tuple[str, ...] = (),
                    override_types: dict[str, Q] | None = None, tokenizer_model: str = "gpt2", seed: int = 0):
    """A 2-layer GQA Llama (untied head) in GGUF; `drop` leaves tensors out, `override_types` stores some as given.
    Returns the transformers model whose weights it holds (before quantization)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=DIM, intermediate_size=MLP, num_hidden_layers=LAYERS,
                                   num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                                   rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=512,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms start at 1: randomise them so a swapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf = {k: v.numpy() for k, v in model.state_dict().items()}
    tensors = {"token_embd.weight": (hf["model.embed_tokens.weight"], Q.Q8_0),
               "output.weight": (hf["lm_head.weight"], Q.F16),
               "output_norm.weight": (hf["model.norm.weight"], Q.F32)}
    for i in range(LAYERS):
        tensors[f"blk.{i}.attn_norm.weight"] = (hf[f"model.layers.{i}.input_layernorm.weight"], Q.F32)
        tensors[f"blk.{i}.ffn_norm.weight"] = (hf[f"model.layers.{i}.post_attention_layernorm.weight"], Q.F32)
        for j, (short, long) in enumerate(PROJECTIONS.items()):
            w = hf[f"model.layers.{i}.{long}.weight"]
            w = llama_permute(w, HEADS) if short == "attn_q" else llama_permute(w, KV_HEADS) if short == "attn_k" else w
            tensors[f"blk.{i}.{short}.weight"] = (w, WEIGHT_TYPES[(i * 3 + j) % len(WEIGHT_TYPES)])
    for name, kind in (override_types or {}).items():
        tensors[name] = (tensors[name][0], kind)

    tok = json.loads(byte_level_bpe().to_str())
    vocab = sorted(tok["model"]["vocab"], key=tok["model"]["vocab"].get)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(512)
    writer.add_embedding_length(DIM)
    writer.add_feed_forward_length(MLP)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(VOCAB)
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, (w, kind) in tensors.items():
        if name not in drop:
            writer.add_tensor(name, encode(np.asarray(w, np.float32), kind, rng), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model
