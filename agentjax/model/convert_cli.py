"""`agentjax convert hf-to-agentjax HF_DIR OUT_DIR` and `agentjax convert agentjax-to-hf CKPT_DIR HF_DIR`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("direction", choices=["hf-to-agentjax", "agentjax-to-hf"])
    parser.add_argument("src", help="source directory")
    parser.add_argument("dst", help="output directory (must not exist; written atomically)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="parameter dtype of the output (default: the source's)")


def run(args) -> int:
    from agentjax.model import convert

    if args.direction == "hf-to-agentjax":
        cfg = convert.hf_to_agentjax(args.src, args.dst, dtype=args.dtype)
        print(f"wrote {args.dst}: {cfg.n_params / 1e6:.1f}M parameters, {cfg.n_layers} layers, {cfg.param_dtype}")
    else:
        convert.agentjax_to_hf(args.src, args.dst, dtype=args.dtype)
        print(f"wrote {args.dst} (Hugging Face LlamaForCausalLM, safetensors)")
    return 0
