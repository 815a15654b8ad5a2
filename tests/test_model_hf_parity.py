"""Contract 1: converted Hugging Face Llama checkpoints give the same logits, and convert back unchanged."""

import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="HF parity needs the test extra: pip install -e '.[test]'")
transformers = pytest.importorskip("transformers", reason="HF parity needs the test extra: pip install -e '.[test]'")
from safetensors.numpy import load_file, save_file  # noqa: E402

from agentjax.cli import main as cli  # noqa: E402
from agentjax.util.errors import DataError  # noqa: E402
from agentjax.model import convert, gguf_import, load_checkpoint  # noqa: E402
from agentjax.model.convert import config_from_hf  # noqa: E402
from agentjax.train import export  # noqa: E402

VOCAB = 320

HF_CONFIGS = {
    # grouped-query attention: 4 query heads share 2 kv heads; untied head; sharded safetensors
    "gqa": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=False),
    # Llama 3.1 RoPE frequency scaling over long positions; tied embeddings; head_dim != hidden/heads
    "llama31": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=1, head_dim=32, rope_theta=500000.0, tie_word_embeddings=True,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=64)),
}


@pytest.fixture(scope="module", params=sorted(HF_CONFIGS))
def converted(request, tmp_path_factory):
    """A random float32 HF model saved as safetensors and converted with the CLI."""
    torch.manual_seed(0)
    kwargs = HF_CONFIGS[request.param]
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, rms_norm_eps=1e-5, **kwargs)
    hf = transformers.LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():  # norms start at 1: randomise them so a swapped norm would show
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    root = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(root / "hf", safe_serialization=True, max_shard_size="100KB")
    assert cli(["convert", "hf-to-agentjax", str(root / "hf"), str(root / "ajx")]) == 0
    return request.param, hf, root


def test_logits_match_pytorch(converted):
    """Logits of the converted model are within 1e-4 (max abs) of PyTorch's on random tokens, long positions included."""
    name, hf, root = converted
    tokens = np.random.RandomState(1).randint(0, VOCAB, (2, 300))
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    model = load_checkpoint(root / "ajx")
    got = np.asarray(model(tokens))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4, name


def test_round_trip_gives_original_tensors(converted):
    """agentjax-to-hf writes every original tensor back, bit for bit, under its original name."""
    name, _, root = converted
    assert cli(["convert", "agentjax-to-hf", str(root / "ajx"), str(root / "back")]) == 0
    original, back = {}, {}
    for f in (root / "hf").glob("*.safetensors"):
        original.update(load_file(f))
    for f in (root / "back").glob("*.safetensors"):
        back.update(load_file(f))
    assert sorted(back) == sorted(original)
    for key in original:
        np.testing.assert_array_equal(back[key], original[key], err_msg=key)
    reloaded = transformers.LlamaForCausalLM.from_pretrained(root / "back")  # transformers reads our config
    assert reloaded.config.num_key_value_heads == HF_CONFIGS[name]["num_key_value_heads"]


def test_config_reads_transformers_4_and_5_rope_keys():
    """`rope_theta`+`rope_scaling` (4.x) and `rope_parameters` (5.x) give the same config."""
    base = dict(model_type="llama", vocab_size=100, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                intermediate_size=128)
    scaling = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
    v4 = config_from_hf({**base, "rope_theta": 5e5, "rope_scaling": {"rope_type": "llama3", **scaling}}, "v4")
    v5 = config_from_hf({**base, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, **scaling}}, "v5")
    assert v4 == v5 and v4.rope_theta == 5e5 and v4.rope_scaling.factor == 8.0
    plain = config_from_hf({**base, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}, "p")
    assert plain.rope_scaling is None and plain.rope_theta == 1e4


def _hf_dir(root, tmp_path, edit):
    """A copy of a converted test's HF directory with `edit(config, tensors)` applied."""

    out = tmp_path / "edited"
    out.mkdir()
    config = json.loads((root / "hf" / "config.json").read_text())
    tensors = {}
    for f in (root / "hf").glob("*.safetensors"):
        tensors.update(load_file(f))
    edit(config, tensors)
    (out / "config.json").write_text(json.dumps(config))
    save_file(tensors, out / "model.safetensors")
    return out


@pytest.mark.parametrize("edit, message", [
    (lambda c, t: t.pop("model.layers.1.mlp.up_proj.weight"), "model.layers.1.mlp.up_proj.weight"),
    (lambda c, t: t.update({"model.norm.weight": np.ones(3, np.float32)}), "model.norm.weight"),
    (lambda c, t: c.update(architectures=["MistralForCausalLM"]), "architectures"),
    (lambda c, t: c.update(model_type="gpt2"), "model_type"),
    (lambda c, t: c.pop("intermediate_size"), "intermediate_size"),
])
def test_bad_checkpoints_name_the_problem_and_leave_nothing(converted, tmp_path, edit, message):
    """A missing or misshapen tensor, or a non-Llama config, is an error naming it; no output is left."""
    _, _, root = converted
    src = _hf_dir(root, tmp_path, edit)

    with pytest.raises(Exception, match=message.replace(".", r"\.")):
        convert.hf_to_agentjax(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["edited"]  # no half-written temporary directory either


# --- corrupt files and taken or abandoned outputs (issue 13, items 7 and 10) ---------------------------------


def _rewrite_header(path, edit):
    """`path` with its safetensors JSON header passed through `edit(header)`, the tensor bytes unchanged."""
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    edit(header)
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + size:])


def _last_tensor_past_the_end(header):
    name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    header[name]["data_offsets"][1] += 1000


CORRUPTIONS = {  # what is done to the HF directory -> (file named, words of the message)
    "float weight declared I32": (lambda d: _rewrite_header(d / "model.safetensors", lambda h: h[
        "model.embed_tokens.weight"].update(dtype="I32")), "model.safetensors", "'model.embed_tokens.weight' is declared I32"),
    "truncated data": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-100]),
                       "model.safetensors", "not a valid safetensors file"),
    "offsets past the end": (lambda d: _rewrite_header(d / "model.safetensors", _last_tensor_past_the_end),
                             "model.safetensors", "not a valid safetensors file"),
    "empty file": (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors", "header too small"),
    "huge header size": (lambda d: (d / "model.safetensors").write_bytes(
        struct.pack("<Q", 2**60) + (d / "model.safetensors").read_bytes()[8:]), "model.safetensors", "header too large"),
    "config.json not JSON": (lambda d: (d / "config.json").write_text("{'model_type': llama"), "config.json:1",
                             "not valid JSON"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_item7_corrupt_safetensors_and_configs_are_data_errors_naming_the_file(converted, tmp_path, case):
    """Each corruption is a DataError naming the file (and tensor, for a wrong dtype) before anything is built;
    the command exits with status 2 and one line; no output or temporary directory is left."""
    _, _, root = converted
    src = _hf_dir(root, tmp_path, lambda c, t: None)
    corrupt, where, words = CORRUPTIONS[case]
    corrupt(src)

    with pytest.raises(DataError, match=re.escape(words)) as raised:
        convert.hf_to_agentjax(src, tmp_path / "out")
    assert str(raised.value).startswith(f"{src / where}")
    assert cli(["convert", "hf-to-agentjax", str(src), str(tmp_path / "out")]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["edited"]


def test_item10_a_taken_destination_fails_before_any_tensor_is_read(converted, tmp_path, monkeypatch):
    """Converting or exporting onto an existing directory fails at once: no safetensors file is opened and no model
    or run is loaded (each entry point: HF import, GGUF import, `export_hf` of a model or run, the CLI)."""
    _, _, root = converted

    model = load_checkpoint(root / "ajx")

    def refuse(*args, **kwargs):
        pytest.fail(f"read {args[0] if args else kwargs} although the destination was taken")

    for module, name in ((convert, "SafetensorsFile"), (gguf_import, "GGUFCheckpoint"), (export, "load_checkpoint"),
                         (export, "load_run")):
        monkeypatch.setattr(module, name, refuse)
    (tmp_path / "taken").mkdir()
    for convert_to in (lambda: convert.hf_to_agentjax(root / "hf", tmp_path / "taken"),
                       lambda: gguf_import.gguf_to_agentjax(root / "none.gguf", tmp_path / "taken"),
                       lambda: convert.agentjax_to_hf(model, tmp_path / "taken"),
                       lambda: export.export_hf(root / "ajx", tmp_path / "taken")):
        with pytest.raises(FileExistsError, match="taken already exists"):
            convert_to()
    assert cli(["convert", "agentjax-to-hf", str(root / "ajx"), str(tmp_path / "taken")]) == 2


def test_the_convert_command_names_a_taken_destination_in_one_line(converted, tmp_path, capsys):
    """`agentjax convert` onto an existing directory exits 2 with the path in one line, not a traceback."""
    _, _, root = converted
    (tmp_path / "taken").mkdir()
    assert cli(["convert", "hf-to-agentjax", str(root / "hf"), str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert "taken already exists" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_item10_a_killed_conversions_partial_directory_is_removed_by_the_next(converted, tmp_path):
    """A `.DST.partial-PID-*` directory whose process is gone (a conversion killed with -9) is removed when the same
    destination is converted again; one whose process still runs (a conversion in progress) is left alone."""
    _, _, root = converted
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = tmp_path / f".back.partial-{dead.pid}-x1y2z3"
    in_progress = tmp_path / f".back.partial-{os.getpid()}-a1b2c3"
    for d in (abandoned, in_progress):
        (d / "params").mkdir(parents=True)
    assert cli(["convert", "agentjax-to-hf", str(root / "ajx"), str(tmp_path / "back")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["back", in_progress.name])
