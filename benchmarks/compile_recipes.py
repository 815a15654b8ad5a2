"""Compile every recipe in configs/ for the TPU slice it names, and write the table into configs/README.md.

Each training recipe's train step is compiled by `agentjax compile` for the slice its mesh preset names (the
`include: [../mesh/X.yaml]` chain); each evaluation config's decoder with the recipe that trains its model;
and the Colab TPU notebook's train and eval settings for one v5e chip. Recipes that differ only in their data
compile the same program: it is compiled once and the table says so. Results are cached per program under
runs/bench/compile/ (a rerun compiles only what is missing), then collected into
benchmarks/results/compile_recipes.json. Needs libtpu (pip install "jax[tpu]==<jax version>"); heavy: ~2 GiB
of RAM and minutes of CPU per 7B program.

    python benchmarks/compile_recipes.py [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from agentjax.agent.config import EvalConfig
from agentjax.configlib import load, to_dict
from agentjax.train.config import RunConfig
from agentjax.util.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
CACHE = ROOT / "runs" / "bench" / "compile"
RESULT = ROOT / "benchmarks" / "results" / "compile_recipes.json"
README = CONFIGS / "README.md"
BEGIN, END = "<!-- compile table: benchmarks/compile_recipes.py -->", "<!-- end of compile table -->"

# Evaluation configs and the recipe that trains the model each evaluates.
EVALS = {"fireact/eval-hotpotqa-recorded.yaml": "fireact/llama2-7b-lora-hotpotqa.yaml",
         "nat/eval-gsm8k.yaml": "nat/llama2-7b-math.yaml"}
# The Colab TPU notebook's settings on one v5e chip (colab/fireact_llama2_7b_tpu.ipynb; tests/test_colab.py
# checks the notebook still says the same).
COLAB_RECIPE, COLAB_EVAL = "fireact/llama2-7b-lora-hotpotqa.yaml", "fireact/eval-hotpotqa-recorded.yaml"
COLAB_TRAIN = ("mesh.fsdp=-1", "model.overrides.param_dtype=bfloat16", "data.seq_len=1024", "train.global_batch=32",
               "train.micro_batches=32")
COLAB_DECODE = ("eval.mesh.fsdp=-1", "eval.generation.batch_size=1", "eval.generation.max_len=2048",
                "model.overrides.param_dtype=bfloat16")

# The recipe whose train step is also compiled with the dense and the TPU-kernel attention (rows of 4,096 tokens;
# its own rows use `auto`, the blockwise backend).
ATTENTION_RECIPE, ATTENTION_BACKENDS = "agenttuning/llama2-7b.yaml", ("reference", "splash")


@dataclass(frozen=True)
class Job:
    """One row of the table: what is compiled, for which slice, with which command-line arguments."""

    label: str
    slice: str
    args: tuple[str, ...]
    key_data: str  # what determines the compiled programs; equal keys compile once

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.slice} {self.key_data}".encode()).hexdigest()[:16]


def recipe_slice(path: Path) -> str:
    """The slice a recipe names through its include chain (`../mesh/v4-8.yaml` -> v4-8); the last one wins."""
    found = None
    for name in yaml.safe_load(path.read_text()).get("include", []) or []:
        included = (path.parent / name).resolve()
        found = included.stem if included.parent == CONFIGS / "mesh" else recipe_slice(included) or found
    return found


def shape_key(run: RunConfig, *extra) -> str:
    """The settings that decide a train step's program (data sources, paths and schedules do not)."""
    return json.dumps([to_dict(run.model), to_dict(run.mesh), to_dict(run.lora), run.train.global_batch,
                       run.train.micro_batches, run.data.seq_len, *extra], sort_keys=True, default=str)


def jobs() -> list[Job]:
    out = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        rel = str(path.relative_to(CONFIGS))
        if path.name.startswith("_") or path.name.startswith("eval-") or rel.startswith("mesh/") or "/" not in rel:
            continue
        if recipe_slice(path) == "cpu":  # sized for a CPU host: no TPU to compile for
            continue
        out.append(Job(rel, recipe_slice(path), ("--config", str(path)), shape_key(load(RunConfig, path))))
    for ev, recipe in EVALS.items():
        run, cfg = load(RunConfig, CONFIGS / recipe), load(EvalConfig, CONFIGS / ev)
        out.append(Job(f"{ev} (model of {recipe})", recipe_slice(CONFIGS / recipe),
                       ("--config", str(CONFIGS / recipe), "--eval", str(CONFIGS / ev), "--no-train"),
                       shape_key(run, to_dict(cfg.generation), to_dict(cfg.mesh))))
    for backend in ATTENTION_BACKENDS:  # the attention backend's memory at 4,096-token rows
        run = load(RunConfig, CONFIGS / ATTENTION_RECIPE, [f"model.attention={backend}"])
        out.append(Job(f"{ATTENTION_RECIPE} model.attention={backend}", recipe_slice(CONFIGS / ATTENTION_RECIPE),
                       ("--config", str(CONFIGS / ATTENTION_RECIPE), f"model.attention={backend}"), shape_key(run)))
    out.append(Job("colab notebook: train", "v5e-1", ("--config", str(CONFIGS / COLAB_RECIPE), *COLAB_TRAIN),
                   "colab train " + " ".join(COLAB_TRAIN)))
    out.append(Job("colab notebook: eval", "v5e-1", ("--config", str(CONFIGS / COLAB_RECIPE), "--eval",
                                                     str(CONFIGS / COLAB_EVAL), "--no-train", *COLAB_DECODE),
                   "colab eval " + " ".join(COLAB_DECODE)))
    return out


def compile_job(job: Job) -> dict:
    """Run `agentjax compile` for the job (cached by its key); its JSON report, or the error it printed."""
    target = CACHE / f"{job.key}.json"
    if not target.exists():
        env = dict(os.environ, JAX_PLATFORMS="cpu", ALLOW_MULTIPLE_LIBTPU_LOAD="1", TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run([sys.executable, "-m", "agentjax.cli", "compile", "--topology", job.slice,
                               "--json", str(target), *job.args], env=env, capture_output=True, text=True)
        if not target.exists():
            return dict(error=(done.stdout + done.stderr).strip().splitlines()[-1:])
    return json.loads(target.read_text())


NOT_COMPILED = {"error": ["not compiled yet (run this script)"]}


def table(rows: list[tuple[Job, dict]]) -> str:
    lines = ["| recipe | slice | mesh | program | peak GiB a device | usable | fits | compile s |",
             "|---|---|---|---|---|---|---|---|"]
    first_of: dict[str, str] = {}
    for job, report in rows:
        same = first_of.setdefault(job.key, job.label)
        if same != job.label:
            lines.append(f"| {job.label} | {job.slice} | | same shapes as {same} | | | | |")
            continue
        if "error" in report:
            said = " ".join(report["error"]) if report is NOT_COMPILED else f"did not compile: {' '.join(report['error'])}"
            lines.append(f"| {job.label} | {job.slice} | | {said} | | | | |")
            continue
        mesh = "; ".join(f"{part} " + "x".join(str(v) for v in m.values()) for part, m in report["meshes"].items())
        for p in report["programs"]:
            peak = f"{p['peak_bytes'] / 2**30:.2f}" if not p.get("refused") else \
                f"refused by the compiler: needs {p['temp_bytes'] / 2**30:.2f} in all"
            lines.append(f"| {job.label} | {job.slice} | {mesh} | {p['name']} | {peak} | "
                         f"{report['usable_bytes'] / 2**30:.2f} | {'yes' if p['fits'] else '**no**'} | "
                         f"{p['seconds']:.0f} |")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = README.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    readme = (readme[:readme.index(BEGIN)] + block + readme[readme.index(END) + len(END):]) if BEGIN in readme \
        else readme.rstrip("\n") + "\n\n" + block + "\n"
    with atomic_write(README) as f:
        f.write(readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="compiles at a time (each ~2 GiB of RAM)")
    parser.add_argument("--only", nargs="*", help="labels to compile (default: every job)")
    parser.add_argument("--no-compile", action="store_true", help="only collect the cached results into the table")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    every = jobs()
    todo = [] if args.no_compile else [j for j in every if not args.only or j.label in args.only]
    unique = list({j.key: j for j in reversed(todo)}.values())[::-1]
    with cf.ThreadPoolExecutor(args.workers) as pool:
        reports = dict(zip((j.key for j in unique), pool.map(compile_job, unique)))
    for j in every:  # the rest of the table from earlier runs' results, where there are any
        if j.key not in reports and (CACHE / f"{j.key}.json").exists():
            reports[j.key] = json.loads((CACHE / f"{j.key}.json").read_text())
    rows = [(j, reports.get(j.key, NOT_COMPILED)) for j in every]
    text = table(rows)
    print(text)
    with atomic_write(RESULT) as f:
        f.write(json.dumps([dict(r, label=j.label, slice=j.slice, args=j.args) for j, r in rows], indent=2) + "\n")
    write_readme(text)


if __name__ == "__main__":
    main()
