"""`agentjax score` reproduces FireAct's published Llama-2-7B numbers from its results file and flags disagreements."""

from __future__ import annotations

import json

import pytest

from agentjax.cli import main


@pytest.fixture(scope="module")
def llama_results(shared_data):
    (path,) = (shared_data / "fireact" / "trajs").glob("*llama-2-7b*.json")
    return path


def test_score_reproduces_fireact_llama2_7b(llama_results, tmp_path, capsys):
    """500 questions, 26.2 EM and 38.0 F1 (FireAct's paper), printed and written as JSON; stored scores agree."""
    out = tmp_path / "scores.json"
    assert main(["score", str(llama_results), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "n 500  EM 26.2  F1 38.0" in printed
    assert "agree with the recomputed ones on all 500" in printed
    scores = json.loads(out.read_text())
    assert scores["n"] == 500 and round(100 * scores["em"], 1) == 26.2 and round(100 * scores["f1"], 1) == 38.0
    assert scores["disagreements"] == [] and scores["stored"] == pytest.approx({"em": scores["em"], "f1": scores["f1"]})


def test_score_reports_disagreements_and_unfinished(llama_results, tmp_path, capsys):
    """A stored score that our scorer does not reproduce is listed; a null prediction (unfinished) scores 0."""
    results = json.loads(llama_results.read_text())
    right = next(k for k, v in results.items() if v["em"])
    wrong = next(k for k, v in results.items() if not v["em"] and v["f1"] == 0)
    results[wrong]["em"] = True  # claims a hit that is not one
    results[right]["pred"] = None  # an episode that never finished, still marked correct
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(results))
    out = tmp_path / "scores.json"
    assert main(["score", str(edited), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "EM 26.0" in printed and "2 questions disagree" in printed
    disagreements = {d["id"]: d for d in json.loads(out.read_text())["disagreements"]}
    assert set(disagreements) == {right, wrong}
    assert disagreements[wrong]["em"] == {"stored": 1.0, "recomputed": 0.0}
    assert disagreements[right]["em"] == {"stored": 1.0, "recomputed": 0.0} and disagreements[right]["pred"] is None


def test_score_bad_file_is_a_clear_error(tmp_path, capsys):
    """A record without `pred` is reported with the file and question id, exit status 2, and no JSON written."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"7": {"gt": "x", "em": False, "f1": 0.0}}))
    out = tmp_path / "scores.json"
    assert main(["score", str(bad), "--json", str(out)]) == 2
    assert "bad.json['7']: pred: missing" in capsys.readouterr().err
    assert not out.exists()
