"""State that survives the runtime (#13 item 3): every save of the run state is mirrored to the
run's folder of the bucket; a recycled runtime (a new, empty state directory) gets it back by
run id or as "latest", and its cleanup deletes what the first runtime deployed."""

from __future__ import annotations

import json

import pytest
from google.cloud import aiplatform

import nbhelpers
from nbhelpers import state
from nbhelpers.errors import ConfigError
from tests.conftest import ALICE, FAKE_TOKEN


def _mirrored(session) -> dict:
    blob = session.storage_client().bucket(session.settings.bucket_name).blob(
        session.settings.files_prefix() + state.MIRROR_FILE)
    return json.loads(blob.download_as_bytes())


def _recycle(env, tmp_path, name: str) -> None:
    """A new runtime: its state directory is empty (Colab's home folder is gone)."""
    env.setenv("NBHELPERS_STATE_DIR", str(tmp_path / name))


def test_a_recycled_runtime_restores_the_run_and_its_cleanup_deletes_the_deployment(
        session, env, tmp_path, capsys):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    nbhelpers.prepare_project(session)
    plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", ask_for_token=False)
    deployment = nbhelpers.deploy(session, plan)
    mirrored = _mirrored(session)
    assert mirrored["deployments"]["llama-3-1-8b-instruct"]["endpoint_name"] == \
        deployment.endpoint_name
    assert mirrored["service_account"] == session.state.get("service_account")

    _recycle(env, tmp_path, "runtime-2")
    assert state.current_run_id() is None  # nothing of the run is on this runtime
    again = nbhelpers.connect(project="test-project", run_id="latest")
    said = capsys.readouterr().out
    assert again.settings.run_id == "run-a"
    assert "Restored the state of run run-a from gs://test-project-llama-us-central1/" \
        "nbhelpers-runs/" in said
    assert again.state.deployments["llama-3-1-8b-instruct"]["deployed_model_id"] == \
        deployment.deployed_model_id
    assert again.state.path.exists()  # written to the new runtime too

    removed = nbhelpers.cleanup(again, dry_run=False)
    assert [e.resource_name for e in removed.endpoints] == [deployment.endpoint_name]
    assert aiplatform.Endpoint.list() == [] and aiplatform.Model.list() == []
    assert _mirrored(again)["deployments"] == {}  # the forgetting is mirrored too


def test_latest_is_the_owners_newest_mirrored_run_not_anyone_elses(env, tmp_path):
    env.setenv("NBHELPERS_EMULATOR_IDENTITY", ALICE)
    first = nbhelpers.connect(project="test-project", run_id="older", quiet=True)
    nbhelpers.prepare_project(first)
    nbhelpers.connect(project="test-project", run_id="newer", quiet=True)
    env.setenv("NBHELPERS_EMULATOR_IDENTITY", "bob@example.com")
    nbhelpers.connect(project="test-project", run_id="bobs-run", quiet=True)

    _recycle(env, tmp_path, "alice-new-runtime")
    env.setenv("NBHELPERS_EMULATOR_IDENTITY", ALICE)
    assert nbhelpers.connect(project="test-project", run_id="latest",
                             quiet=True).settings.run_id == "newer"
    _recycle(env, tmp_path, "carol-runtime")
    env.setenv("NBHELPERS_EMULATOR_IDENTITY", "carol@example.com")
    with pytest.raises(ConfigError, match="no run of carol@example.com is mirrored"):
        nbhelpers.connect(project="test-project", run_id="latest", quiet=True)


def test_a_mirror_that_fails_is_said_once_and_the_local_state_is_kept(env, tmp_path, capsys):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    def unreachable() -> storage.Client:  # a port nothing listens on
        return storage.Client(project="test-project", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": "http://127.0.0.1:9"})

    mirror = state.BucketMirror(unreachable, "some-bucket", "nbhelpers-runs/x/r/state.json")
    run = state.RunState("r", tmp_path / "states", mirror=mirror)
    run.update(step=1)
    run.update(step=2)
    said = capsys.readouterr().out
    assert said.count("could not copy the run state to gs://some-bucket/") == 1
    assert json.loads(run.path.read_text())["step"] == 2


def test_the_billing_list_shows_every_deployed_model_labelled_or_not(session, env):
    from nbhelpers import teardown

    env.setenv("HF_TOKEN", FAKE_TOKEN)
    plan = nbhelpers.plan_deployment("Llama-3.2-1B-Instruct", ask_for_token=False)
    mine = nbhelpers.deploy(session, plan)
    container = plan.container  # someone's deployment by hand with the SDK: no labels at all
    by_hand = aiplatform.Model.upload(
        display_name="by-hand", serving_container_image_uri=container.image_uri,
        serving_container_args=container.args,
        serving_container_environment_variables=container.env,
        serving_container_ports=[container.port],
        serving_container_predict_route=container.predict_route,
        serving_container_health_route=container.health_route)
    by_hand.deploy(machine_type="g2-standard-24", accelerator_type="NVIDIA_L4",
                   accelerator_count=2)
    aiplatform.Endpoint.create(display_name="empty")  # nothing deployed: nothing billed
    found = teardown.billing_deployments(session)
    assert sorted((d.endpoint_name == mine.endpoint_name, d.machine_type, d.accelerator_count)
                  for d in found) == [(False, "g2-standard-24", 2),
                                      (True, plan.hardware.machine_type, 1)]
    said = teardown.describe_billing(found)
    assert said.startswith("2 deployed model(s) bill in the session's region")
    assert "not the suite's (no nbh- labels)" in said
    assert f"owner label {session.settings.owner}, run run-a" in said
    assert "1 x g2-standard-24 (2 x NVIDIA_L4)" in said and "/hour" in said
    assert len(aiplatform.Endpoint.list()) == 3  # read-only: nothing was deleted


@pytest.mark.notebooks
def test_the_cleanup_notebook_on_a_recycled_runtime_deletes_the_runs_deployment(
        session, env, emulator, tmp_path):
    from pathlib import Path

    from nbhelpers.run_config import RunConfig
    from nbhelpers.runner import run

    env.setenv("HF_TOKEN", FAKE_TOKEN)
    nbhelpers.prepare_project(session)
    deployment = nbhelpers.deploy(session, nbhelpers.plan_deployment(
        "Llama-3.2-1B-Instruct", ask_for_token=False))
    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    # The runner's kernels keep their state in a directory of their own: a new runtime.
    report = run(RunConfig(notebooks, tmp_path / "recycled", run_id="run-a", progress=False,
                           only=("05_cleanup.ipynb",),
                           environment={"NBHELPERS_EMULATOR_URL": emulator.url,
                                        "NBHELPERS_EMULATOR_IDENTITY": ALICE,
                                        "GOOGLE_CLOUD_PROJECT": "test-project"}))
    assert [(r.notebook, r.ok) for r in report.runs] == [("05_cleanup.ipynb", True)], \
        [r.error for r in report.runs]
    executed = (tmp_path / "recycled" / "run-a" / "05_cleanup.ipynb").read_text()
    assert "Restored the state of run run-a from gs://" in executed
    assert deployment.endpoint_name.split("/")[-1] in executed
    assert "No deployed model in the session's region" in executed
    assert emulator.vertex.state.data["endpoints"] == {}
    assert emulator.vertex.state.data["models"] == {}
