"""The Model Garden path (`OpenModel.deploy`), over HTTP against the emulator: the SDK's own
calls, the plan next to Google's verified configurations, and everything after deploying
(predict, chat, diagnose, reconnect, cleanup by labels) on a text and a vision model."""

from __future__ import annotations

import json
import urllib.request

import pytest
from google.api_core import exceptions
from google.cloud import aiplatform

import nbhelpers
from nbhelpers import images
from nbhelpers.emulator.vertex_ai import TOKEN_PLACEHOLDER
from nbhelpers.errors import ConfigError, DeploymentError
from nbhelpers.model_garden import publisher_model, verified_options
from nbhelpers.validate import label_value
from tests.conftest import ALICE, FAKE_TOKEN


def _plan(model: str, **kwargs):
    return nbhelpers.plan_deployment(model, ask_for_token=False, deploy_with="model-garden",
                                     **kwargs)


def _labels(resource) -> dict[str, str]:
    labels = dict(resource.labels)
    assert labels.pop("nbh-expires")
    return labels


def test_the_sdk_reads_verified_options_and_the_eula_as_google_serves_them(session):
    from vertexai.model_garden import OpenModel

    spec = nbhelpers.get_model("Llama-3.1-8B-Instruct")
    assert publisher_model(spec) == "meta/llama3_1@llama-3.1-8b-instruct"
    assert publisher_model(nbhelpers.get_model("Llama-3.2-11B-Vision-Instruct")) == \
        "meta/llama3-2@llama-3.2-11b-vision-instruct"
    options = verified_options(spec)
    assert [(o.machine_type, o.accelerator_type, o.fast) for o in options] == [
        ("g2-standard-12", "NVIDIA_L4", False), ("a2-ultragpu-1g", "NVIDIA_A100_80GB", True)]
    assert options[0].settings["max_model_len"] == 8192
    concise = OpenModel("meta/llama3_1@llama-3.1-8b-instruct").list_deploy_options(concise=True)
    assert '[Option 2: vLLM Fast Deployment]' in concise
    model = OpenModel("meta/llama3-2@llama-3.2-1b-instruct")
    assert model.check_license_agreement_status() is False
    with pytest.raises(exceptions.BadRequest, match="EULA.*accept_eula=True"):
        model.deploy(machine_type="g2-standard-8", accelerator_type="NVIDIA_L4",
                     accelerator_count=1)
    assert aiplatform.Endpoint.list() == [] and aiplatform.Model.list() == []
    accepted = model.accept_model_license_agreement()
    assert accepted.publisher_model_eula_acked
    # The licence is the model family's: another version of it is accepted too.
    assert OpenModel("meta/llama3-2@llama-3.2-3b").check_license_agreement_status() is True
    with pytest.raises(exceptions.NotFound, match="not found"):
        OpenModel("meta/llama3_1@llama-9-unknown").list_deploy_options()


def test_a_plan_shows_where_it_differs_from_googles_verified_configurations(session, env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    plan = _plan("Llama-3.1-8B-Instruct", accept_eula=True)
    text = plan.describe()
    assert "deploy:     model-garden" in text
    assert "Google's verified configurations of meta/llama3_1@llama-3.1-8b-instruct" in text
    first = next(line for line in text.splitlines() if line.strip().startswith("1. vLLM:"))
    assert "g2-standard-12 (1 x NVIDIA_L4), image 20241210_0916_RC00" in first
    differs = text.splitlines()[text.splitlines().index(first) + 1]
    assert "image 20250710_0916_RC01 vs 20241210_0916_RC00" in differs
    assert "max_model_len 4096 vs 8192" in differs
    assert "machine" not in differs  # the same machine as Google's first option
    fast = text.split("2. vLLM Fast Deployment (Fast Deployment)")[1]
    assert "machine g2-standard-12 vs a2-ultragpu-1g" in fast
    with pytest.raises(ConfigError, match="deploy_with.*'vllm-container', 'model-garden'"):
        nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", ask_for_token=False,
                                  deploy_with="garden")
    with pytest.raises(ConfigError, match="no autoscaling targets"):
        _plan("Llama-3.1-8B-Instruct",
              scaling=nbhelpers.Scaling(max_replicas=2, targets={"gpu_duty_cycle": 60}))


def test_model_garden_deploys_serve_reconnect_and_clean_up(session, env, capsys):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    text_plan = _plan("Llama-3.1-8B-Instruct", dedicated_endpoint=True)
    with pytest.raises(ConfigError, match="not accepted the licence.*ACCEPT_EULA = True"):
        nbhelpers.deploy(session, text_plan)
    assert aiplatform.Endpoint.list() == []  # refused before anything was created

    text_plan = _plan("Llama-3.1-8B-Instruct", dedicated_endpoint=True, accept_eula=True)
    text = nbhelpers.deploy(session, text_plan)
    endpoint = text.endpoint()
    expected = {"nbh-suite": "vertex-llama", "nbh-run": "run-a",
                "nbh-owner": label_value(ALICE), "nbh-model": "llama-3-1-8b-instruct"}
    assert _labels(endpoint) == expected
    model = aiplatform.Model(text.model_resource)
    assert _labels(model) == expected
    assert endpoint.gca_resource.dedicated_endpoint_enabled
    # The plan's container ran, and the token reached it as Model Garden's argument only.
    spec = model.gca_resource.container_spec
    assert spec.image_uri == text_plan.container.image_uri
    assert list(spec.args) == text_plan.container.args
    assert {e.name: e.value for e in spec.env}["HF_TOKEN"] == TOKEN_PLACEHOLDER
    assert session.state.deployments["llama-3-1-8b-instruct"]["status"] == "deployed"

    assert nbhelpers.predict(text, "What is a car?", max_tokens=4)[0].raw.startswith(
        "Prompt:\nWhat is a car?\nOutput:\n")
    assert "rehearsal" in nbhelpers.chat(text, "Hello", max_tokens=8)
    assert nbhelpers.diagnose_endpoint(session, text.endpoint_id).healthy
    assert nbhelpers.reconnect(session, text.endpoint_id).model_name == "Llama-3.1-8B-Instruct"
    again = nbhelpers.deploy(session, text_plan)  # the run's deployment is reused
    assert again.endpoint_name == text.endpoint_name and len(aiplatform.Endpoint.list()) == 1

    vision = nbhelpers.deploy(session, _plan("Llama-3.2-11B-Vision-Instruct", accept_eula=True,
                                             dedicated_endpoint=False))
    assert not vision.endpoint().gca_resource.dedicated_endpoint_enabled
    reply = nbhelpers.predict_image(vision, images.sample_image(1120, 840), "What is this?")
    assert "an image of 1120x840 pixels" in reply.text
    assert nbhelpers.reconnect(session, vision.endpoint_id).model_name == \
        "Llama-3.2-11B-Vision-Instruct"

    assert len(nbhelpers.find_resources(session)) == 4
    nbhelpers.cleanup(session, dry_run=False)
    assert aiplatform.Endpoint.list() == [] and aiplatform.Model.list() == []
    assert FAKE_TOKEN not in capsys.readouterr().out + json.dumps(session.state.deployments)


def test_a_failed_model_garden_deploy_keeps_labelled_resources_for_cleanup(session, env,
                                                                          emulator):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    request = urllib.request.Request(f"{emulator.url}/emulator/fail-next-deploy",
                                     json.dumps({"cause": "oom"}).encode(),
                                     {"Content-Type": "application/json"})
    urllib.request.urlopen(request).close()
    with pytest.raises(DeploymentError, match="(?s)through Model Garden failed.*Model server "
                       "exited.*are kept"):
        nbhelpers.deploy(session, _plan("Llama-3.2-1B-Instruct", accept_eula=True))
    record = session.state.deployments["llama-3-2-1b-instruct"]
    assert record["status"] == "failed"
    report = nbhelpers.diagnose_endpoint(session, record["endpoint_name"].split("/")[-1])
    assert report.diagnosis.kind == "oom"
    assert len(nbhelpers.find_resources(session)) == 2  # both labelled although the deploy failed
    retry = nbhelpers.deploy(session, _plan("Llama-3.2-1B-Instruct"))  # licence now accepted
    assert retry.endpoint_name != record["endpoint_name"]  # the empty one was deleted
    assert len(aiplatform.Endpoint.list()) == 1
    nbhelpers.cleanup(session, dry_run=False)
    assert aiplatform.Endpoint.list() == [] and aiplatform.Model.list() == []


def test_an_endpoint_googles_notebook_cell_deployed_is_reconnected(session, env):
    """OpenModel.deploy with Google's verified configuration, no overrides: the container names
    the model by its older Meta id, which reconnect takes as an alias."""
    from vertexai.model_garden import OpenModel

    endpoint = OpenModel("meta/llama3_1@llama-3.1-8b-instruct").deploy(
        accept_eula=True, machine_type="g2-standard-12", accelerator_type="NVIDIA_L4",
        accelerator_count=1, use_dedicated_endpoint=True)
    model = aiplatform.Model(endpoint.gca_resource.deployed_models[0].model)
    env_vars = {e.name: e.value for e in model.gca_resource.container_spec.env}
    assert env_vars["MODEL_ID"] == "meta-llama/Meta-Llama-3.1-8B-Instruct"
    source = model.gca_resource.base_model_source.model_garden_source
    assert (source.public_model_name, source.version_id) == (
        "publishers/meta/models/llama3_1", "llama-3.1-8b-instruct")
    deployment = nbhelpers.reconnect(session, endpoint.name)
    assert deployment.model_name == "Llama-3.1-8B-Instruct" and deployment.dedicated_endpoint
    assert nbhelpers.predict(deployment, "Hi", max_tokens=3)[0].raw.startswith("Prompt:\nHi")


def test_the_endpoint_and_model_are_labelled_while_the_deployment_runs(session, env, emulator):
    """A kernel that dies during the (long) deployment leaves resources cleanup can find."""
    import concurrent.futures
    import time

    env.setenv("HF_TOKEN", FAKE_TOKEN)
    emulator.vertex.deploy_seconds = 3.0
    plan = _plan("Llama-3.2-1B-Instruct", accept_eula=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(nbhelpers.deploy, session, plan)
        deadline = time.monotonic() + 2.5
        while len(nbhelpers.find_resources(session)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(nbhelpers.find_resources(session)) == 2 and not running.done()
        record = dict(session.state.deployments["llama-3-2-1b-instruct"])
        assert record["status"] == "deploying"
        deployment = running.result(timeout=30)
    assert deployment.endpoint_name == record["endpoint_name"]
    assert deployment.model_resource == record["model_resource"]


def test_every_catalog_model_has_a_publisher_model_whose_configurations_start():
    """Each catalog model is served by the emulator's Model Garden under its publisher name, and
    each of its verified configurations names the model (MODEL_ID, an older Meta id for 3.1)
    and starts by the memory plan: a default Model Garden deploy is a good rehearsal."""
    from nbhelpers import catalog, planner
    from nbhelpers.container import memory_inputs
    from nbhelpers.emulator.model_garden import PUBLISHER_MODELS

    checked = 0
    for spec in catalog.MODELS.values():
        resource = PUBLISHER_MODELS[publisher_model(spec)].resource()
        for option in resource["supportedActions"]["multiDeployVertex"]["multiDeployVertex"]:
            container, machine = option["containerSpec"], option["dedicatedResources"][
                "machineSpec"]
            env = {e["name"]: e["value"] for e in container["env"]}
            assert catalog.get_model(env["MODEL_ID"]) is spec
            plan = planner.plan_memory(accelerator=machine["acceleratorType"],
                                       suggest_fixes=False, **memory_inputs(
                                           spec, container["args"], container["imageUri"]))
            assert plan.ok, (spec.name, machine["machineType"], plan.reason)
            checked += 1
    assert checked == len(catalog.MODELS) + 1  # one Fast Deployment option (8B Instruct)
