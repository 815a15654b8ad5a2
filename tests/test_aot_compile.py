"""`agentjax compile`: a recipe's train step and eval decoder compiled for a TPU slice on this CPU machine (libtpu),
from shapes only: no weights, no data files, no TPU."""

import json
from pathlib import Path

import pytest

from agentjax.aot import topology
from agentjax.aot.compile import model_config, preset_named_in
from agentjax.cli import main
from agentjax.configlib import ConfigError
from agentjax.model.llama import LlamaConfig, preset
from agentjax.model.lora import LoRAConfig
from agentjax.train.config import ModelSection

ROOT = Path(__file__).resolve().parents[1]
# The FireAct 7B LoRA recipe (its v4-8 mesh: fsdp 4) shrunk to a small model whose every per-device shard is
# a whole number of the TPU's (8, 128) memory tiles, so the compiler's byte counts are exact; its data files and
# checkpoint do not exist here, which is the point.
SMALL = dict(dim=512, n_heads=8, n_kv_heads=8, head_dim=128, mlp_dim=512)
OVERRIDES = ["model.checkpoint=null", "model.preset=tiny", *(f"model.overrides.{k}={v}" for k, v in SMALL.items()),
             "tokenizer.path=null", "tokenizer.train_vocab_size=512", "lora.rank=128", "data.seq_len=256",
             "train.global_batch=32", "train.micro_batches=4",
             "eval.generation.max_len=256", "eval.generation.batch_size=4", "eval.generation.buckets=[16]"]


def _state_bytes_per_device(cfg: LlamaConfig, lora: LoRAConfig, fsdp: int) -> int:
    """Bytes a device holds of the LoRA train state: the frozen base (its `embed` dims split fsdp ways) plus
    float32 adapters and their two Adam moments (their `embed` dims split too, rank dims whole)."""
    d, h, k, hd, layers = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.n_layers
    base = 4 * (cfg.vocab_size * d * 2 + layers * (d * hd * (2 * h + 2 * k) + 3 * d * cfg.mlp_dim)) // fsdp
    norms = 4 * (layers * 2 * d + d)  # "norm" axes are replicated
    q_adapter = layers * (d * lora.rank // fsdp + lora.rank * h * hd)
    v_adapter = layers * (d * lora.rank // fsdp + lora.rank * k * hd)
    return base + norms + 3 * 4 * (q_adapter + v_adapter)


@pytest.mark.slow
def test_a_tiny_lora_recipe_compiles_for_a_v5e_slice_and_its_state_is_sharded(tmp_path, monkeypatch, capsys):
    """`agentjax compile` on v5e-4 compiles the train step and every decoder program; the train step's arguments
    are exactly the per-device shards of the state (so the mesh really shards it four ways), and every program's
    peak is reported against the 15.75 GiB a v5e device may use."""
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # libtpu refuses a second process otherwise
    out = tmp_path / "report.json"
    code = main(["compile", "--config", str(ROOT / "configs/fireact/llama2-7b-lora-hotpotqa.yaml"), "--topology",
                 "v5e-4", "--eval", str(ROOT / "configs/fireact/eval-hotpotqa-recorded.yaml"), "--json", str(out),
                 *OVERRIDES])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["meshes"] == {"train": {"data": 1, "fsdp": 4, "tensor": 1}, "eval": {"data": 1, "fsdp": 4, "tensor": 1}}
    assert report["usable_bytes"] == int(15.75 * 2**30) and report["fits"]
    programs = {p["name"]: p for p in report["programs"]}
    assert list(programs) == ["train step", "extend 16", "extend 1 rows 16", "copy 1 rows", "copy 4 rows", "decode loop"]
    train = programs["train step"]
    batch = 5 * 4 * 32 * 256 // 4  # five int32/float32 fields of 32 x 256, a quarter a device
    expected = _state_bytes_per_device(preset("tiny", vocab_size=512, **SMALL), LoRAConfig(rank=128, targets=("q", "v")), 4)
    assert train["argument_bytes"] - batch == pytest.approx(expected, rel=0.01)  # + a few padded scalars
    assert all(0 < p["peak_bytes"] < 2**30 and p["fits"] for p in programs.values())
    assert "train step" in printed and "v5e-4" in printed and "fits" in printed


def test_an_evaluation_on_a_multi_host_slice_compiles_for_one_hosts_own_topology(monkeypatch):
    """Each host evaluates alone, so its programs are compiled for one host: on v5e-16 (4 hosts of 2 x 2 chips) the
    devices of a v5e:2x2 topology, ids 0-3 of one process; the first host's ids within the slice (0, 1, 4, 5) make
    libtpu abort ("unexpected device_id 5"). A single-host slice keeps its own devices."""
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    pod = topology.get_slice("v5e-16")
    devices = topology.slice_devices(pod)
    assert sorted(d.id for d in devices if d.process_index == 0) == [0, 1, 4, 5]
    host = topology.host_devices(pod, devices)
    assert sorted(d.id for d in host) == [0, 1, 2, 3] and {d.process_index for d in host} == {0}
    single = topology.slice_devices(topology.get_slice("v5e-4"))
    assert topology.host_devices(topology.get_slice("v5e-4"), single) == single


def test_without_libtpu_the_command_says_how_to_install_it(monkeypatch):
    """No libtpu: a config error naming the pip command, not a traceback from deep inside JAX."""
    monkeypatch.setattr(topology, "libtpu_installed", lambda: False)
    with pytest.raises(ConfigError, match=r'pip install "jax\[tpu\]'):
        topology.slice_devices(topology.get_slice("v5e-1"))


def test_model_shapes_come_from_config_json_or_the_preset_the_checkpoint_is_named_after(tmp_path):
    """A named checkpoint that is absent: the preset in its folder name, said as an assumption, with the section's
    attention backend and overrides; present: its config.json; no matching preset: an error asking for --preset."""
    notes = []
    cfg = model_config(ModelSection(checkpoint=str(tmp_path / "llama2-13b-chat"), overrides={"dtype": "bfloat16"},
                                    attention="splash"), None, None, notes)
    assert cfg == preset("llama2-13b", dtype="bfloat16", attention="splash") and "preset llama2-13b" in notes[0]
    assert preset_named_in("models/llama3.1-8b-instruct") == "llama3.1-8b"  # the longest name that fits
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text(json.dumps({"format": "agentjax-llama-v1", "preset": "small"}))
    assert model_config(ModelSection(checkpoint=str(tmp_path / "mine")), None, None, []) == preset("small")
    with pytest.raises(ConfigError, match="--preset"):
        model_config(ModelSection(checkpoint=str(tmp_path / "other")), None, None, [])
