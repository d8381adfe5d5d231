"""setup -> deploy -> predict -> cleanup through nbhelpers, against the emulator over HTTP."""

from __future__ import annotations

import pytest
from google.cloud import aiplatform

import nbhelpers
from nbhelpers.errors import ConfigError, DeploymentError
from nbhelpers.hardware import Hardware
from nbhelpers.quota import require_quota, serving_quota
from nbhelpers.validate import label_value
from tests.conftest import ALICE, FAKE_TOKEN


def test_prepare_project_is_idempotent(session):
    first = nbhelpers.prepare_project(session)
    assert first.enabled_apis == ["aiplatform.googleapis.com", "compute.googleapis.com",
                                  "cloudquotas.googleapis.com"]
    assert first.bucket_created and first.bucket_uri == "gs://test-project-llama-us-central1"
    assert first.service_account.endswith("-compute@developer.gserviceaccount.com")
    assert first.service_account.split("-")[0].isdigit()
    assert len(first.granted) == 3
    second = nbhelpers.prepare_project(session)
    assert second.enabled_apis == [] and len(second.already_enabled) == 3
    assert not second.bucket_created and second.granted == []
    bucket = session.storage_client().get_bucket(session.settings.bucket_name)
    assert bucket.location == "US-CENTRAL1"
    assert bucket.labels["nbh-owner"] == label_value(ALICE) == session.settings.owner
    assert session.state.get("service_account") == first.service_account


def test_bucket_in_another_region_is_refused(env):
    first = nbhelpers.connect(project="test-project", region="europe-west4",
                              bucket_uri="gs://shared-bucket-eu", run_id="r1", quiet=True)
    nbhelpers.prepare_project(first)
    other = nbhelpers.connect(project="test-project", region="us-central1",
                              bucket_uri="gs://shared-bucket-eu", run_id="r2", quiet=True)
    with pytest.raises(ConfigError, match="is in EUROPE-WEST4, not in us-central1"):
        nbhelpers.prepare_project(other)


def _plan(model="Llama-3.1-8B-Instruct", **kwargs):
    return nbhelpers.plan_deployment(model, family="llama3.1", ask_for_token=False, **kwargs)


def test_deploy_reuse_predict_cleanup(session, env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    nbhelpers.prepare_project(session)
    plan = _plan()
    deployment = nbhelpers.deploy(session, plan)
    endpoint = aiplatform.Endpoint(deployment.endpoint_name)
    labels = dict(endpoint.labels)
    assert labels.pop("nbh-expires")
    assert labels == {"nbh-suite": "vertex-llama", "nbh-run": "run-a",
                      "nbh-owner": label_value(ALICE),
                      "nbh-model": "llama-3-1-8b-instruct"}
    again = nbhelpers.deploy(session, plan)  # same run id: no second deployment
    assert again.endpoint_name == deployment.endpoint_name
    assert len(aiplatform.Endpoint.list()) == 1 and len(aiplatform.Model.list()) == 1

    completions = nbhelpers.predict(deployment, ["What is a car?", "Why?"], max_tokens=12)
    assert [c.prompt for c in completions] == ["What is a car?", "Why?"]
    assert completions[0].raw.startswith("Prompt:\nWhat is a car?\nOutput:\n")
    assert len(completions[0].text.split()) == 12 and "rehearsal" in completions[0].text

    reconnected = nbhelpers.reconnect(session, deployment.endpoint_id)
    assert reconnected.model_name == "Llama-3.1-8B-Instruct"

    dry = nbhelpers.cleanup(session, dry_run=True)
    assert len(dry) == 2 and len(nbhelpers.find_resources(session)) == 2
    nbhelpers.cleanup(session, dry_run=False)
    assert len(nbhelpers.find_resources(session)) == 0
    assert aiplatform.Endpoint.list() == [] and aiplatform.Model.list() == []
    assert session.state.deployments == {}


def test_cleanup_never_touches_other_resources(session, env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    nbhelpers.deploy(session, _plan())
    unlabelled = aiplatform.Endpoint.create(display_name="someone-elses")
    labels = dict(session.settings.labels())
    other_owner = aiplatform.Endpoint.create(display_name="bob",
                                             labels={**labels, "nbh-owner": "bob"})
    other_run = aiplatform.Endpoint.create(display_name="older",
                                           labels={**labels, "nbh-run": "run-b"})
    nbhelpers.cleanup(session, dry_run=False)
    left = {e.display_name for e in aiplatform.Endpoint.list()}
    assert left == {"someone-elses", "bob", "older"}
    nbhelpers.cleanup(session, dry_run=False, whole_owner=True)
    assert {e.display_name for e in aiplatform.Endpoint.list()} == {"someone-elses", "bob"}
    assert unlabelled and other_owner and other_run


def test_bad_input_fails_before_anything_is_created(session, env):
    with pytest.raises(ConfigError, match="gated on Hugging Face"):
        _plan()
    with pytest.raises(ConfigError, match="unknown model 'Llama-3.1-9B'"):
        _plan("Llama-3.1-9B")
    with pytest.raises(ConfigError, match="malformed Cloud Storage URI"):
        _plan(weights_uri="gs:/bucket/llama")
    with pytest.raises(ConfigError, match="unknown machine type"):
        _plan(machine_type="g2-standard-7")
    assert _plan(weights_uri="gs://my-models/llama-3.1-8b").container.env.get("HF_TOKEN") is None
    assert aiplatform.Endpoint.list() == [] and aiplatform.Model.list() == []


def test_failed_deployment_is_reported_and_cleaned(session, env, emulator):
    import json
    import urllib.request

    env.setenv("HF_TOKEN", FAKE_TOKEN)
    plan = _plan()  # bad vLLM arguments are refused by the plan now: seed the failure instead
    request = urllib.request.Request(f"{emulator.url}/emulator/fail-next-deploy",
                                     json.dumps({"cause": "hf_auth"}).encode(),
                                     {"Content-Type": "application/json"})
    urllib.request.urlopen(request).close()
    with pytest.raises(DeploymentError, match="Model server exited unexpectedly") as failure:
        nbhelpers.deploy(session, plan)
    assert FAKE_TOKEN not in str(failure.value)
    assert session.state.deployments["llama-3-1-8b-instruct"]["status"] == "failed"
    # A corrected retry reuses the kept endpoint rather than leaking another.
    nbhelpers.deploy(session, _plan())
    assert len(aiplatform.Endpoint.list()) == 1
    nbhelpers.cleanup(session, dry_run=False)
    assert len(nbhelpers.find_resources(session)) == 0


@pytest.mark.parametrize("model, options, verdict, wording", [
    ("Llama-3.2-11B-Vision-Instruct", nbhelpers.VllmOptions(max_num_seqs=256), "oom",
     "torch.OutOfMemoryError: CUDA out of memory"),
    ("Llama-3.1-8B-Instruct", nbhelpers.VllmOptions(max_model_len=131072), "max_model_len",
     "To serve at least one request with the models's max seq len (131072)"),
])
def test_the_planner_stops_a_deploy_that_would_not_start(session, env, model, options,
                                                         verdict, wording):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    plan = nbhelpers.plan_deployment(model, options=options, ask_for_token=False)
    assert plan.memory.verdict == verdict and "memory:" in plan.describe()
    with pytest.raises(ConfigError, match="will not start on") as stopped:
        nbhelpers.deploy(session, plan)
    first_fix = plan.memory.fixes[0]
    parameters = first_fix.notebook_parameters()
    assert parameters and set(parameters) <= {"MAX_NUM_SEQS", "MAX_MODEL_LEN"}
    name, value = next(iter(parameters.items()))
    assert f"set {name} = {value!r}" in str(stopped.value)
    assert aiplatform.Endpoint.list() == [] and aiplatform.Model.list() == []
    # Forced, the emulator's replica fails as the planner predicts, in vLLM's own words.
    forced = nbhelpers.plan_deployment(model, options=options, ask_for_token=False, force=True)
    with pytest.raises(DeploymentError, match="Model server exited unexpectedly"):
        nbhelpers.deploy(session, forced)
    report = nbhelpers.diagnose_endpoint(session)
    assert report.diagnosis.kind == verdict, report.diagnosis
    assert any(wording in line for line in report.log_lines), report.log_lines
    # The debugging notebook's fix is the planner's, for this deployment's own settings.
    assert report.diagnosis.deploy_parameters == parameters
    assert report.diagnosis.details["planner_fixes"][0] == first_fix.summary


def test_a_good_start_logs_vllms_memory_report(session, env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    nbhelpers.deploy(session, _plan())
    report = nbhelpers.diagnose_endpoint(session)
    assert report.healthy
    assert any("GPU KV cache size:" in line for line in report.log_lines), report.log_lines


def test_dedicated_endpoint_is_served_over_https(session, env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    deployment = nbhelpers.deploy(session, _plan(dedicated_endpoint=True))
    endpoint = deployment.endpoint()
    assert endpoint.gca_resource.dedicated_endpoint_enabled
    assert endpoint.gca_resource.dedicated_endpoint_dns.startswith("127.0.0.1:")
    completion = nbhelpers.predict(deployment, "Over TLS?", max_tokens=4)[0]
    assert completion.raw.startswith("Prompt:\nOver TLS?\nOutput:\n")
    nbhelpers.cleanup(session, dry_run=False)


def test_cleanup_expired_spares_the_living_and_the_unlabelled(session, env):
    import time

    env.setenv("HF_TOKEN", FAKE_TOKEN)
    nbhelpers.deploy(session, _plan())
    labels = dict(session.settings.labels())
    stale = {**labels, "nbh-owner": "someone-else", "nbh-expires": "20200101-0000"}
    aiplatform.Endpoint.create(display_name="stale", labels=stale)
    aiplatform.Endpoint.create(display_name="unlabelled-old",
                               labels={"nbh-expires": "20200101-0000"})
    removed = nbhelpers.cleanup_expired(session, dry_run=False)
    assert [e.display_name for e in removed.endpoints] == ["stale"]
    names = {e.display_name for e in aiplatform.Endpoint.list()}
    assert "stale" not in names and "unlabelled-old" in names and len(names) == 2
    later = nbhelpers.cleanup_expired(session, dry_run=True, now=time.time() + 48 * 3600)
    assert len(later.endpoints) == 1 and len(later.models) == 1  # ours, once it has expired


def test_serving_quota_is_read_before_deploying(session, env, emulator):
    import json
    import urllib.request

    hardware = Hardware.for_machine("a3-highgpu-4g")
    check = require_quota(session, hardware)
    assert check.quota_id == "CustomModelServingH100GPUsPerProjectPerRegion"
    assert (check.limit, check.needed, check.enough) == (16, 4, True)
    request = urllib.request.Request(
        f"{emulator.url}/emulator/quota",
        json.dumps({"quota_id": check.quota_id, "region": "us-central1", "value": 2}).encode(),
        {"Content-Type": "application/json"})
    urllib.request.urlopen(request).close()
    with pytest.raises(ConfigError, match="limit 2, in use 0, this deployment needs 4.*increase"):
        require_quota(session, hardware)
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    with pytest.raises(ConfigError, match="not enough serving quota"):
        nbhelpers.deploy(session, _plan("Llama-3.1-70B-Instruct"))
    assert aiplatform.Endpoint.list() == []  # refused before anything was created
    other_region = nbhelpers.connect(project="test-project", region="europe-west4",
                                     run_id="run-eu", quiet=True)
    assert serving_quota(other_region, hardware).limit == 16
