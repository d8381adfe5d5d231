"""One deployment per run and model, whatever happens to kernels, and cleanup that outlasts a
deployment in progress: against the emulator, with kernels played by separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.cloud import aiplatform

import nbhelpers
from tests.conftest import FAKE_TOKEN

ROOT = Path(__file__).resolve().parent.parent
# A kernel: connects to the same emulator and run (the environment carries them), deploys the
# 8B model and prints the endpoint it ends with.
KERNEL = """
import nbhelpers
session = nbhelpers.connect(project="test-project", run_id={run_id!r}, quiet=True)
plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", ask_for_token=False)
print("ENDPOINT", nbhelpers.deploy(session, plan).endpoint_id, flush=True)
"""


def _kernel(run_id: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", KERNEL.format(run_id=run_id)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _pending_deploys(emulator) -> list[str]:
    return [name for name, op in emulator.vertex.state.data["operations"].items()
            if not op["done"] and "DeployModel" in json.dumps(op.get("metadata", {}))]


def _wait_for_a_deploy_in_flight(emulator, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not _pending_deploys(emulator):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no deployment started: {process.communicate()[0]}")
        time.sleep(0.1)


def _deployed_models(emulator) -> list[str]:
    return [d["id"] for e in emulator.vertex.state.data["endpoints"].values()
            for d in e["deployedModels"]]


def test_a_killed_kernels_rerun_waits_for_its_deployment_and_uses_it(session, env, emulator):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    emulator.vertex.deploy_seconds = 4.0
    first = _kernel(session.settings.run_id)
    _wait_for_a_deploy_in_flight(emulator, first)
    first.send_signal(signal.SIGKILL)  # the kernel dies; its deployment goes on
    first.wait()
    plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", ask_for_token=False)
    deployment = nbhelpers.deploy(session, plan)  # the cell, run again
    assert len(emulator.vertex.state.data["endpoints"]) == 1
    assert len(emulator.vertex.state.data["models"]) == 1
    assert _deployed_models(emulator) == [deployment.deployed_model_id]
    assert nbhelpers.predict(deployment, "Still there?", max_tokens=8)[0].text


def test_two_kernels_racing_on_one_run_end_with_one_deployment(session, env, emulator):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    emulator.vertex.deploy_seconds = 2.0
    kernels = [_kernel(session.settings.run_id) for _ in range(2)]
    outputs = [k.communicate(timeout=120)[0] for k in kernels]
    assert all(k.returncode == 0 for k in kernels), outputs
    ends = {line for out in outputs for line in out.splitlines() if line.startswith("ENDPOINT")}
    assert len(ends) == 1, outputs  # both kernels end with the same endpoint
    assert any("Reusing the live deployment" in out for out in outputs), outputs
    assert len(emulator.vertex.state.data["endpoints"]) == 1
    assert len(emulator.vertex.state.data["models"]) == 1
    assert len(_deployed_models(emulator)) == 1


def test_cleanup_waits_out_a_deployment_that_cannot_be_deleted_yet(session, env, emulator,
                                                                   capsys):
    """35 s: longer than the half minute the old cleanup retried before giving up."""
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    emulator.vertex.deploy_seconds = 35.0
    kernel = _kernel(session.settings.run_id)
    _wait_for_a_deploy_in_flight(emulator, kernel)
    kernel.send_signal(signal.SIGKILL)
    kernel.wait()
    endpoint = aiplatform.Endpoint.list()[0]
    with pytest.raises(Exception, match="being deployed"):  # what Vertex AI answers meanwhile
        endpoint.delete(force=True)
    nbhelpers.cleanup(session, dry_run=False)
    assert "A deployment is in progress on endpoint" in capsys.readouterr().out
    assert emulator.vertex.state.data["endpoints"] == {}
    assert emulator.vertex.state.data["models"] == {}
    assert len(nbhelpers.find_resources(session)) == 0


def test_cleanup_deletes_the_runs_files_and_never_the_shared_bucket(session):
    nbhelpers.prepare_project(session)  # creates the staging bucket
    client = session.storage_client()
    bucket = client.bucket(session.settings.bucket_name)
    mine = session.settings.files_prefix() + "weights/config.json"
    others = ["someone-else/notes.txt",  # a colleague's file at the top of the bucket
              session.settings.files_prefix().replace(session.settings.run_id, "other-run")
              + "weights/config.json"]  # another run of the same owner
    for name in (mine, *others):
        bucket.blob(name).upload_from_string("{}")
    assert session.settings.files_uri.startswith(session.settings.bucket_uri + "/nbhelpers-runs/")
    listed = nbhelpers.find_resources(session, include_files=True)
    assert [f.name for f in listed.files] == [mine]
    nbhelpers.cleanup(session, dry_run=False)
    assert client.lookup_bucket(session.settings.bucket_name) is not None
    # The run's state mirror stays: it records the cleanup (nbhelpers.state.BucketMirror).
    mirror = session.settings.files_prefix() + "state.json"
    assert sorted(b.name for b in client.list_blobs(session.settings.bucket_name)) == sorted(
        [*others, mirror])
