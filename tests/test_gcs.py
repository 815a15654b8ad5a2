"""gs:// outputs end to end, against a local GCS API (gcp-storage-emulator on 127.0.0.1, in memory).

A run trains from data in a bucket into the bucket and is killed (SIGKILL) once a checkpoint is committed; a half-written checkpoint of a
later step is planted (on GCS orbax renames nothing: a checkpoint is finished when its commit_success.txt exists);
the rerun resumes from the bucket and ends with the losses and parameters of an uninterrupted local run; the run is
exported to the bucket and evaluated from it, into it, with the same bytes and episodes as from local disk.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import signal
import threading
import time
import urllib.parse
from http.server import ThreadingHTTPServer

# gcsfs's bucket-layout probe (a gRPC control-plane call per bucket) has no emulator to answer it: plain gcsfs.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import gcsfs  # noqa: E402
import numpy as np
import pytest
from gcp_storage_emulator.handlers import buckets
from gcp_storage_emulator.server import RequestHandler
from gcp_storage_emulator.storage import Storage
from train_support import (abstract_like, agentjax_command, flat_params, interruptible_config, run_config, start,
                           subprocess_env, toy_files)

from agentjax.agent.config import EvalConfig
from agentjax.agent.evaluate import SUMMARY, TRANSCRIPTS, evaluate
from agentjax.configlib import from_dict
from agentjax.train.checkpoint import Checkpoints
from agentjax.train.export import export_hf
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import Trainer
from agentjax.util.atomic import atomic_directory, atomic_write
from agentjax.util.storage import AppendFile, as_path
from agentjax.world.build import WorldConfig

BUCKET, STEPS, PLANTED = "agentjax-test", 24, 22
RUN = f"gs://{BUCKET}/runs/toy"
SMALL_WORLD = WorldConfig(countries=4, cities=8, organisations=6, people=24, eval_questions_per_kind=2,
                          train_questions_per_kind=2)
pytestmark = pytest.mark.slow


class _Handler(RequestHandler):
    """The emulator's handler, plus the `x-goog-generation` header GCS sends with an object's bytes (tensorstore
    reads an object's generation from it; without it a read is "Malformed StorageGeneration")."""

    def end_headers(self):
        found = _MEDIA.match(urllib.parse.urlsplit(self.path).path)
        if self.command in ("GET", "HEAD") and found and ("alt=media" in self.path or found.group(1)):
            try:
                obj = self.storage.get_file_obj(found.group(2), urllib.parse.unquote(found.group(3)))
                self.send_header("x-goog-generation", obj["generation"])
                self.send_header("x-goog-metageneration", obj["metageneration"])
            except Exception:  # not an object (a 404 is on its way)
                pass
        super().end_headers()


_MEDIA = re.compile(r"^(/download)?/storage/v1/b/([^/]+)/o/(.+)$")


@pytest.fixture(scope="module")
def emulator():
    """The GCS API on a free port, with the bucket; gcsfs (agentjax, orbax's directory calls) and tensorstore
    (orbax's arrays) pointed at it, in this process and in the child processes started with its environment.

    The emulator's request handler is served by a threading HTTP server: its own server answers one connection
    at a time, and tensorstore and gcsfs keep several open (their keep-alive connections stalled it for minutes).
    """
    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    storage = Storage(use_memory_fs=True)
    buckets.create_bucket(BUCKET, storage)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, storage))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    gcsfs.GCSFileSystem.clear_instance_cache()
    yield env
    httpd.shutdown()
    httpd.server_close()
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    gcsfs.GCSFileSystem.clear_instance_cache()


def bucket_files(prefix: str) -> set[str]:
    """Object names under gs://BUCKET/prefix, read fresh (no listing cache)."""
    fs = gcsfs.GCSFileSystem()
    fs.invalidate_cache()
    return {name.removeprefix(f"{BUCKET}/{prefix}/") for name in fs.find(f"{BUCKET}/{prefix}")}


def committed_steps(files: set[str]) -> list[int]:
    return sorted(int(f.split("/")[1]) for f in files if f.startswith("checkpoints/") and
                  f.endswith("/commit_success.txt") and f.count("/") == 2)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return interruptible_config(tmp_path_factory.mktemp("gcs"), STEPS)


@pytest.fixture(scope="module")
def reference(config_file):
    """The uninterrupted run on local disk: (its run directory, its trainer)."""
    trainer = Trainer(run_config(config_file))
    return trainer.run().run_dir, trainer


@pytest.fixture(scope="module")
def resumed(emulator, config_file):
    """Run 1 in a child process, killed after its first committed checkpoint; run 2 here, resuming from the bucket."""
    gcsfs.GCSFileSystem().put(str(toy_files()[0]), f"{BUCKET}/data/toy.jsonl")  # its data is read from the bucket too
    overrides = (f"output_dir={RUN}", f"data.sources=[{{path: 'gs://{BUCKET}/data/*.jsonl', format: agentjax}}]")
    log = config_file.parent / "killed.log"
    child = start(agentjax_command("train", "--config", str(config_file), *overrides), log, subprocess_env(**emulator))
    deadline = time.monotonic() + 240
    while not (killed_with := committed_steps(bucket_files("runs/toy"))):
        assert child.poll() is None, f"run 1 ended (exit {child.returncode}) before a checkpoint:\n{log.read_text()}"
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert committed_steps(bucket_files("runs/toy"))[-1] < STEPS, "run 1 finished before it was killed"
    fs = gcsfs.GCSFileSystem()
    step = committed_steps(bucket_files("runs/toy"))[-1]
    for name in bucket_files(f"runs/toy/checkpoints/{step}"):
        if not name.endswith("commit_success.txt"):  # a later step whose commit never came: never resumed from
            fs.pipe(f"{BUCKET}/runs/toy/checkpoints/{PLANTED}/{name}",
                    fs.cat(f"{BUCKET}/runs/toy/checkpoints/{step}/{name}")[:-1])
    trainer = Trainer(run_config(config_file, *overrides))
    return dict(killed_with=killed_with, resumed_from=trainer.start_step, result=trainer.run())


def test_a_run_killed_in_a_bucket_resumes_from_it_like_an_uninterrupted_run(resumed, reference):
    """SIGKILL after a committed checkpoint, a planted uncommitted later one, a resume from gs://: the logged losses of
    steps 1..24 and the final parameters equal the uninterrupted local run's exactly."""
    assert resumed["resumed_from"] == resumed["killed_with"][-1] < PLANTED
    assert resumed["result"].final_step == STEPS
    ref_dir, trainer = reference
    expected = {r["step"]: r["loss"] for r in read_metrics(ref_dir)}
    losses = {r["step"]: r["loss"] for r in read_metrics(RUN)}
    assert list(losses) == list(range(1, STEPS + 1)) and losses == expected
    checkpoints = Checkpoints(RUN, read_only=True)
    assert checkpoints.steps()[-1] == STEPS and PLANTED not in checkpoints.steps()
    final = flat_params(checkpoints.restore_params(STEPS, abstract_like(trainer.state.params)))
    checkpoints.close()
    for name, value in flat_params(trainer.state.params).items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)
    files = bucket_files("runs/toy")
    assert {"config.yaml", "metrics.jsonl", "tokenizer.model"} <= files
    assert any(f.startswith("tb/events.out.tfevents") for f in files)  # TensorBoard's files, uploaded


def test_a_bucket_run_exports_to_the_bucket_the_bytes_a_local_export_has(resumed, reference, tmp_path):
    """export_hf from gs:// to gs:// writes the files, byte for byte, that the local run's export writes locally."""
    export_hf(RUN, f"gs://{BUCKET}/hf/toy")
    export_hf(reference[0], tmp_path / "hf")
    fs = gcsfs.GCSFileSystem()
    local = {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()}
    assert bucket_files("hf/toy") == set(local)
    for name, data in local.items():
        assert fs.cat(f"{BUCKET}/hf/toy/{name}") == data, name
    with pytest.raises(FileExistsError, match="already exists"):
        export_hf(RUN, f"gs://{BUCKET}/hf/toy")


def test_a_bucket_run_evaluates_into_the_bucket_as_it_does_locally(resumed, reference, tmp_path):
    """`evaluate` of the gs:// run into gs:// plays the episodes the local run plays locally; rerun, it resumes
    from the bucket's transcripts and plays none again."""
    def config(run, out):
        return from_dict(EvalConfig, dict(
            run=str(run), task="world", split="test", limit=4, task_options=dataclasses.asdict(SMALL_WORLD),
            max_steps=2, output_dir=str(out), mesh={"num_devices": 1},
            generation=dict(batch_size=2, max_len=128, max_new_tokens=8, buckets=[16, 64, 128])))

    remote = evaluate(config(RUN, f"gs://{BUCKET}/eval/toy"), progress=False)
    local = evaluate(config(reference[0], tmp_path / "eval"), progress=False)
    untimed = lambda r: {k: v for k, v in r.items() if k != "seconds"} | {  # noqa: E731
        "tool_calls": [{k: v for k, v in c.items() if k != "seconds"} for c in r["tool_calls"]]}
    read = lambda path: [untimed(json.loads(line)) for line in as_path(path).read_text().splitlines()]  # noqa: E731
    assert remote["n"] == local["n"] == 4
    assert read(f"gs://{BUCKET}/eval/toy/{TRANSCRIPTS}") == read(tmp_path / "eval" / TRANSCRIPTS)
    assert json.loads(as_path(f"gs://{BUCKET}/eval/toy/{SUMMARY}").read_text())["n"] == 4
    again = evaluate(config(RUN, f"gs://{BUCKET}/eval/toy"), progress=False)
    assert again["n"] == 4 and again["episodes_this_run"] == 0


def test_bucket_writes_appear_whole_or_not_at_all(emulator):
    """In a bucket: a failed atomic_write leaves no object; a directory's files appear with config.json, or none
    of them if its block fails; an AppendFile holds its lines until it uploads (every write, or at most every N s)."""
    with pytest.raises(RuntimeError), atomic_write(f"gs://{BUCKET}/w/result.json") as f:
        f.write("{partial")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError), atomic_directory(f"gs://{BUCKET}/w/model") as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")
    assert bucket_files("w") == set()
    with atomic_directory(f"gs://{BUCKET}/w/model") as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "params").mkdir()
        (tmp / "params" / "a").write_bytes(b"x")
    assert bucket_files("w") == {"model/config.json", "model/params/a"}
    log = AppendFile(f"gs://{BUCKET}/w/log.jsonl", upload_every_s=3600)
    log.write("1\n")  # the first write uploads at once
    log.write("2\n")
    assert as_path(f"gs://{BUCKET}/w/log.jsonl").read_text() == "1\n"
    log.close()
    assert as_path(f"gs://{BUCKET}/w/log.jsonl").read_text() == "1\n2\n"
    with AppendFile(f"gs://{BUCKET}/w/log.jsonl") as log:  # reopened: appends after what is there
        log.write("3\n")
    assert as_path(f"gs://{BUCKET}/w/log.jsonl").read_text() == "1\n2\n3\n"
