"""`agentjax data inspect|stats`: trained spans are visible, stats are printed and written as JSON, bad configs fail clearly."""

from __future__ import annotations

import json

import yaml
from data_support import FIREACT
from tokenizer_support import smollm2_dir

from agentjax.cli import main


def write_recipe(tmp_path, shared_data):
    """A recipe-style YAML whose `data:` section is the DataConfig (other sections belong to other modules)."""
    recipe = {"model": {"preset": "tiny"}, "data": {
        "sources": [{"path": str(shared_data / FIREACT / "hotpotqa.jsonl"), "format": "fireact", "limit": 40},
                    {"path": str(shared_data / "fixtures/agentflan_sample.jsonl"), "format": "agentflan", "weight": 0.1}],
        "seq_len": 1024}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_inspect_marks_trained_replies_and_leaves_observations_unmarked(tmp_path, shared_data, capsys):
    """Replies (with their EOS) are inside ⟦ ⟧; the question and observations are outside."""
    recipe = write_recipe(tmp_path, shared_data)
    assert main(["data", "inspect", "--config", str(recipe), "--vocab-size", "512", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "hotpotqa.jsonl:1" in out and "<s>Who was once considered the best kick boxer" in out
    assert "⟦Thought: I need to search for the best kick boxer" in out and "finish[Badr Hari]</s>⟧" in out
    assert "\nObservation: Badr Hari (born 8 December 1984)" in out


def test_inspect_with_a_tokenizer_json_shows_its_special_tokens_and_pad(tmp_path, shared_data, capsys):
    """With SmolLM2's tokenizer and template auto (chatml): the BOS/EOS/pad line names the fallback pad, control
    tokens are written out, and each reply's <|im_end|> is inside the trained span."""
    recipe = write_recipe(tmp_path, shared_data)
    assert main(["data", "inspect", "--config", str(recipe), "--tokenizer", str(smollm2_dir()), "-n", "1", "template=auto"]) == 0
    out = capsys.readouterr().out
    assert "template chatml" in out and "bos none, eos <|im_end|> (2), pad <|endoftext|> (0): fallback" in out
    assert "<|im_start|>user\nWho was once considered the best kick boxer" in out
    assert "<|im_start|>assistant\n⟦Thought: I need to search" in out and "finish[Badr Hari]<|im_end|>⟧" in out


def test_stats_prints_and_writes_json_with_overrides(tmp_path, shared_data, capsys):
    """stats: per-source counts and packing efficiency, printed and written atomically; overrides reach the data section."""
    recipe = write_recipe(tmp_path, shared_data)
    out_path = tmp_path / "stats" / "data.json"
    assert main(["data", "stats", "--config", str(recipe), "--vocab-size", "512", "--json", str(out_path), "seq_len=2048"]) == 0
    stats = json.loads(out_path.read_text())
    assert stats["seq_len"] == 2048 and stats["sources"]["hotpotqa"]["conversations"] == 40
    assert stats["sources"]["agentflan_sample"]["examples"] == 2 and 0 < stats["supervised_share"] < 1
    assert "packing_efficiency" in capsys.readouterr().out and stats["packing_efficiency"] > stats["padding_efficiency"]


def test_a_misspelt_config_key_is_a_config_error_naming_it(tmp_path, shared_data, capsys):
    """A typo in the data config exits with status 2 and says which key and what it may have meant."""
    recipe = write_recipe(tmp_path, shared_data)
    assert main(["data", "stats", "--config", str(recipe), "seq_lenn=10"]) == 2
    assert "seq_lenn: unknown key; did you mean 'seq_len'?" in capsys.readouterr().err


def broken_recipe(tmp_path, shared_data, bad_input: str):
    """A data config whose second source, fixtures/broken.jsonl, has one good line and many bad ones."""
    sources = [{"path": str(shared_data / FIREACT / "hotpotqa.jsonl"), "format": "fireact", "limit": 20},
               {"path": str(shared_data / "fixtures/broken.jsonl"), "format": "agentinstruct"}]
    path = tmp_path / f"broken-{bad_input}.yaml"
    path.write_text(yaml.safe_dump({"data": {"sources": sources, "seq_len": 1024, "bad_input": bad_input}}))
    return path


def test_item9_stats_without_a_tokenizer_skips_bad_lines_in_skip_mode(tmp_path, shared_data, capsys):
    """bad_input: skip holds for the tokenizer trained on the fly too: stats runs and counts the bad lines."""
    out_path = tmp_path / "stats.json"
    recipe = broken_recipe(tmp_path, shared_data, "skip")
    assert main(["data", "stats", "--config", str(recipe), "--vocab-size", "512", "--json", str(out_path)]) == 0
    stats = json.loads(out_path.read_text())
    assert stats["sources"]["broken"]["conversations"] == 1
    assert stats["bad_input"] == {"invalid_json": 1, "unknown_role": 1, "missing_field": 1, "nothing_to_train": 1}


def test_item9_bad_input_is_one_clear_line_from_data_and_train(tmp_path, shared_data, capsys):
    """In raise mode `data stats` and `train` exit with status 2 and print `file:line: problem` (no traceback),
    as `score` does."""
    recipe = broken_recipe(tmp_path, shared_data, "raise")
    assert main(["data", "stats", "--config", str(recipe), "--vocab-size", "512"]) == 2
    err = capsys.readouterr().err
    assert f"agentjax data: bad input: {shared_data}/fixtures/broken.jsonl:2: " in err and "Traceback" not in err
    run = yaml.safe_load(recipe.read_text())
    run["data"]["seq_len"] = 256
    run = {**run, "tokenizer": {"train_vocab_size": 512},
           "output_dir": str(tmp_path / "run"), "mesh": {"num_devices": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"agentjax train: bad input: {shared_data}/fixtures/broken.jsonl:2: " in err and "Traceback" not in err
