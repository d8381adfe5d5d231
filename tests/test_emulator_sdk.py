"""The emulator against the unmodified SDKs (aiplatform over REST, openai, storage)."""

from __future__ import annotations

import json
import urllib.request

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform

from nbhelpers import emulator as emulator_module
from tests.conftest import emulator_logs

# --max-model-len: without it vLLM asks for the model's whole 131072-token context, which an L4's
# KV cache cannot hold, and the emulator (through the planner) refuses to start, as vLLM would.
ARGS = ["python", "-m", "vllm.entrypoints.api_server", "--host=0.0.0.0", "--port=8080",
        "--max-model-len=4096"]


@pytest.fixture
def vertex(emulator):
    aiplatform.init(project="sdk-project", location="us-central1", api_endpoint=emulator.url,
                    api_transport="rest", credentials=AnonymousCredentials())
    return emulator


def upload(model_id="meta-llama/Llama-3.1-8B-Instruct", extra=(), token="hf_fakeToken12345"):
    env = {"MODEL_ID": model_id, "DEPLOY_SOURCE": "notebook"}
    if token:
        env["HF_TOKEN"] = token
    return aiplatform.Model.upload(
        display_name="m", serving_container_image_uri="us-docker.pkg.dev/x/vllm:tag",
        serving_container_args=[*ARGS, f"--model={model_id}", *extra],
        serving_container_environment_variables=env, serving_container_ports=[8080],
        serving_container_predict_route="/generate", serving_container_health_route="/ping",
        labels={"team": "a"})


def deploy(model, endpoint):
    model.deploy(endpoint=endpoint, machine_type="g2-standard-12",
                 accelerator_type="NVIDIA_L4", accelerator_count=1)


def test_endpoints_create_list_filter_get_delete(vertex):
    a = aiplatform.Endpoint.create(display_name="a", labels={"team": "x", "run": "1"})
    aiplatform.Endpoint.create(display_name="b", labels={"team": "y"})
    assert [e.display_name for e in aiplatform.Endpoint.list(filter="labels.team=x")] == ["a"]
    assert len(aiplatform.Endpoint.list(filter='labels.team="x" AND labels.run=1')) == 1
    assert aiplatform.Endpoint.list(filter="labels.team=z") == []
    assert aiplatform.Endpoint(a.name).display_name == "a"
    a.delete()
    with pytest.raises(exceptions.NotFound):
        aiplatform.Endpoint(a.name).gca_resource  # noqa: B018 - the SDK may fetch lazily


def test_deploy_predict_undeploy_and_model_delete(vertex):
    endpoint = aiplatform.Endpoint.create(display_name="e")
    model = upload()
    deploy(model, endpoint)
    deployed = endpoint.gca_resource.deployed_models[0]
    assert deployed.dedicated_resources.machine_spec.accelerator_count == 1
    response = endpoint.predict(instances=[
        {"prompt": "Hello there", "max_tokens": 5, "temperature": 0.5},
        {"prompt": "Raw please", "max_tokens": 100, "raw_response": True}])
    first, second = response.predictions
    assert first.startswith("Prompt:\nHello there\nOutput:\n")
    assert len(first.split("Output:\n")[1].split()) == 5  # max_tokens honoured
    assert "rehearsal engine" in second and "Prompt:" not in second
    assert "temperature=None" in second and "max_tokens=100" in second
    with pytest.raises(exceptions.BadRequest, match="undeploy it first"):
        model.delete()  # still deployed: Vertex answers 400 FAILED_PRECONDITION
    endpoint.undeploy_all()
    model.delete()
    endpoint.delete()


def test_operations_poll_on_the_ui_path(vertex):
    endpoint = aiplatform.Endpoint.create(display_name="e")
    name = endpoint.gca_resource.name + "/operations/1"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{vertex.url}/ui/{name}")
    assert missing.value.code == 404
    vertex.vertex.deploy_seconds = 1.5  # long enough that the SDK must poll
    deploy(upload(), endpoint)
    ops = [n for n in vertex.vertex.state.data["operations"]
           if n.startswith(endpoint.resource_name)]
    with urllib.request.urlopen(f"{vertex.url}/ui/{ops[-1]}") as response:
        assert json.loads(response.read())["done"] is True


@pytest.mark.parametrize("extra, log_text", [
    (["--max-num-seqs=lots"], "argument --max-num-seqs: invalid int value: 'lots'"),
    (["--max-num-sequences=4"], "unrecognized arguments: --max-num-sequences=4"),
    (["--kv-cache-dtype=int4"], "invalid choice: 'int4'"),
    (["--tensor-parallel-size=3"], "attention heads (32) must be divisible by tensor parallel"),
])
def test_bad_container_args_fail_the_deployment_with_vllm_logs(vertex, extra, log_text):
    endpoint = aiplatform.Endpoint.create(display_name="e")
    with pytest.raises(exceptions.GoogleAPICallError, match="Model server exited unexpectedly"):
        deploy(upload(extra=extra), endpoint)
    assert any(log_text in line for line in emulator_logs(vertex, endpoint.name))
    assert aiplatform.Endpoint(endpoint.name).gca_resource.deployed_models == []


def test_gated_model_without_token_fails_like_hugging_face(vertex):
    endpoint = aiplatform.Endpoint.create(display_name="e")
    with pytest.raises(exceptions.GoogleAPICallError):
        deploy(upload(token=""), endpoint)
    assert any("GatedRepoError: 401" in line for line in emulator_logs(vertex, endpoint.name))


def test_token_is_not_kept_by_the_emulator(vertex, tmp_path):
    upload(token="hf_neverStoreThis999")
    state = (tmp_path / "emulator.json").read_text()
    assert "hf_neverStoreThis999" not in state and "HF_TOKEN" in state


def test_predict_payload_limit(vertex):
    endpoint = aiplatform.Endpoint.create(display_name="e")
    deploy(upload(), endpoint)
    with pytest.raises(exceptions.BadRequest, match="1572864 bytes"):
        endpoint.predict(instances=[{"prompt": "x" * 1_600_000}])


def test_chat_completions_through_openai(vertex):
    import openai

    endpoint = aiplatform.Endpoint.create(display_name="e")
    deploy(upload(), endpoint)
    client = openai.OpenAI(base_url=f"{vertex.url}/v1beta1/{endpoint.resource_name}",
                           api_key="not-checked-by-the-emulator")
    reply = client.chat.completions.create(model="", max_tokens=7, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}])
    assert reply.usage.completion_tokens == 7
    assert reply.choices[0].finish_reason == "length"
    assert "rehearsal" in reply.choices[0].message.content
    # A shared endpoint does not stream (Google's endpoint-type table); streaming on a dedicated
    # endpoint is tested in test_serving_contract.py.
    with pytest.raises(openai.BadRequestError, match="Streaming is not supported"):
        client.chat.completions.create(model="", max_tokens=200, stream=True,
                                       messages=[{"role": "user", "content": "Hi!"}])


def test_base_model_has_no_chat_template(vertex):
    import openai

    endpoint = aiplatform.Endpoint.create(display_name="e")
    deploy(upload(model_id="meta-llama/Llama-3.1-8B"), endpoint)
    client = openai.OpenAI(base_url=f"{vertex.url}/v1beta1/{endpoint.resource_name}",
                           api_key="x")
    with pytest.raises(openai.BadRequestError, match="chat template"):
        client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])


def test_state_persists_across_restarts(vertex, tmp_path):
    endpoint = aiplatform.Endpoint.create(display_name="kept", labels={"k": "v"})
    deploy(upload(), endpoint)
    vertex.stop()
    again = emulator_module.start(state_file=tmp_path / "emulator.json", storage=False)
    try:
        aiplatform.init(api_endpoint=again.url)
        found = aiplatform.Endpoint.list(filter="labels.k=v")
        assert [e.display_name for e in found] == ["kept"]
        reply = found[0].predict(instances=[{"prompt": "still there?", "max_tokens": 3}])
        assert reply.predictions[0].startswith("Prompt:\nstill there?")
    finally:
        again.stop()


def test_bucket_location_is_honoured(emulator, monkeypatch):
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.storage_url)
    client = storage.Client(project="p", credentials=AnonymousCredentials())
    client.create_bucket("regional-bucket", location="europe-west4")
    assert client.get_bucket("regional-bucket").location == "EUROPE-WEST4"


def test_emulator_command_serves_until_stopped(tmp_path):
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "nbhelpers", "emulator", "--host", "127.0.0.1", "--port",
         str(port), "--state", str(tmp_path / "cli.json")], stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert "rehearsal only" in banner and f"127.0.0.1:{port}" in banner
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/emulator/info") as reply:
                    assert json.loads(reply.read())["emulator"] == "nbhelpers"
                    break
            except urllib.error.URLError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
