"""A complete Hugging Face directory from an agentjax model directory or training run.

Beside the weights (LoRA merged) it writes what serving stacks need to stop where the model stops: the
tokenizer files, `tokenizer_config.json` (chat template, bos/eos/pad), `generation_config.json` (every
end-of-turn id as eos) and config.json's real special ids. A LoRA run's adapters also go out unmerged, as a
PEFT adapter directory (`adapter/`: `adapter_config.json` + `adapter_model.safetensors`) that peft loads
onto the base model exported the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from agentjax.data.templates import AUTO, Template, get_template
from agentjax.data.tokenizer import HF_CONFIG_FILE, HF_FILE, SENTENCEPIECE_FILE, Tokenizer, find_tokenizer, load_tokenizer
from agentjax.model.checkpoint import load_checkpoint
from agentjax.model.convert import TENSORS, agentjax_to_hf
from agentjax.model.llama import Llama
from agentjax.model.lora import TARGETS, LoRAConfig, merge_lora
from agentjax.model.safetensors_io import write_safetensors
from agentjax.train.run_dir import is_run_dir, load_run
from agentjax.util.atomic import check_new_output
from agentjax.util.records import read_json
from agentjax.util.storage import as_path

ADAPTER_DIR = "adapter"
GENERATION_CONFIG = "generation_config.json"
log = logging.getLogger(__name__)


def export_hf(src: str | Path, hf_dir: str | Path, dtype: str | None = None, base: str | Path | None = None) -> str:
    """Export a model directory or training run (`base`: the run's base model, if it moved); returns what was written."""
    check_new_output(hf_dir)  # before loading a model that could not be written anyway
    adapter = None
    if is_run_dir(src):
        model, tokenizer, cfg = load_run(src, base=base)
        template = get_template(cfg.data.template, tokenizer, **cfg.data.template_options)
        if cfg.lora is not None:
            adapter = peft_adapter(model, cfg.lora)  # before merging, which drops the adapters
        merge_lora(model)
    else:
        model = load_checkpoint(src)
        tokenizer = load_tokenizer(src) if find_tokenizer(src) else None
        template = own_template(tokenizer)
    files = tokenizer_files(tokenizer, template) if tokenizer else {}

    def write_extra(tmp: Path) -> None:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if adapter is not None:
            (tmp / ADAPTER_DIR).mkdir()
            adapter(tmp / ADAPTER_DIR)

    ids = special_ids(tokenizer, template) if tokenizer else {}
    agentjax_to_hf(model, hf_dir, dtype, config_fields=ids, write_extra=write_extra)
    parts = ["safetensors", *files] + ([f"{ADAPTER_DIR}/ (PEFT LoRA adapters)"] if adapter else [])
    return ", ".join(parts)


def own_template(tokenizer: Tokenizer | None) -> Template | None:
    """The agentjax template of a tokenizer's own chat template, when agentjax renders that family."""
    if tokenizer is None or not tokenizer.chat_template:
        return None
    try:
        return get_template(AUTO, tokenizer)
    except ValueError as e:  # a chat template of another family: its end-of-turn token is unknown
        log.warning("generation_config.json lists only the tokenizer's eos as a stop: %s", e)
        return None


def special_ids(tokenizer: Tokenizer, template: Template | None) -> dict:
    """bos/eos/pad ids for config.json and generation_config.json; eos lists every id a reply may end on."""
    ends = list(template.end_ids) if template is not None else [tokenizer.eos_id]
    return dict(bos_token_id=tokenizer.bos_id, eos_token_id=ends[0] if len(ends) == 1 else ends,
                pad_token_id=tokenizer.pad_id)


def tokenizer_files(tokenizer: Tokenizer, template: Template | None) -> dict[str, bytes]:
    """{file name: bytes}: the tokenizer file as is, its tokenizer_config.json with agentjax's special tokens and
    the chat template, and generation_config.json."""
    source = as_path(tokenizer.source)
    hf = source.name == HF_FILE  # run and model directories hold their tokenizer under the standard names
    config_path = source.parent / HF_CONFIG_FILE
    config = read_json(config_path) if hf and config_path.is_file() else {}
    config.update(eos_token=tokenizer.piece(tokenizer.eos_id), pad_token=tokenizer.piece(tokenizer.pad_id),
                  add_bos_token=tokenizer.bos_id is not None, add_eos_token=False)
    if tokenizer.bos_id is not None:  # else the file's own bos_token stays, named but never added (SmolLM2)
        config["bos_token"] = tokenizer.piece(tokenizer.bos_id)
    if hf:
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    if tokenizer.chat_template:
        config["chat_template"] = tokenizer.chat_template
    generation = special_ids(tokenizer, template)
    return {HF_FILE if hf else SENTENCEPIECE_FILE: source.read_bytes(),
            HF_CONFIG_FILE: (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode(),
            GENERATION_CONFIG: (json.dumps(generation, indent=2) + "\n").encode()}


def peft_adapter(model: Llama, lora: LoRAConfig):
    """A writer of the model's LoRA adapters as a PEFT directory. PEFT's lora_A.weight is agentjax's A
    [*in, r] flattened and transposed, lora_B.weight is B [r, *out] flattened and transposed; both scale by
    alpha / r, so base + B_hf @ A_hf * scale is exactly the merged kernel."""
    tensors, modules = [], []
    for target in lora.targets:
        parent, proj = TARGETS[target]
        dense = getattr(getattr(model.layers, parent), proj)
        a, b = np.asarray(dense.lora_a[...], np.float32), np.asarray(dense.lora_b[...], np.float32)
        module = next(m.hf_name for m in TENSORS if m.path[1:3] == (parent, proj)).removesuffix(".weight")
        modules.append(module.rsplit(".", 1)[-1])
        for i in range(a.shape[0]):
            name = "base_model.model." + module.format(i=i)
            a_hf, b_hf = a[i].reshape(-1, lora.rank).T, b[i].reshape(lora.rank, -1).T
            tensors += [(f"{name}.lora_A.weight", a_hf.shape, np.float32, lambda x=a_hf: x),
                        (f"{name}.lora_B.weight", b_hf.shape, np.float32, lambda x=b_hf: x)]
    config = dict(peft_type="LORA", task_type="CAUSAL_LM", r=lora.rank, lora_alpha=lora.alpha,
                  lora_dropout=lora.dropout, target_modules=modules, bias="none", fan_in_fan_out=False,
                  inference_mode=True, use_rslora=False, base_model_name_or_path=None)

    def write(directory: Path) -> None:
        write_safetensors(directory / "adapter_model.safetensors", tensors, metadata={"format": "pt"})
        (directory / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")

    return write
