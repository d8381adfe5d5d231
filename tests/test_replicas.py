"""Replicas in the emulator and the "both paths" deploy matrix (#17 item 2 and "Done when"):
a deployment starts its minimum replicas, spreads requests across them, reads its autoscaling
spec back and stops them all when undeployed; every text model of the catalog and one vision
model deploy with Spot and a replica range by the vLLM container and by Model Garden."""

from __future__ import annotations

import urllib.request

import pytest
from google.cloud import aiplatform

import nbhelpers
from nbhelpers import catalog
from nbhelpers import emulator as emulator_module
from nbhelpers.model_garden import DEPLOY_WITH, MODEL_GARDEN
from tests.conftest import ALICE, FAKE_TOKEN, emulator_logs, use_emulator

TEXT_MODELS = sorted(name for name, spec in catalog.MODELS.items() if spec.modality == "text")
VISION_MODEL = "Llama-3.2-11B-Vision-Instruct"
DUTY_CYCLE = "aiplatform.googleapis.com/prediction/online/accelerator/duty_cycle"


def _health_urls(replicas) -> list[str]:
    return [replica.url + replica.health_route for replica in replicas]


def _answers(health_url: str) -> bool:
    """Whether a replica's server still answers its health route (a stopped one refuses)."""
    try:
        with urllib.request.urlopen(health_url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def shared_emulator(tmp_path_factory):
    """One emulator for the module: deployments finish at once, and each test cleans up."""
    running = emulator_module.start(
        state_file=tmp_path_factory.mktemp("replicas") / "emulator.json", deploy_seconds=0.0)
    yield running
    running.stop()


@pytest.fixture
def run(monkeypatch, tmp_path, shared_emulator):
    """Alice's run against the shared emulator, with a Hugging Face token; it must leave
    nothing behind (no endpoint, model or running replica)."""
    use_emulator(monkeypatch, shared_emulator.url, tmp_path / "state")
    monkeypatch.setenv("NBHELPERS_EMULATOR_IDENTITY", ALICE)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    session = nbhelpers.connect(project="test-project", run_id="run-r", quiet=True)
    yield session
    nbhelpers.cleanup(session, dry_run=False)
    assert aiplatform.Endpoint.list() == [] and aiplatform.Model.list() == []
    assert shared_emulator.vertex.replicas == {}


def test_a_deployment_starts_its_minimum_replicas_and_spreads_requests_across_them(
        run, shared_emulator):
    plan = nbhelpers.plan_deployment("Llama-3.2-1B-Instruct", ask_for_token=False,
                                     scaling=nbhelpers.Scaling(min_replicas=2, max_replicas=3,
                                                               spot=True, targets={
                                                                   "gpu_duty_cycle": 60}))
    deployment = nbhelpers.deploy(run, plan)
    replicas = shared_emulator.vertex.replicas[deployment.deployed_model_id]
    urls = _health_urls(replicas)
    assert len(urls) == 2 and urls[0] != urls[1] and all(map(_answers, urls))

    logs = emulator_logs(shared_emulator, deployment.endpoint_id)
    for index in (1, 2):  # each replica logged its own start-up, once
        started = [line for line in logs if line.startswith(f"[replica {index}/2] ")
                   and "Started server process" in line]
        assert len(started) == 1, logs

    served = aiplatform.Endpoint(deployment.endpoint_name).gca_resource.deployed_models[0]
    resources = served.dedicated_resources
    assert (resources.min_replica_count, resources.max_replica_count, resources.spot) == \
        (2, 3, True)
    assert [(s.metric_name, s.target) for s in resources.autoscaling_metric_specs] == [
        (DUTY_CYCLE, 60)]
    assert served.status.available_replica_count == 2  # the minimum: no autoscaling above it
    # The serving quota is charged for the most replicas (3 x 1 L4), not the 2 running, and
    # Spot VMs' own quota is charged, not the on-demand one.
    assert shared_emulator.vertex.quotas.gpus_in_use("test-project") == {
        ("NVIDIA_L4", "us-central1", True): 3}
    from nbhelpers.quota import serving_quota  # what the check before a deploy reads

    assert serving_quota(run, plan.hardware, spot=True).in_use == 3
    assert serving_quota(run, plan.hardware).in_use == 0

    for prompt in ("one", "two", "three", "four"):
        assert nbhelpers.predict(deployment, prompt, max_tokens=2)[0].raw.startswith(
            f"Prompt:\n{prompt}")
    assert "rehearsal" in nbhelpers.chat(deployment, "Hello", max_tokens=4)
    assert [r.requests_received for r in replicas] == [3, 2]  # in turn, chat included

    deployment.endpoint().undeploy_all()
    assert deployment.deployed_model_id not in shared_emulator.vertex.replicas
    assert not any(map(_answers, urls))  # both stopped


def _matrix() -> list[object]:
    return [pytest.param(model, path, id=f"{model}-{path}")
            for model in [*TEXT_MODELS, VISION_MODEL] for path in DEPLOY_WITH]


@pytest.mark.parametrize(("model", "path"), _matrix())
def test_every_text_model_and_a_vision_model_deploy_by_both_paths_with_spot_and_a_range(
        run, shared_emulator, model, path):
    # Model Garden's OpenModel.deploy takes no autoscaling targets (the plan refuses them).
    targets = {} if path == MODEL_GARDEN else {"gpu_duty_cycle": 70}
    plan = nbhelpers.plan_deployment(
        model, ask_for_token=False, deploy_with=path, accept_eula=path == MODEL_GARDEN,
        scaling=nbhelpers.Scaling(min_replicas=1, max_replicas=2, spot=True, targets=targets))
    deployment = nbhelpers.deploy(run, plan)
    assert len(shared_emulator.vertex.replicas[deployment.deployed_model_id]) == 1
    served = aiplatform.Endpoint(deployment.endpoint_name).gca_resource.deployed_models[0]
    resources = served.dedicated_resources
    assert (resources.min_replica_count, resources.max_replica_count, resources.spot) == \
        (1, 2, True)
    assert {s.metric_name: s.target for s in resources.autoscaling_metric_specs} == (
        {} if path == MODEL_GARDEN else {DUTY_CYCLE: 70})
    assert resources.machine_spec.machine_type == plan.hardware.machine_type
    assert served.status.available_replica_count == 1
    assert nbhelpers.predict(deployment, "What is a car?", max_tokens=3)[0].raw.startswith(
        "Prompt:\nWhat is a car?")


def test_an_emulator_restarted_from_its_state_file_starts_every_replica_again(
        monkeypatch, tmp_path):
    state_file = tmp_path / "emulator.json"
    first = emulator_module.start(state_file=state_file, deploy_seconds=0.0)
    try:
        use_emulator(monkeypatch, first.url, tmp_path / "state")
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        session = nbhelpers.connect(project="test-project", run_id="run-s", quiet=True)
        deployment = nbhelpers.deploy(session, nbhelpers.plan_deployment(
            "Llama-3.2-1B", ask_for_token=False,
            scaling=nbhelpers.Scaling(min_replicas=2, max_replicas=2)))
        before = _health_urls(first.vertex.replicas[deployment.deployed_model_id])
        assert len(before) == 2 and all(map(_answers, before))
    finally:
        first.stop()
    assert not any(map(_answers, before))  # the emulator's stop ends every replica

    again = emulator_module.start(state_file=state_file, deploy_seconds=0.0)
    try:
        after = again.vertex.replicas[deployment.deployed_model_id]
        assert len(after) == 2 and all(map(_answers, _health_urls(after)))
        use_emulator(monkeypatch, again.url, tmp_path / "state")
        session = nbhelpers.connect(project="test-project", run_id="run-s", quiet=True)
        served = nbhelpers.reconnect(session, deployment.endpoint_id)
        for prompt in ("a", "b"):
            assert nbhelpers.predict(served, prompt, max_tokens=2)[0].raw.startswith(
                f"Prompt:\n{prompt}")
        assert [r.requests_received for r in after] == [1, 1]
        nbhelpers.cleanup(session, dry_run=False)
        assert again.vertex.replicas == {}
    finally:
        again.stop()
