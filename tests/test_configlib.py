"""configlib: `include:` merging and `${VAR}` expansion, the two features recipes in configs/ are built on."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentjax.configlib import ConfigError, load, read_yaml
from agentjax.train.config import RunConfig


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_include_merges_mappings_in_order_and_the_file_wins(tmp_path):
    """Included files are merged in the order listed, nested mappings key by key, the including file last."""
    write(tmp_path / "mesh" / "m.yaml", "mesh: {data: 2, fsdp: 4}\ntrain: {steps: 5, global_batch: 16}\n")
    write(tmp_path / "base.yaml", "train: {steps: 7, micro_batches: 2}\nseed: 3\n")
    top = write(tmp_path / "run.yaml", "include: [mesh/m.yaml, base.yaml]\ntrain: {global_batch: 32}\nseed: 4\n")
    assert read_yaml(top) == {"mesh": {"data": 2, "fsdp": 4}, "seed": 4,
                              "train": {"steps": 7, "global_batch": 32, "micro_batches": 2}}
    cfg = load(RunConfig, top)
    assert (cfg.mesh.data, cfg.mesh.fsdp, cfg.train.steps, cfg.train.global_batch) == (2, 4, 7, 32)


def test_include_paths_are_relative_to_the_including_file_and_nest(tmp_path):
    """An included file's own includes resolve against its folder, not the caller's or the working directory."""
    write(tmp_path / "a" / "inner.yaml", "seed: 1\n")
    write(tmp_path / "a" / "middle.yaml", "include: inner.yaml\noutput_dir: x\n")
    top = write(tmp_path / "b" / "top.yaml", "include: ../a/middle.yaml\n")
    assert read_yaml(top) == {"seed": 1, "output_dir": "x"}


def test_a_list_replaces_and_null_clears(tmp_path):
    """Lists are replaced whole (sources are not concatenated); null removes an included section such as lora."""
    write(tmp_path / "base.yaml", "lora: {rank: 8}\ndata: {sources: [{path: a}, {path: b}], seq_len: 64}\n")
    top = write(tmp_path / "top.yaml", "include: base.yaml\nlora: null\ndata: {sources: [{path: c}]}\n")
    assert read_yaml(top) == {"lora": None, "data": {"sources": [{"path": "c"}], "seq_len": 64}}


def test_include_errors_name_the_file(tmp_path):
    """A missing include, a cycle and a malformed include list are ConfigErrors that say which file."""
    missing = write(tmp_path / "m.yaml", "include: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found"):
        read_yaml(missing)
    write(tmp_path / "x.yaml", "include: y.yaml\n")
    write(tmp_path / "y.yaml", "include: x.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        read_yaml(tmp_path / "x.yaml")
    bad = write(tmp_path / "bad.yaml", "include: {a: 1}\n")
    with pytest.raises(ConfigError, match="bad.yaml: include: expected a file name"):
        read_yaml(bad)


def test_env_vars_expand_with_defaults_after_overrides(tmp_path, monkeypatch):
    """`${NAME}` takes the environment, `${NAME:-default}` falls back when unset or empty, and an override
    replaces a value before expansion, so an unset variable there is no error."""
    cfg_file = write(tmp_path / "run.yaml",
                     "output_dir: ${AJ_TEST_RUNS:-runs}/one\ntokenizer:\n  path: ${AJ_TEST_TOK}/tokenizer.model\n")
    monkeypatch.setenv("AJ_TEST_TOK", "/models/llama")
    monkeypatch.delenv("AJ_TEST_RUNS", raising=False)
    cfg = load(RunConfig, cfg_file)
    assert (cfg.output_dir, cfg.tokenizer.path) == ("runs/one", "/models/llama/tokenizer.model")
    monkeypatch.setenv("AJ_TEST_RUNS", "")
    assert load(RunConfig, cfg_file).output_dir == "runs/one"
    monkeypatch.setenv("AJ_TEST_RUNS", "/big/disk")
    assert load(RunConfig, cfg_file).output_dir == "/big/disk/one"
    monkeypatch.delenv("AJ_TEST_TOK")
    with pytest.raises(ConfigError, match=r"tokenizer\.path: \$\{AJ_TEST_TOK\} is not set; export AJ_TEST_TOK"):
        load(RunConfig, cfg_file)
    assert load(RunConfig, cfg_file, ["tokenizer.path=/elsewhere/t.model"]).tokenizer.path == "/elsewhere/t.model"


def test_cli_overrides_may_follow_options():
    """`agentjax experiment all --out X steps=200` keeps steps=200 (argparse alone rejects it), and anything
    that is not a key=value override is still an error."""
    from agentjax.cli import parse

    args = parse(["experiment", "all", "--out", "x", "steps=200", "seed=1"])
    assert args.overrides == ["steps=200", "seed=1"] and args.out == "x"
    assert parse(["experiment", "all", "steps=200", "--out", "x"]).overrides == ["steps=200"]
    with pytest.raises(SystemExit):
        parse(["experiment", "all", "--out", "x", "--bogus"])
