"""Every YAML in configs/ loads and validates, and every training recipe trains for 2 steps on CPU.

The recipes name user data through $AGENTJAX_DATA / $AGENTJAX_MODELS / $AGENTJAX_RUNS. Here those point at a
temporary tree laid out the way each recipe's header tells a user to lay it out, whose files are links to the
shared sample data (FireAct's real files, small invented samples of the other formats) plus a tiny model
checkpoint standing in for every Llama-2 size. A 2-step run keeps each recipe's data sources, filters,
template, conditioning, LoRA or full fine-tuning, accumulation and optimizer, and changes only what cannot
fit a CPU: rows of 256 tokens, 4 rows per micro-batch, a 1-device mesh, 2 steps.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest

from agentjax.agent.config import EvalConfig
from agentjax.configlib import ConfigError, expand_env, from_dict, load, read_yaml
from agentjax.model.llama import LlamaConfig
from agentjax.sharding import MeshConfig
from agentjax.train.config import RunConfig
from train_support import share_compilations

share_compilations()  # recipes that compile the same train step (e.g. all FireAct LoRA variants) share it
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL_YAML = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))

# Slice -> (JAX devices, memory per device in GiB): TPU slices (one device per chip; v4 and v5p chips are
# megacores), and one CPU host of this project's machine type (24 GiB).
SLICES = {"v4-8": (4, 32), "v5e-16": (16, 16), "v5p-64": (32, 95), "cpu": (1, 24)}


def kind(name: str) -> str:
    """What a file under configs/ is, from its name; a new kind of file must be added here (and tested)."""
    if name.startswith("mesh/"):
        return "mesh"
    if Path(name).name.startswith("_"):
        return "fragment"
    if Path(name).name.startswith("eval-"):
        return "eval"
    if name.startswith("quickstart"):
        return "quickstart"
    return "train"


RECIPES = [n for n in ALL_YAML if kind(n) == "train"]
EVALS = [n for n in ALL_YAML if kind(n) == "eval"]


# -- the user's files, as the recipe headers describe them --------------------------------------------


def link(target: Path, link_path: Path) -> None:
    link_path.parent.mkdir(parents=True, exist_ok=True)
    link_path.symlink_to(target)


@pytest.fixture(scope="module")
def user_tree(shared_data, tmp_path_factory):
    """$AGENTJAX_DATA, $AGENTJAX_MODELS and $AGENTJAX_RUNS set to a temporary tree for the whole module."""
    from flax import nnx

    from agentjax.data.formats import read_conversations
    from agentjax.data.native import write_conversations
    from agentjax.data.templates import template_markers
    from agentjax.data.tokenizer import train_sentencepiece
    from agentjax.model.checkpoint import save_checkpoint
    from agentjax.model.llama import Llama, preset
    from agentjax.world.teacher import generate_trajectories
    from agentjax.world.build import WorldConfig, build_world

    root = tmp_path_factory.mktemp("user")
    data, fixtures = root / "data", shared_data / "fixtures"
    link(shared_data / "fireact", data / "fireact")  # FireAct's released data folder, as released
    link(fixtures / "agentinstruct_sample.jsonl", data / "agentinstruct" / "os.jsonl")
    link(fixtures / "sharegpt_sample.json", data / "sharegpt" / "sharegpt.json")
    for name in ("gsm8k_positive.json", "gsm8k_negative.json"):  # mixed file: keep_outcome picks by label
        link(fixtures / "nat_sample.json", data / "nat" / name)
    for name in ("agent_instruct_react", "agent_instruct_tflan", "toolbench_instruct_j1s1_3k", "toolbench_react_10p",
                 "toolbench_tflan_60p_r10r5u7", "toolbench_tflan_cot_30p", "toolbench_negative"):
        link(fixtures / "agentflan_sample.jsonl", data / "agentflan" / f"{name}.jsonl")
    # Graded NAT needs trajectories with an answer F1: the world teacher's clean and failed ones, native format.
    world = build_world(WorldConfig(train_questions_per_kind=3, eval_questions_per_kind=1))
    write_conversations(data / "nat" / "hotpotqa_trajectories.jsonl", generate_trajectories(world, "train", ("react", "noisy")))
    (data / "gsm8k").mkdir()
    (data / "gsm8k" / "test.jsonl").write_text(
        json.dumps({"question": "A crate holds 6 jars. How many jars are in 4 crates?", "answer": "6*4=24\n#### 24"}) + "\n"
        + json.dumps({"question": "Half of 30 apples are eaten. How many are left?", "answer": "30/2=15\n#### 15"}) + "\n")

    # One tiny model with a tokenizer trained on every sample format stands in for every Llama-2 size and SmolLM2.
    sources = [(data / "fireact/finetune/gpt_format/hotpotqa.jsonl", "fireact"), (fixtures / "nat_sample.json", "nat"),
               (fixtures / "agentinstruct_sample.jsonl", "agentinstruct"), (fixtures / "sharegpt_sample.json", "sharegpt"),
               (fixtures / "agentflan_sample.jsonl", "agentflan"), (data / "nat/hotpotqa_trajectories.jsonl", "agentjax")]
    texts = [t.content for path, fmt in sources for conv in read_conversations(path, fmt) for t in conv.turns]
    tokenizer_file = root / "tokenizer.model"
    tokenizer = train_sentencepiece(texts, 512, tokenizer_file, user_symbols=template_markers())
    models = root / "models"
    model = Llama(preset("tiny", vocab_size=tokenizer.vocab_size), rngs=nnx.Rngs(0))
    save_checkpoint(model, models / "llama2-7b-chat", extra_files=[tokenizer_file])
    for name in ("llama2-13b-chat", "llama2-70b-chat", "smollm2-135m"):
        link(models / "llama2-7b-chat", models / name)

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AGENTJAX_DATA", str(data))
        env.setenv("AGENTJAX_MODELS", str(models))
        env.setenv("AGENTJAX_RUNS", str(root / "runs"))
        env.setenv("SERPAPI_API_KEY", "test-key-never-sent")  # tools are built, never called
        yield root


def cpu_overrides(cfg: RunConfig) -> list[str]:
    """What a 2-step CPU run changes: sizes only. Everything that decides *what* is trained stays; a recipe
    that counts epochs gets many more, since a sample file of a few conversations would end after one step; one
    that freezes lower blocks freezes one of the test model's two."""
    epochs = [] if cfg.data.epochs is None else ["data.epochs=100"]
    frozen = ["train.frozen_layers=1"] if cfg.train.frozen_layers else []
    return ["train.steps=2", "data.seq_len=256", f"train.global_batch={4 * cfg.train.micro_batches}",
            "mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1", "mesh.num_devices=1", "train.log_every=1", *epochs,
            *frozen]


@pytest.fixture(scope="module")
def run_recipe(user_tree):
    """run_recipe(name) trains that recipe for 2 steps once per module and returns (config, result, data counters)."""
    from agentjax.train.trainer import Trainer

    @functools.lru_cache(maxsize=None)
    def run(name: str):
        cfg = load(RunConfig, CONFIGS / name)
        cfg = load(RunConfig, CONFIGS / name, cpu_overrides(cfg))
        trainer = Trainer(cfg)
        return cfg, trainer.run(), dict(trainer.pipeline.counters)

    return run


# -- every file -------------------------------------------------------------------------------------


def test_configs_exist_and_every_file_has_a_known_kind():
    """The recipes the issue asks for are here, and nothing in configs/ escapes the tests below."""
    assert {"mesh/v4-8.yaml", "mesh/v5e-16.yaml", "mesh/v5p-64.yaml"} <= set(ALL_YAML)
    papers = {n.split("/")[0] for n in RECIPES}
    assert {"fireact", "agenttuning", "nat", "agentflan"} <= papers, papers
    assert {kind(n) for n in ALL_YAML} <= {"mesh", "fragment", "eval", "train", "quickstart"}


@pytest.mark.parametrize("name", ALL_YAML)
def test_file_starts_with_a_header_comment(name):
    """Each file opens with comments that say what it is for (paper, data, slice, figures for recipes)."""
    first = (CONFIGS / name).read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, f"{name}: start with a comment header"


@pytest.mark.parametrize("name", [n for n in ALL_YAML if kind(n) == "quickstart"])
def test_quickstart_config_loads(name):
    """The quickstart's config is a QuickstartConfig (its own tests check it equals the built-in defaults)."""
    from agentjax.quickstart import QuickstartConfig

    load(QuickstartConfig, CONFIGS / name)


@pytest.mark.parametrize("name", [n for n in ALL_YAML if kind(n) == "fragment"])
def test_fragment_is_a_partial_run_config_that_some_recipe_includes(name):
    """A fragment type-checks as part of a RunConfig and is used (no dead fragments)."""
    load(RunConfig, CONFIGS / name)
    includers = [n for n in ALL_YAML if Path(name).name in (CONFIGS / n).read_text() and n != name]
    assert includers, f"{name} is included by no config"


# -- mesh presets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("slice_name", sorted(SLICES))
def test_mesh_preset_spans_exactly_its_slice(slice_name):
    """A preset's axes multiply to the slice's device count, and it refuses a machine of another size."""
    data = read_yaml(CONFIGS / "mesh" / f"{slice_name}.yaml")
    assert set(data) == {"mesh"}, "a mesh preset sets the mesh and nothing else"
    mesh = from_dict(MeshConfig, data["mesh"])
    devices = SLICES[slice_name][0]
    assert math.prod(mesh.shape(devices)) == devices and -1 not in (mesh.data, mesh.fsdp, mesh.tensor)
    with pytest.raises(ConfigError):
        mesh.shape(devices * 2)
    assert load(RunConfig, CONFIGS / "mesh" / f"{slice_name}.yaml").mesh == mesh


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_fits_its_slice(name, user_tree):
    """On its slice, the recipe's batch splits into whole rows per device, rows fit the real model's context,
    and the float32 training state (16 bytes a parameter for full fine-tuning, 4 with LoRA's frozen base)
    takes at most 60% of the slice's memory, leaving the rest for activations."""
    cfg = load(RunConfig, CONFIGS / name)
    mesh = cfg.mesh
    devices = mesh.data * mesh.fsdp * mesh.tensor
    slices = [s for s, (n, _) in SLICES.items() if n == devices]
    assert slices, f"{name}: mesh {mesh} matches none of the presets {SLICES}"
    assert cfg.train.global_batch % (mesh.data * mesh.fsdp * cfg.train.micro_batches) == 0
    size = Path(cfg.model.checkpoint).name.removesuffix("-chat")  # llama2-7b-chat -> the llama2-7b preset
    real = from_dict(LlamaConfig, {"preset": size})
    assert cfg.data.seq_len <= real.max_seq_len
    state_bytes = real.n_params * (4 if cfg.lora else 16)
    hbm = min(SLICES[s][1] for s in slices) * 2**30 * devices
    assert state_bytes <= 0.6 * hbm, f"{name}: {state_bytes / 2**30:.0f} GiB of state on {slices[0]}"


# -- training recipes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_with_user_paths(name, user_tree):
    """With the user's folders set, the recipe validates: model directory, tokenizer and every data file exist,
    and run outputs go under $AGENTJAX_RUNS."""
    from agentjax.train.validate import check_files

    cfg = load(RunConfig, CONFIGS / name)
    check_files(cfg)
    assert Path(cfg.model.checkpoint, "config.json").is_file()
    assert Path(cfg.output_dir).is_relative_to(user_tree / "runs")
    assert all(p.is_file() for s in cfg.data.sources for p in s.paths)


def test_data_cli_reads_a_recipe_with_includes(user_tree, capsys):
    """`agentjax data stats --config <recipe>` sees the data section a recipe inherits through `include:`."""
    from agentjax.cli import main

    tok = Path(load(RunConfig, CONFIGS / "fireact/llama2-13b-lora-hotpotqa.yaml").tokenizer.path)
    assert main(["data", "stats", "--config", str(CONFIGS / "fireact/llama2-13b-lora-hotpotqa.yaml"),
                 "--tokenizer", str(tok), "seq_len=256"]) == 0
    assert "hotpotqa" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_two_steps_on_cpu(name, run_recipe):
    """Two optimizer steps of the recipe on sample data in its format: every source contributes, the loss is
    finite, the run directory can be evaluated or resumed (config, tokenizer, checkpoint of step 2)."""
    cfg, result, counters = run_recipe(name)
    assert result.final_step == 2 and not result.preempted
    assert result.last_loss is not None and math.isfinite(result.last_loss) and result.last_loss > 0
    for source in cfg.data.sources:
        assert counters[f"source/{source.display_name}/conversations"] > 0, f"{source.display_name} kept nothing"
    assert counters["consumed_supervised"] > 0
    run_dir = Path(cfg.output_dir)
    saved = load(RunConfig, run_dir / "config.yaml")
    assert (saved.data.template, saved.data.conditioning, saved.lora) == (cfg.data.template, cfg.data.conditioning, cfg.lora)
    assert (run_dir / "tokenizer.model").is_file()
    assert (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())


# -- evaluation configs -----------------------------------------------------------------------------


def paired_recipe(eval_cfg_run: str) -> str:
    """The training recipe whose output_dir an eval config's default `run` points at."""
    matches = [n for n in RECIPES if load(RunConfig, CONFIGS / n).output_dir == eval_cfg_run]
    assert len(matches) == 1, f"run {eval_cfg_run} is the output_dir of {matches or 'no recipe'}"
    return matches[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", EVALS)
def test_eval_config_matches_its_recipe_and_builds_its_task_and_tools(name, run_recipe, user_tree):
    """The eval config points at a recipe's run, renders prompts as that run was trained (template, its
    options, the same conditioning labels), and its task questions and tools build from the user's files. A
    prompted baseline (no run) names a model directory and builds its few-shot system prompt."""
    from agentjax.agent.evaluate import task_and_tools

    overrides = [f"tools.http.cache_dir={user_tree / 'tool-cache'}"]
    run = read_yaml(CONFIGS / name)["run"]
    if run is None:  # a prompted baseline: the untouched model, worked examples in its system prompt
        cfg = load(EvalConfig, CONFIGS / name, overrides)
        assert Path(cfg.model.checkpoint, "config.json").is_file() and cfg.few_shot is not None
        prompt = cfg.system_prompt_text()
        assert "{tools}" in prompt and prompt.count("Question: ") == cfg.few_shot.count
    else:
        recipe = paired_recipe(expand_env(run))
        train_cfg, _, _ = run_recipe(recipe)  # the 2-step run provides a real run directory to validate against
        cfg = load(EvalConfig, CONFIGS / name, overrides).with_run_defaults()
        assert cfg.run == train_cfg.output_dir
        assert cfg.template == train_cfg.data.template
        assert {k: v for k, v in cfg.template_options.items() if k != "train_observations"} == \
            {k: v for k, v in train_cfg.data.template_options.items() if k != "train_observations"}  # training only
        trained = train_cfg.data.conditioning
        if trained.mode == "none":
            assert cfg.conditioning is None
        else:
            assert cfg.conditioning is not None
            assert (cfg.conditioning.mode, cfg.conditioning.placement) == (trained.mode, trained.placement)
            labels = (trained.positive, trained.negative, trained.levels)
            assert (cfg.conditioning.positive, cfg.conditioning.negative, cfg.conditioning.levels) == labels
    task, questions, tools_for = task_and_tools(cfg)
    assert questions and task.name == cfg.task
    tools = tools_for(questions[0])
    assert "finish" in tools and (("search" in tools) == (cfg.tools.search != "none"))
    assert ("calculate" in tools) == cfg.tools.calculate


def test_an_eval_config_of_the_old_layout_still_loads():
    """Eval configs written before the world became a task said `world:` for its settings; they load as
    `task_options:`, and a config giving both is refused naming the two keys."""
    old = dict(model={"preset": "tiny"}, tokenizer="tok.model", task="world", world={"seed": 3})
    assert from_dict(EvalConfig, old).task_options == {"seed": 3}
    with pytest.raises(ConfigError, match="world: and task_options: both given"):
        from_dict(EvalConfig, {**old, "task_options": {"seed": 4}})


def test_a_few_shot_prompt_is_checked_and_excludes_other_system_prompts(tmp_path):
    """few_shot names a real file in a known format, and cannot be combined with another system prompt."""
    base = dict(model={"preset": "tiny"}, tokenizer="tok.model")
    with pytest.raises(ConfigError, match="few_shot.format: unknown format 'gpt'"):
        from_dict(EvalConfig, {**base, "few_shot": {"path": "x.jsonl", "format": "gpt"}})
    with pytest.raises(ConfigError, match="one of system_prompt, system_prompt_file and few_shot"):
        from_dict(EvalConfig, {**base, "system_prompt": "Be brief.", "few_shot": {"path": "x.jsonl"}})
    with pytest.raises(ConfigError, match=f"few_shot.path: {tmp_path}/none.jsonl does not exist"):
        from_dict(EvalConfig, {**base, "few_shot": {"path": str(tmp_path / "none.jsonl")}}).system_prompt_text()
