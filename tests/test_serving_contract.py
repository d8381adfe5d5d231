"""What Vertex AI's serving front end refuses, by endpoint type, and the client doing it right:
each refusal is asked of the emulator over HTTP (the real SDKs, or raw HTTP where the SDK itself
would never send the call), and each client behaviour runs against it. Sources: the docstring of
nbhelpers/emulator/serving.py."""

from __future__ import annotations

import json
import math
import os

import pytest
import requests

import nbhelpers
from nbhelpers import batch, images, limits, openai_chat
from nbhelpers.errors import ConfigError
from tests.conftest import module_session

SHARED_MODEL, DEDICATED_MODEL = "Llama-3.2-1B-Instruct", "Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One emulator, one session and one deployment of each endpoint type for the module (as
    conftest's `env` and `session`, but made once: every test here only serves)."""
    with module_session(tmp_path_factory.mktemp("serving"), run_id="serving",
                        deploy_seconds=0.2) as (running, session):
        deployed = {
            kind: nbhelpers.deploy(session, nbhelpers.plan_deployment(
                model, dedicated_endpoint=kind == "dedicated", ask_for_token=False))
            for kind, model in (("shared", SHARED_MODEL), ("dedicated", DEDICATED_MODEL))}
        yield running, session, deployed


@pytest.fixture
def emulator(served):
    return served[0]


@pytest.fixture
def session(served):
    return served[1]


@pytest.fixture
def shared(served):
    return served[2]["shared"]


@pytest.fixture
def dedicated(served):
    return served[2]["dedicated"]


def _post(url: str, body: dict, session) -> requests.Response:
    """Raw HTTP with the session's own access token, trusting the emulator's certificate."""
    return requests.post(url, data=json.dumps(body), timeout=30,
                         headers={"Authorization": f"Bearer {session.credentials.token}",
                                  "Content-Type": "application/json"},
                         verify=os.environ["REQUESTS_CA_BUNDLE"])


def _error(response: requests.Response) -> dict:
    return response.json()["error"]


def _instance(prompt: str = "Hi") -> dict:
    return {"prompt": prompt, "max_tokens": 4}


# --- refusals -------------------------------------------------------------------------------
def test_a_dedicated_endpoint_is_refused_through_the_shared_host(session, dedicated, emulator):
    name = dedicated.endpoint_name
    dns = dedicated.endpoint().gca_resource.dedicated_endpoint_dns
    answer = _post(f"{emulator.url}/v1/{name}:predict", {"instances": [_instance()]}, session)
    assert answer.status_code == 400
    assert _error(answer)["status"] == "FAILED_PRECONDITION"
    assert _error(answer)["message"] == (
        "Dedicated Endpoint cannot be accessed through the shared Vertex AI domain "
        f"aiplatform.googleapis.com. Please access the endpoint using its dedicated domain "
        f"name '{dns}'")
    import openai  # the chat route through the shared host is refused the same way

    client = openai.OpenAI(base_url=f"{emulator.url}/v1beta1/{name}", api_key="x",
                           max_retries=0)
    with pytest.raises(openai.BadRequestError, match="Dedicated Endpoint cannot be accessed"):
        client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])
    # the SDK (>= 1.92.0) and the client send it to its DNS name, where it is served
    assert dedicated.endpoint().predict(instances=[_instance()]).predictions
    assert nbhelpers.predict(dedicated, "Routed?", max_tokens=3)[0].raw.startswith("Prompt:")


def test_a_shared_endpoint_is_refused_through_a_dedicated_name(session, shared, dedicated):
    dns = dedicated.endpoint().gca_resource.dedicated_endpoint_dns  # another endpoint's name
    url = f"https://{dns}/v1/{shared.endpoint_name}:predict"
    answer = _post(url, {"instances": [_instance()]}, session)
    assert answer.status_code == 400
    assert "is not a dedicated endpoint" in _error(answer)["message"]
    assert "us-central1-aiplatform.googleapis.com" in _error(answer)["message"]


def test_a_shared_endpoint_does_not_stream(session, shared, emulator):
    import openai

    client = openai_chat.chat_client(shared)
    with pytest.raises(openai.BadRequestError, match="Streaming is not supported on the shared"):
        list(client.chat.completions.create(model="", stream=True, messages=[
            {"role": "user", "content": "Hi"}]))
    answer = _post(f"{emulator.url}/v1/{shared.endpoint_name}:streamRawPredict",
                   {"instances": [_instance()]}, session)
    assert answer.status_code == 400 and _error(answer)["status"] == "FAILED_PRECONDITION"
    # not streamed, the same endpoint answers
    assert client.chat.completions.create(
        model="", max_tokens=3, messages=[{"role": "user", "content": "Hi"}]).choices


def test_a_dedicated_endpoint_streams_over_sse(dedicated):
    client = openai_chat.chat_client(dedicated)
    chunks = list(client.chat.completions.create(
        model="", stream=True, max_tokens=6, messages=[{"role": "user", "content": "Hi"}]))
    assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) >= 6
    lines = list(dedicated.endpoint().stream_raw_predict(  # the SDK's streamRawPredict
        body=json.dumps({"instances": [_instance("Raw stream")]}).encode(),
        headers={"Content-Type": "application/json"}))
    assert "Raw stream" in b"".join(lines).decode()


def test_payload_limits_by_endpoint_type(session, shared, dedicated):
    over_shared = {"instances": [_instance("x" * 1_600_000)]}
    refused = _post(f"{session.emulator_url}/v1/{shared.endpoint_name}:predict", over_shared,
                    session)
    assert refused.status_code == 400
    assert f"{limits.PREDICT_PAYLOAD_BYTES} bytes" in _error(refused)["message"]
    dns = dedicated.endpoint().gca_resource.dedicated_endpoint_dns
    dedicated_url = f"https://{dns}/v1/{dedicated.endpoint_name}:predict"
    assert _post(dedicated_url, over_shared, session).status_code == 200  # 1.6 MB fits 10 MB
    over_dedicated = {"instances": [_instance("x" * 10_500_000)]}
    refused = _post(dedicated_url, over_dedicated, session)
    assert refused.status_code == 400
    assert f"{limits.DEDICATED_PREDICT_PAYLOAD_BYTES} bytes" in _error(refused)["message"]
    # The client's pre-check uses the limit of the endpoint it calls.
    assert images.check_payload(over_shared, dedicated=True) > limits.PREDICT_PAYLOAD_BYTES
    with pytest.raises(ConfigError, match="1,572,864-byte .* of a shared endpoint"):
        images.check_payload(over_shared)
    with pytest.raises(ConfigError, match="10,485,760-byte .* of a dedicated endpoint"):
        images.check_payload(over_dedicated, dedicated=True)


# --- the client -----------------------------------------------------------------------------
def test_the_sdk_error_of_a_dedicated_endpoint_is_retried(session, dedicated, emulator):
    """aiplatform raises a plain ValueError carrying the status on dedicated endpoints."""
    nbhelpers_faults = f"{emulator.url}/emulator/faults"
    requests.post(nbhelpers_faults, json={"status": 429, "count": 1}, timeout=10)
    with pytest.raises(ValueError, match="Status code:429") as raised:
        dedicated.endpoint().predict(instances=[_instance()])
    assert batch.status_of(raised.value) == 429
    requests.post(nbhelpers_faults, json={"status": 503, "count": 2}, timeout=10)
    report = nbhelpers.predict_many(dedicated, [f"p{i}" for i in range(6)], concurrency=3,
                                    progress=False, max_tokens=4)
    assert all(r.ok for r in report.results) and report.retries == 2, report.summary()
    requests.post(nbhelpers_faults, json={"status": 400, "count": 1}, timeout=10)
    failed = nbhelpers.predict_many(dedicated, ["only"], progress=False, max_tokens=4)
    assert failed.results[0].error.startswith("BadRequest: 400")  # api_core's, as on shared
    # chat_many's pooled transport: the openai client's own exceptions, retried alike
    requests.post(nbhelpers_faults, json={"status": 503, "count": 2}, timeout=10)
    chats = nbhelpers.chat_many(dedicated, ["a", "b", "c"], concurrency=2, progress=False,
                                max_tokens=4)
    assert all(r.ok for r in chats.results) and chats.retries == 2, chats.summary()
    requests.post(nbhelpers_faults, json={"status": 400, "count": 1, "message": "bad turn"},
                  timeout=10)
    failed = nbhelpers.chat_many(dedicated, ["only"], progress=False, max_tokens=4)
    assert failed.results[0].error == "BadRequestError: Error code: 400 - bad turn"


def test_streaming_and_time_to_first_token_only_where_the_endpoint_streams(
        shared, dedicated, capsys):
    streamed = nbhelpers.chat(dedicated, "Stream please", max_tokens=8, stream=True)
    report = nbhelpers.chat_many(dedicated, ["a", "b", "c"], concurrency=2, progress=False,
                                 max_tokens=6)
    assert all(0 < r.ttft_s <= r.latency_s for r in report.results)
    whole_replies = nbhelpers.chat_many(dedicated, ["a", "b"], progress=False, max_tokens=6,
                                        stream=False)  # asked whole: nothing to time
    assert all(r.ok and r.output and math.isnan(r.ttft_s) for r in whole_replies.results)
    assert "Note:" not in capsys.readouterr().out and len(streamed.split()) == 8

    whole = nbhelpers.chat(shared, "Stream please", max_tokens=8, stream=True)
    again = nbhelpers.chat(shared, "And again", max_tokens=8, stream=True)
    report = nbhelpers.chat_many(shared, ["a", "b", "c"], concurrency=2, progress=False,
                                 max_tokens=6)
    printed = capsys.readouterr().out
    assert printed.count("is a shared endpoint, which does not stream") == 1  # said once
    assert whole in printed and again in printed and len(whole.split()) == 8
    assert all(r.ok and math.isnan(r.ttft_s) for r in report.results)
    assert "time to first token not measured" in report.summary()


def test_streamed_chunks_that_arrive_together_are_read_in_order_and_an_error_event_raises():
    """chat_many decodes the events of one arrival together: every piece of text, in order,
    none from role-only or empty deltas or [DONE]; vLLM's mid-stream error event raises."""
    from nbhelpers.predict_http import _sse_texts

    def event(delta: dict) -> bytes:
        return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode()

    arrived = [event({"role": "assistant", "content": ""}), event({"content": "Hello"}),
               event({"content": ", \"world\"\n"}), event({}), b"data: [DONE]"]
    assert _sse_texts(arrived) == ["Hello", ", \"world\"\n"]
    assert _sse_texts([b": keep-alive comment"]) == []
    with pytest.raises(RuntimeError, match="the stream ended with an error: .*overloaded"):
        _sse_texts([event({"content": "partial"}),
                    b'data: {"error": {"message": "overloaded", "code": 503}}'])
