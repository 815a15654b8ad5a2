"""Compile a recipe's train step and its evaluation decoder for a TPU slice, from shapes alone.

No weights, no data, no TPU: the model is built abstractly (its config from `model.checkpoint/config.json`,
or a preset when that file is absent), every argument is a ShapeDtypeStruct on the slice's mesh, and the
real TPU compiler (libtpu) compiles the programs a run on the slice would run. Each program reports the
compiler's per-device memory (arguments + outputs - donated + temporaries) against the slice's usable HBM.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from agentjax import sharding
from agentjax.agent.config import EvalConfig
from agentjax.agent.decode import DecodePrograms, StopTables, decode_buckets
from agentjax.aot.topology import GiB, Slice, host_devices
from agentjax.configlib import ConfigError
from agentjax.data.packing import BATCH_DTYPES
from agentjax.model.llama import PRESETS, Llama, LlamaConfig, in_compute_dtype, unstack_layers
from agentjax.train.build import build_model, trainable_filter
from agentjax.train.config import ModelSection, RunConfig
from agentjax.train.program import TrainProgram
from agentjax.train.validate import check_layout

# Stop-string tables enter the decode loop as arguments; without the tokenizer their sizes are assumed (a few
# KiB whatever they are: they do not move the peak). Llama-2's sentencepiece pieces are at most 16 bytes.
ASSUMED_TOKEN_BYTES, ASSUMED_STOPS = 16, (4, 32)
# End-of-turn and pad ids are constants of the loop; their values do not change what is compiled or its memory.
ASSUMED_END_IDS, ASSUMED_PAD = (2,), 0


@dataclass(frozen=True)
class ProgramReport:
    """One compiled program: compile time and the compiler's memory analysis, per device; or, for a program the
    compiler refused for lack of HBM, its message (`refused`) and, in `temp_bytes`, the memory it said it needed:
    its "HLO temporaries" figure counts the arguments too (Colab's 7B decode loop at batch 2: refused on v5e-1
    for 17.58 GiB; on a 32 GiB v6e-1 chip it compiles to 14.55 GiB of arguments + 3.10 of temporaries)."""

    name: str
    seconds: float
    argument_bytes: int
    output_bytes: int
    alias_bytes: int  # outputs written into donated arguments
    temp_bytes: int
    refused: str | None = None

    @property
    def peak_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


# The TPU compiler's refusal: "... the total memory required for HLO temporaries (16.12G) exceeds available ..."
_OUT_OF_HBM = re.compile(r"RESOURCE_EXHAUSTED: Ran out of memory.*?\((\d+(?:\.\d+)?)([KMG])\)")


@dataclass
class CompileReport:
    """What compiling for a slice found: the mesh of each part, what was assumed, and every program."""

    tpu: Slice
    num_slices: int
    meshes: dict[str, dict[str, int]] = field(default_factory=dict)  # "train" / "eval" -> axis sizes
    assumptions: list[str] = field(default_factory=list)
    programs: list[ProgramReport] = field(default_factory=list)

    @property
    def usable_bytes(self) -> int:
        return int(self.tpu.usable_hbm_gib * GiB)

    def program_fits(self, p: ProgramReport) -> bool:
        return p.refused is None and p.peak_bytes <= self.usable_bytes

    @property
    def fits(self) -> bool:
        return all(self.program_fits(p) for p in self.programs)

    def to_dict(self) -> dict:
        """The report as plain data (for JSON): bytes per device, seconds, and whether each program fits."""
        return dict(slice=self.tpu.name, topology=self.tpu.topology, num_slices=self.num_slices,
                    usable_bytes=self.usable_bytes, fits=self.fits, meshes=self.meshes,
                    assumptions=list(dict.fromkeys(self.assumptions)),
                    programs=[dict(dataclasses.asdict(p), peak_bytes=p.peak_bytes,
                                   fits=self.program_fits(p)) for p in self.programs])

    def format(self) -> str:
        slices = f" x {self.num_slices} slices" if self.num_slices > 1 else ""
        lines = [f"slice {self.tpu.name}{slices} ({self.tpu.topology}, usable HBM {self.tpu.usable_hbm_gib:.2f} GiB "
                 "a device)"]
        lines += [f"mesh ({part}): " + " x ".join(f"{k}={v}" for k, v in mesh.items())
                  for part, mesh in self.meshes.items()]
        lines += [f"assumed: {a}" for a in dict.fromkeys(self.assumptions)]
        lines.append(f"{'program':<16}{'peak GiB':>10}{'args':>8}{'temp':>8}{'compile s':>11}  fits")
        for p in self.programs:
            if p.refused:
                lines.append(f"{p.name:<16}{p.temp_bytes / GiB:>10.2f}{'':>8}{'':>8}{p.seconds:>11.1f}  NO: "
                             "the compiler refused it (peak: what it said it needs in all)")
                continue
            lines.append(f"{p.name:<16}{p.peak_bytes / GiB:>10.2f}{p.argument_bytes / GiB:>8.2f}"
                         f"{p.temp_bytes / GiB:>8.2f}{p.seconds:>11.1f}  {'yes' if self.program_fits(p) else 'NO'}")
        return "\n".join(lines)


def compile_programs(programs: dict[str, tuple], mesh) -> list[ProgramReport]:
    """Lower and compile each (jitted function, abstract arguments) for the mesh's devices."""
    reports = []
    for name, (fn, args) in programs.items():
        t0 = time.perf_counter()
        with sharding.activate(mesh):
            lowered = fn.lower(*args)
            try:
                compiled = lowered.compile()
            except jax.errors.JaxRuntimeError as e:
                if not (found := _OUT_OF_HBM.search(str(e))):
                    raise
                needed = float(found.group(1)) * {"K": 2**10, "M": 2**20, "G": 2**30}[found.group(2)]
                reports.append(ProgramReport(name, time.perf_counter() - t0, 0, 0, 0, int(needed),
                                             refused=str(e).splitlines()[0][:300]))
                continue
        m = compiled.memory_analysis()
        reports.append(ProgramReport(name, time.perf_counter() - t0, m.argument_size_in_bytes,
                                     m.output_size_in_bytes, m.alias_size_in_bytes, m.temp_size_in_bytes))
    return reports


# -- the model's shape ---------------------------------------------------------------------------


def model_config(section: ModelSection, vocab_size: int | None, preset: str | None, notes: list[str]) -> LlamaConfig:
    """The model's config from shapes alone: the checkpoint's config.json when it is there, else a preset
    (`preset`, or the one the checkpoint's folder is named after); `vocab_size` is a trained tokenizer's size."""
    if section.checkpoint is None:
        cfg = section.resolve()
        if vocab_size is not None and "vocab_size" not in section.overrides:
            notes.append(f"vocabulary of {vocab_size} tokens (tokenizer.train_vocab_size)")
            cfg = cfg.replace(vocab_size=vocab_size)
        return cfg
    if preset is None and (Path(section.checkpoint) / "config.json").is_file():
        return section.resolve()
    preset = preset or preset_named_in(section.checkpoint)
    notes.append(f"the shapes of preset {preset} for model.checkpoint {section.checkpoint} (no config.json read)")
    return section.resolve(shapes_of=preset)


def preset_named_in(checkpoint: str) -> str:
    """The longest preset name inside the checkpoint folder's name (models/llama2-7b-chat -> llama2-7b)."""
    name = Path(checkpoint).name
    found = sorted((p for p in PRESETS if p in name), key=len)
    if not found:
        raise ConfigError(f"model.checkpoint: {checkpoint} has no config.json here and its name matches no preset; "
                          f"pass --preset (one of {sorted(PRESETS)})")
    return found[-1]


# -- training --------------------------------------------------------------------------------------


def train_programs(cfg: RunConfig, model_cfg: LlamaConfig, mesh, processes: int) -> dict[str, tuple]:
    """{"train step": (the jitted step, its abstract state, frozen weights and global batch)} on `mesh`."""
    check_layout(cfg, mesh, processes, model_cfg.max_seq_len)
    model = build_model(cfg, mesh, model_cfg, shapes_only=True)
    graphdef, params, frozen = nnx.split(model, trainable_filter(cfg), ...)
    frozen = abstract_on(frozen, mesh)
    program = TrainProgram(graphdef, params, frozen, mesh, cfg.train, cfg.seed,
                           dropout=bool(cfg.lora and cfg.lora.dropout))
    batch_shardings = program.batch_shardings()
    shape = (cfg.train.global_batch, cfg.data.seq_len)
    batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_shardings[k]) for k, dtype in BATCH_DTYPES.items()}
    return {"train step": (program.train_step, (program.abstract, frozen, batch))}


def abstract_on(state: nnx.State, mesh) -> dict:
    """A pure dict of ShapeDtypeStructs placed by the variables' logical axes on `mesh`."""
    return jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                        nnx.to_pure_dict(state), nnx.to_pure_dict(sharding.state_shardings(state, mesh)))


# -- evaluation --------------------------------------------------------------------------------------


def decode_programs(cfg: EvalConfig, model_cfg: LlamaConfig, mesh, notes: list[str]) -> dict[str, tuple]:
    """Every extend bucket and the decode loop of an evaluation of a model of this config (LoRA merged)."""
    g = cfg.generation
    if g.max_len > model_cfg.max_seq_len:
        notes.append(f"generation.max_len {g.max_len} is beyond the model's max_seq_len {model_cfg.max_seq_len}")
    # merged adapters leave the base model's structure; evaluate() decodes it with weights in the compute dtype
    model = nnx.eval_shape(lambda: unstack_layers(in_compute_dtype(Llama(model_cfg, rngs=nnx.Rngs(0)))))
    graphdef, params = nnx.split(model)
    programs = DecodePrograms(graphdef, params, model_cfg, g.batch_size, g.max_len, g.max_new_tokens,
                              np.array(ASSUMED_END_IDS, np.int32), ASSUMED_PAD, mesh)
    notes.append(f"stop tables of {ASSUMED_TOKEN_BYTES} bytes a token and {ASSUMED_STOPS[0]} stop strings of "
                 f"{ASSUMED_STOPS[1]} bytes (KiB either way)")
    v = model_cfg.vocab_size
    tables = StopTables(*(jax.ShapeDtypeStruct(s, t) for s, t in (
        ((v, ASSUMED_TOKEN_BYTES), np.uint8), ((v,), np.int32), (ASSUMED_STOPS, np.uint8), ((ASSUMED_STOPS[0],), np.int32))))
    return programs.abstract_inputs(params, tables, decode_buckets(g.buckets, g.max_len))


def eval_model_section(cfg: EvalConfig, run: RunConfig | None) -> RunConfig:
    """The run whose model the evaluation decodes: the recipe given with it, or the eval config's own model."""
    if cfg.model is not None:
        return RunConfig(model=cfg.model, seed=cfg.seed)
    if run is None:
        raise ConfigError("--eval: this evaluation names a training run (run:), not a model; give the recipe "
                          "that trains it with --config")
    return run


def trained_vocab(run: RunConfig) -> int | None:
    """The vocabulary a run trains its own tokenizer with (None when it reads a tokenizer file)."""
    return None if run.tokenizer.path else run.tokenizer.train_vocab_size


def compile_for_slice(tpu: Slice, devices: list, run: RunConfig | None, evaluation: EvalConfig | None,
                      preset: str | None = None, train: bool = True) -> CompileReport:
    """Compile the train step (with `run`) and the eval decoder (with `evaluation`) for the slice's devices.

    The evaluation runs on one host's devices (each host plays its own share of the episodes, see
    agent/evaluate.py), on the eval config's mesh.
    """
    num_slices = 1 + max(getattr(d, "slice_index", 0) for d in devices)
    report = CompileReport(tpu, num_slices)
    if run is not None and train:
        model_cfg = model_config(run.model, trained_vocab(run), preset, report.assumptions)
        mesh = sharding.make_mesh(run.mesh, devices)
        report.meshes["train"] = dict(mesh.shape)
        processes = len({d.process_index for d in devices})
        report.programs += compile_programs(train_programs(run, model_cfg, mesh, processes), mesh)
    if evaluation is not None:
        source = eval_model_section(evaluation, run)
        model_cfg = model_config(source.model, trained_vocab(source), preset, report.assumptions)
        mesh = sharding.make_mesh(evaluation.mesh, host_devices(tpu, devices))
        report.meshes["eval"] = dict(mesh.shape)
        report.programs += compile_programs(decode_programs(evaluation, model_cfg, mesh, report.assumptions),
                                            mesh)
    return report
