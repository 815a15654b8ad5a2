"""Export round trip of a real model: SmolLM2 (from its GGUF) fine-tuned with LoRA for a few steps, exported to
Hugging Face, behaves in transformers (tokenizer, chat template, greedy generation) as it does in agentjax."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import pytest
from train_support import base_config, run_config, session_folder, write_config, write_toy_data

from agentjax.agent.decode import Decoder, Sampling
from agentjax.cli import main as cli
from agentjax.data.conversation import Conversation, Turn
from agentjax.data.templates import get_template
from agentjax.train.run_dir import load_trained_model
from agentjax.train.trainer import Trainer

torch = pytest.importorskip("torch", reason="export parity needs the test extra: pip install -e '.[test]'")
transformers = pytest.importorskip("transformers", reason="export parity needs the test extra: pip install -e '.[test]'")
peft = pytest.importorskip("peft", reason="PEFT adapter loading needs the test extra: pip install -e '.[test]'")

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def exported(smollm2_dir):
    """(run dir, merged HF export, HF export of the base): 3 LoRA steps on SmolLM2, batch 2 rows of 64 tokens."""
    folder = Path(session_folder("agentjax-smollm2-export-"))
    data = write_toy_data(folder / "toy.jsonl", 16)
    config = base_config(data, smollm2_dir, folder / "run")
    config["model"] = {"checkpoint": str(smollm2_dir)}
    config["data"]["template"] = "auto"
    config["train"].update(steps=3, global_batch=2, checkpoint_every=3)
    config["train"]["optimizer"]["learning_rate"] = 5e-3
    cfg = run_config(write_config(folder / "run.yaml", config), "lora.rank=4", "lora.alpha=8",
                     "lora.targets=[q, k, v, o, gate, up, down]", "mesh.num_devices=1")
    Trainer(cfg).run()
    assert cli(["convert", "agentjax-to-hf", str(folder / "run"), str(folder / "hf")]) == 0
    assert cli(["convert", "agentjax-to-hf", str(smollm2_dir), str(folder / "base_hf")]) == 0
    return folder / "run", folder / "hf", folder / "base_hf"


def load_quietly(loader, *args, **kwargs):
    """loader(*args, **kwargs) and the transformers warnings it logged."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        return loader(*args, **kwargs), [r.getMessage() for r in records]
    finally:
        logger.removeHandler(handler)


def test_transformers_generates_what_agentjax_decodes(exported):
    """transformers loads the export's model and tokenizer without warnings; apply_chat_template gives agentjax's
    prompt ids, and greedy `generate` (stopping on generation_config's eos) the tokens agentjax's decoder makes."""
    run_dir, hf_dir, _ = exported
    tokenizer, warnings = load_quietly(transformers.AutoTokenizer.from_pretrained, hf_dir)
    assert warnings == []
    hf, warnings = load_quietly(transformers.AutoModelForCausalLM.from_pretrained, hf_dir, dtype=torch.float32)
    assert warnings == []
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    prompt = list(prompt["input_ids"] if isinstance(prompt, dict) else prompt)

    model, ours = load_trained_model(run_dir)
    template = get_template("auto", ours)
    conv = Conversation(tuple(Turn(m["role"], m["content"]) for m in MESSAGES))
    assert template.prompt(conv) == prompt
    assert hf.generation_config.eos_token_id == ours.eos_id == 2 and tokenizer.pad_token_id == ours.pad_id == 0

    decoder = Decoder(model, ours, (), 1, 128, NEW_TOKENS, buckets=(64,), end_ids=template.end_ids)
    cache, logits = decoder.extend(*decoder.new_state(), [prompt], [0])
    out = decoder.decode(cache, logits, np.array([len(prompt)]), np.ones(1, bool), [Sampling()], jax.random.key(0))
    ids = np.asarray(out.tokens)[0, : int(out.count[0])].tolist()
    with torch.no_grad():
        generated = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                do_sample=False, max_new_tokens=NEW_TOKENS)[0, len(prompt):].tolist()
    assert len(ids) > 4 and generated == ids, (tokenizer.decode(generated), tokenizer.decode(ids))


def test_peft_adapters_on_the_base_give_the_merged_model(exported):
    """The run's PEFT adapters, loaded by peft onto the exported base SmolLM2, give the merged export's logits
    within 1e-4 (and differ from the base's: the adapters trained)."""
    _, hf_dir, base_dir = exported
    tokens = torch.tensor(np.random.RandomState(0).randint(17, 49152, (1, 48)))
    merged = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(tokens).logits.numpy()
        adapted = peft.PeftModel.from_pretrained(base, hf_dir / "adapter").eval()
        got, expected = adapted(tokens).logits.numpy(), merged(tokens).logits.numpy()
    assert np.abs(expected - base_logits).max() > 1e-3
    assert np.abs(got - expected).max() <= 1e-4
