"""Dedicated endpoints done right (issue #17, item 3): the default for new deployments, the
inference timeout planned, recorded and enforced, each dedicated endpoint its own address (a
port of its own on 127.0.0.1, standing in for its DNS name), and the planned requests checked
against the payload limit of the planned endpoint type. Real SDKs over HTTP against the
emulator; sources in nbhelpers/emulator/serving.py and vertex_ai.py."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import requests

import nbhelpers
from nbhelpers import limits
from nbhelpers.errors import ConfigError
from tests.conftest import module_session

MODEL = "Llama-3.2-1B-Instruct"
OTHER = "Llama-3.2-3B-Instruct"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One emulator, one session and two deployments on dedicated endpoints made with the
    package's defaults, for the module (each test only serves or plans)."""
    with module_session(tmp_path_factory.mktemp("dedicated"), run_id="dedicated",
                        deploy_seconds=0.1) as (running, session):
        deployed = [nbhelpers.deploy(session, nbhelpers.plan_deployment(model,
                                                                        ask_for_token=False))
                    for model in (MODEL, OTHER)]
        yield running, session, deployed


def _post(url: str, body: dict, session) -> requests.Response:
    return requests.post(url, data=json.dumps(body), timeout=30,
                         headers={"Authorization": f"Bearer {session.credentials.token}",
                                  "Content-Type": "application/json"},
                         verify=os.environ["REQUESTS_CA_BUNDLE"])


def _instances() -> dict:
    return {"instances": [{"prompt": "Hi", "max_tokens": 3}]}


# --- the default ----------------------------------------------------------------------------
def test_new_deployments_are_dedicated_by_default_and_shared_is_one_parameter_away(served):
    _, _, (first, _) = served
    assert first.dedicated_endpoint  # deployed with plan_deployment's defaults
    resource = first.endpoint().gca_resource
    assert resource.dedicated_endpoint_enabled and resource.dedicated_endpoint_dns
    plan = nbhelpers.plan_deployment(MODEL, ask_for_token=False)
    assert plan.dedicated_endpoint and plan.inference_timeout_s is None
    assert ("endpoint:   dedicated (its own DNS name; requests up to 10,485,760 bytes, "
            "streaming, inference timeout 600 s, Google's default)") in plan.describe()
    shared = nbhelpers.plan_deployment(MODEL, ask_for_token=False, dedicated_endpoint=False)
    assert not shared.dedicated_endpoint
    assert ("endpoint:   shared (requests up to 1,572,864 bytes, no streaming, a prediction "
            "ends at about 60 s)") in shared.describe()


# --- the inference timeout ------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"inference_timeout_s": 0}, r"inference_timeout_s must be .*1.*3,?600"),
    ({"inference_timeout_s": 3601}, r"inference_timeout_s must be .*1.*3,?600"),
    ({"inference_timeout_s": 30.5}, r"inference_timeout_s must be a whole number"),
    ({"inference_timeout_s": True}, r"inference_timeout_s must be a whole number"),
    ({"inference_timeout_s": 120, "dedicated_endpoint": False},
     r"inference_timeout_s=120 needs a dedicated endpoint: a shared endpoint ends every "
     r"prediction at about 60 s"),
    ({"inference_timeout_s": 120, "deploy_with": "model-garden", "accept_eula": True},
     r"cannot be set with deploy_with='model-garden'"),
])
def test_a_bad_inference_timeout_is_refused_when_planning(served, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        nbhelpers.plan_deployment(MODEL, ask_for_token=False, **kwargs)


def test_the_inference_timeout_is_recorded_and_a_longer_prediction_gets_504(served):
    emulator, session, _ = served
    plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", ask_for_token=False,
                                     inference_timeout_s=1)
    assert "inference timeout 1 s" in plan.describe()
    deployment = nbhelpers.deploy(session, plan)
    resource = deployment.endpoint().gca_resource
    assert resource.client_connection_config.inference_timeout.seconds == 1  # read back
    # The rehearsal replica now takes 1.3 s a request: past the endpoint's 1 s timeout.
    emulator.vertex.replicas[deployment.deployed_model_id][0].service_seconds = 1.3
    with pytest.raises(ValueError, match="Status code:504") as raised:  # the SDK's (C90)
        deployment.endpoint().predict(instances=_instances()["instances"])
    assert "DEADLINE_EXCEEDED" in str(raised.value) and "timeout of 1s" in str(raised.value)
    import openai

    client = nbhelpers.chat_client(deployment, max_retries=0)
    with pytest.raises(openai.InternalServerError, match="Error code: 504"):
        client.chat.completions.create(model="", max_tokens=2,
                                       messages=[{"role": "user", "content": "Hi"}])
    emulator.vertex.replicas[deployment.deployed_model_id][0].service_seconds = 0.0
    assert deployment.endpoint().predict(instances=_instances()["instances"]).predictions


def test_the_emulator_refuses_inference_timeouts_google_refuses(served):
    _, session, _ = served
    url = (f"{session.emulator_url}/v1/projects/test-project/locations/us-central1/endpoints")
    too_long = _post(url, {"displayName": "x", "dedicatedEndpointEnabled": True,
                           "clientConnectionConfig": {"inferenceTimeout": "3601s"}}, session)
    assert too_long.status_code == 400 and "at most 3600s" in too_long.json()["error"]["message"]
    on_shared = _post(url, {"displayName": "x",
                            "clientConnectionConfig": {"inferenceTimeout": "30s"}}, session)
    assert on_shared.status_code == 400
    assert "applies to dedicated endpoints" in on_shared.json()["error"]["message"]


# --- one address per dedicated endpoint -----------------------------------------------------
def test_each_dedicated_endpoint_has_its_own_address_and_serves_only_its_own_path(served):
    emulator, session, (first, second) = served
    dns = {d.endpoint_name: d.endpoint().gca_resource.dedicated_endpoint_dns
           for d in (first, second)}
    assert len(set(dns.values())) == 2 and all(v.startswith("127.0.0.1:") for v in dns.values())
    assert emulator.vertex.dedicated_addresses()[first.endpoint_name] == dns[first.endpoint_name]
    for deployment in (first, second):  # each through its own name, by the SDK and the client
        assert deployment.endpoint().predict(instances=_instances()["instances"]).predictions
        assert nbhelpers.chat(deployment, "Hi", max_tokens=2)
    crossed = _post(f"https://{dns[first.endpoint_name]}/v1/{second.endpoint_name}:predict",
                    _instances(), session)
    assert crossed.status_code == 400
    error = crossed.json()["error"]
    assert error["status"] == "FAILED_PRECONDITION"
    assert error["message"] == (
        f"The dedicated domain name '{dns[first.endpoint_name]}' serves endpoint "
        f"{first.endpoint_name}, not {second.endpoint_name}; send this endpoint's requests to "
        f"its own dedicated domain name '{dns[second.endpoint_name]}'.")
    own = _post(f"https://{dns[second.endpoint_name]}/v1/{second.endpoint_name}:predict",
                _instances(), session)
    assert own.status_code == 200 and own.json()["predictions"]


def test_a_deleted_endpoint_s_address_closes(served):
    from google.cloud import aiplatform

    endpoint = aiplatform.Endpoint.create(display_name="short-lived",
                                          dedicated_endpoint_enabled=True)
    url = f"https://{endpoint.gca_resource.dedicated_endpoint_dns}/v1/{endpoint.resource_name}"
    bundle = os.environ["REQUESTS_CA_BUNDLE"]
    assert requests.get(url, timeout=5, verify=bundle).status_code == 200  # it listens
    endpoint.delete()
    for _ in range(60):  # the listener stops within its poll interval (0.5 s)
        try:
            requests.get(url, timeout=1, verify=bundle)
        except requests.ConnectionError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the deleted endpoint's address {url} still answers")


def test_addresses_are_given_again_after_a_restart(tmp_path):
    """A restarted emulator (the state file kept) serves each dedicated endpoint again, on a
    new port of its own."""
    from nbhelpers import emulator as emulator_module

    state = tmp_path / "restart.json"
    first = emulator_module.start(state_file=state, deploy_seconds=0.1, storage=False)
    try:
        created = first.vertex.vertex_ai.create_endpoint(
            {"displayName": "kept", "dedicatedEndpointEnabled": True},
            project="p", location="us-central1")["response"]
    finally:
        first.stop()
    second = emulator_module.start(state_file=state, deploy_seconds=0.1, storage=False)
    try:
        after = second.vertex.state.data["endpoints"][created["name"]]["dedicatedEndpointDns"]
        assert after == second.vertex.dedicated_addresses()[created["name"]]
        assert after != created["dedicatedEndpointDns"]
        host, port = after.split(":")
        socket.create_connection((host, int(port)), timeout=5).close()
    finally:
        second.stop()


# --- the planned requests' payload limit ----------------------------------------------------
def test_the_plan_checks_requests_against_the_planned_endpoint_type_s_limit(served):
    big = nbhelpers.Requests(prompt="x" * 2_000_000)  # over 1.5 MB, under 10 MB
    plan = nbhelpers.plan_deployment(MODEL, ask_for_token=False, requests=big)
    assert plan.dedicated_endpoint and plan.requests is big
    with pytest.raises(ConfigError, match=f"{limits.PREDICT_PAYLOAD_BYTES:,}-byte"):
        nbhelpers.plan_deployment(MODEL, ask_for_token=False, requests=big,
                                  dedicated_endpoint=False)
    huge = nbhelpers.Requests(prompt="x" * 10_600_000)
    with pytest.raises(ConfigError, match=f"{limits.DEDICATED_PREDICT_PAYLOAD_BYTES:,}-byte"):
        nbhelpers.plan_deployment(MODEL, ask_for_token=False, requests=huge)


def test_the_emulator_ca_bundle_is_never_seen_half_written(tmp_path, monkeypatch):
    """Kernels of one run connect at once (the runner's parallel notebooks): each writes the
    run's CA bundle while others load it. A reader must always find a whole bundle."""
    import ssl
    import threading
    from pathlib import Path

    import certifi

    from nbhelpers import connection

    monkeypatch.setenv("NBHELPERS_BASE_CA_BUNDLE", certifi.where())
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):  # set by the call: restored after
        monkeypatch.setenv(name, os.environ.get(name, ""))
    end = "-----END CERTIFICATE-----"
    two_authorities = [c.strip() + f"\n{end}\n" for c in
                       Path(certifi.where()).read_text().split(end)[:2]]
    authority = tmp_path / "emulator-cert.pem"
    bundle = tmp_path / "emulator-ca-bundle.pem"
    authority.write_text(two_authorities[0])
    connection._trust_emulator_certificate(str(authority))
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                ssl.create_default_context(cafile=str(bundle))
            except ssl.SSLError as err:
                failures.append(str(err))

    readers = [threading.Thread(target=load) for _ in range(2)]
    for reader in readers:
        reader.start()
    for i in range(150):  # a different bundle each time, written while it is read
        authority.write_text(two_authorities[i % 2])
        connection._trust_emulator_certificate(str(authority))
    stop.set()
    for reader in readers:
        reader.join()
    assert failures == []
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
