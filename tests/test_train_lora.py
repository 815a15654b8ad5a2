"""LoRA training: only the adapters train and are checkpointed, they merge exactly into the kernels, and a run
directory exports to Hugging Face safetensors (LoRA merged) that PyTorch reads back with the same logits, and
as PEFT adapters that peft puts on the base; a moved run still loads."""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest
import yaml
from flax import nnx
from train_support import base_config, flat_params, run_config, toy_files, write_config

from agentjax import sharding
from agentjax.cli import main as cli
from agentjax.configlib import ConfigError
from agentjax.data.tokenizer import load_tokenizer
from agentjax.model import Llama, preset, save_checkpoint
from agentjax.model.lora import merge_lora
from agentjax.sharding import MeshConfig
from agentjax.train.checkpoint import Checkpoints
from agentjax.train.run_dir import load_trained_model
from agentjax.train.trainer import Trainer

LORA = ["lora.rank=4", "lora.alpha=8", "lora.dropout=0.1", "lora.targets=[q, k, v, o, gate, up, down]"]


def lora_run(folder, *overrides):
    """(trainer, initial frozen weights, initial adapters) after 6 LoRA steps, checkpoints every 3."""
    data, tokenizer = toy_files()
    config = write_config(folder / "run.yaml", base_config(data, tokenizer, folder / "out"))
    trainer = Trainer(run_config(config, *LORA, "train.steps=6", "train.checkpoint_every=3", *overrides))
    frozen, adapters = flat_params(trainer.frozen), flat_params(trainer.state.params)
    trainer.run()
    return trainer, frozen, adapters


@pytest.fixture(scope="module")
def random_base(tmp_path_factory):
    """LoRA on a randomly initialised tiny model."""
    return lora_run(tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def converted_base(tmp_path_factory):
    """LoRA on an agentjax model directory whose weights differ from the run's own random init (scaled by 1.5)."""
    folder = tmp_path_factory.mktemp("lora_ckpt")
    vocab = load_tokenizer(toy_files()[1]).vocab_size
    base = sharding.create_sharded(lambda: Llama(preset("tiny", vocab_size=vocab), rngs=nnx.Rngs(params=0)),
                                   sharding.make_mesh())
    nnx.update(base, jax.tree.map(lambda x: 1.5 * x, nnx.state(base, nnx.Param)))
    save_checkpoint(base, folder / "base")
    return lora_run(folder, "model.preset=null", f"model.checkpoint={folder / 'base'}") + (folder,)


def logits(model, tokens) -> np.ndarray:
    return np.asarray(nnx.jit(lambda m, t: m(t))(model, tokens))


TOKENS = np.random.RandomState(0).randint(1, 400, (2, 24)).astype(np.int32)


def test_only_adapters_train(random_base):
    """Trainable state = adapters only: frozen base weights are bit-identical after 6 steps, every adapter
    changed (B starts at zero), and the optimizer holds one Adam mu/nu per adapter and nothing else."""
    trainer, frozen_before, adapters_before = random_base
    adapters_after = flat_params(trainer.state.params)
    assert adapters_after and all(name.endswith(("lora_a", "lora_b")) for name in adapters_after)
    assert len(adapters_after) == 2 * 7
    for name, before in adapters_before.items():
        assert np.abs(adapters_after[name] - before).max() > 1e-4, name
    frozen_after = flat_params(trainer.frozen)
    assert frozen_after.keys() == frozen_before.keys() and not any("lora" in k for k in frozen_after)
    for name, before in frozen_before.items():
        np.testing.assert_array_equal(frozen_after[name], before, err_msg=name)
    moments = [x for x in jax.tree.leaves(trainer.state.opt_state) if x.ndim > 0]
    adapter_sizes = sorted(v.size for v in adapters_after.values())
    assert sorted(m.size for m in moments) == sorted(adapter_sizes * 2)


def test_merged_model_gives_the_adapter_model_logits(random_base):
    """Folding scale * A @ B into each kernel gives the same logits as running the adapters (float32, 1e-5)."""
    trainer, _, _ = random_base
    with_adapters = trainer.model()
    expected = logits(with_adapters, TOKENS)
    merged = merge_lora(trainer.model())
    assert not any("lora" in name for name in flat_params(nnx.to_pure_dict(nnx.state(merged))))
    base_only = logits(nnx.merge(trainer.graphdef, jax.tree.map(np.zeros_like, trainer.state.params), trainer.frozen), TOKENS)
    assert np.abs(expected - base_only).max() > 1e-3  # the adapters matter
    np.testing.assert_allclose(logits(merged, TOKENS), expected, atol=1e-5)


def test_checkpoints_hold_only_the_adapters(random_base):
    """Every checkpoint's parameters are the 14 adapter arrays: with their Adam moments, a checkpoint is smaller
    than the frozen base alone (a full one would be three times its size)."""
    trainer, _, _ = random_base
    checkpoints = Checkpoints(trainer.run_dir, read_only=True)
    assert checkpoints.manager.all_steps() == [3, 6]
    for step in (3, 6):
        tree = checkpoints.params_metadata(step)
        leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
        names = [jax.tree_util.keystr(path) for path, _ in leaves]
        assert len(names) == 14 and all("lora_a" in n or "lora_b" in n for n in names), names
    saved_bytes = sum(f.stat().st_size for f in (checkpoints.directory / "6").rglob("*") if f.is_file())
    frozen_bytes = sum(v.nbytes for v in flat_params(trainer.frozen).values())
    assert saved_bytes < frozen_bytes


def test_a_lora_run_loads_back_merged_on_another_mesh(random_base):
    """load_trained_model rebuilds the base from the run's seed on any mesh (here 2x2x2), restores
    the adapters and merges them: the trainer's logits, and plain Dense projections."""
    trainer, _, _ = random_base
    expected = logits(trainer.model(), TOKENS)
    model, _ = load_trained_model(trainer.run_dir, mesh=sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2)))
    assert not any("lora" in name for name in flat_params(nnx.to_pure_dict(nnx.state(model))))
    np.testing.assert_allclose(logits(model, TOKENS), expected, atol=1e-5)


@pytest.fixture(scope="module")
def exported(converted_base):
    """The LoRA run exported with the CLI (`hf`: merged, with `hf/adapter` PEFT adapters) and its base (`base_hf`)."""
    trainer, _, _, folder = converted_base
    assert cli(["convert", "agentjax-to-hf", str(trainer.run_dir), str(folder / "hf")]) == 0
    assert cli(["convert", "agentjax-to-hf", str(folder / "base"), str(folder / "base_hf")]) == 0
    return folder / "hf", folder / "base_hf"


def hf_logits(model, tokens) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


def test_a_run_directory_exports_to_hugging_face(converted_base, exported):
    """`agentjax convert agentjax-to-hf RUN_DIR OUT` writes the merged model (base from model.checkpoint):
    PyTorch's LlamaForCausalLM gives the trainer's logits within 1e-4, and the tokenizer travels along with
    its special ids in config.json and generation_config.json."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    trainer, _, _, folder = converted_base
    hf_dir, _ = exported
    assert (hf_dir / "tokenizer.model").read_bytes() == (trainer.run_dir / "tokenizer.model").read_bytes()
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    assert np.abs(hf_logits(hf, TOKENS) - logits(trainer.model(), TOKENS)).max() < 1e-4
    tokenizer = load_tokenizer(trainer.run_dir)
    assert (hf.config.bos_token_id, hf.config.eos_token_id, hf.config.pad_token_id) == \
        (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (1, 2, 3)
    assert (hf.generation_config.eos_token_id, hf.generation_config.pad_token_id) == (2, 3)


def test_peft_adapters_on_the_base_give_the_merged_logits(exported):
    """The run's adapters, exported unmerged as a PEFT directory, loaded by peft onto the exported base model
    (all 7 projections, o_proj's input being heads x head_dim), give the merged export's logits within 1e-4."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    hf_dir, base_dir = exported
    merged = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    base = transformers.LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    base_logits = hf_logits(base, TOKENS)
    adapted = peft.PeftModel.from_pretrained(base, hf_dir / "adapter").eval()
    assert sorted(adapted.peft_config["default"].target_modules) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    expected = hf_logits(merged, TOKENS)
    assert np.abs(expected - base_logits).max() > 1e-3  # the adapters matter
    assert np.abs(hf_logits(adapted, TOKENS) - expected).max() < 1e-4


def test_a_moved_run_finds_its_base_or_is_told_where_it_is(converted_base, tmp_path):
    """The run records its base relative to itself: moved together with it, the run loads unchanged. Moved alone
    (fetched from a TPU VM), loading says how to name the base, and `base=` / `--base` make it load and export."""
    trainer, _, _, folder = converted_base
    expected = logits(trainer.model(), TOKENS)
    assert yaml.safe_load((trainer.run_dir / "config.yaml").read_text())["model"]["checkpoint"] == "../base"
    shutil.copytree(folder / "out", tmp_path / "moved" / "out")
    shutil.copytree(folder / "base", tmp_path / "moved" / "base")
    np.testing.assert_allclose(logits(load_trained_model(tmp_path / "moved" / "out")[0], TOKENS), expected, atol=1e-5)

    shutil.copytree(folder / "out", tmp_path / "alone")
    with pytest.raises(ConfigError, match="--base"):
        load_trained_model(tmp_path / "alone")
    model, _ = load_trained_model(tmp_path / "alone", base=folder / "base")
    np.testing.assert_allclose(logits(model, TOKENS), expected, atol=1e-5)
    assert cli(["convert", "agentjax-to-hf", str(tmp_path / "alone"), str(tmp_path / "hf"), "--base",
                str(folder / "base")]) == 0
