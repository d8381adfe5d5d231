"""Online serving on an endpoint: `:predict`, `:streamRawPredict` and OpenAI chat completions,
passed on to a replica (each in turn) of the deployed model that takes the traffic, after the
checks Vertex AI's front end makes, in this order: the host the call came through (an endpoint
is served either on the shared regional host or on its own dedicated DNS name, never both, and
one dedicated endpoint's name serves that endpoint only), streaming (dedicated endpoints only),
the access token, injected faults, and the payload size of the endpoint's type; then the wait
for the replica, bounded by the endpoint's inference timeout (504 past it).

Sources (read 2026-11-26):
- "Choose an endpoint type" (cloud.google.com/vertex-ai/docs/predictions/choose-endpoint-type):
  payload limit 10 MB dedicated, 1.5 MB shared; inference timeout up to 1 h dedicated, 60 s shared.
- "Use dedicated public endpoints" (.../predictions/using-dedicated-endpoints): dedicated
  endpoints serve Predict, RawPredict, StreamRawPredict and Chat Completion; "Streaming and gRPC
  are supported" there.
- google-cloud-aiplatform `Endpoint.stream_raw_predict` docstring: "For custom model, this method
  is only supported for dedicated endpoint"; its `predict` sends a dedicated endpoint's call to
  `https://{dedicated_endpoint_dns}/v1/{name}:predict` (from 1.92.0, commit 32ee6d9).
- Google's refusal of the shared host for a dedicated endpoint, quoted in yanolja/ogem#110
  (2025-04-09): FAILED_PRECONDITION "Dedicated Endpoint cannot be accessed through the shared
  Vertex AI domain aiplatform.googleapis.com. Please access the endpoint using its dedicated
  domain name '<dns>'".
- "Create a public endpoint" (.../predictions/create-public-endpoint): a dedicated endpoint's
  request timeout is 10 minutes unless clientConnectionConfig.inferenceTimeout sets it (at most
  3600 s); python-aiplatform#1158 (2022-04, a maintainer): shared endpoints' "60s timeout is a
  Prediction service's internal time out"; python-automl#1 quotes "504 Deadline Exceeded"
  from a Google prediction service.
Assumptions (no public wording found): the status and words of the streaming refusal on a
shared endpoint, of a call through one dedicated endpoint's name to another endpoint (Google
routes by the name; here each dedicated endpoint has a listener of its own, and a path of
another endpoint is refused in words), of a shared endpoint called through a dedicated name;
the payload-size message; the timed-out prediction's body (504 DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from nbhelpers.emulator import access
from nbhelpers.emulator.common import ApiError, Route, State
from nbhelpers.emulator.httpbase import ConnectionPool
from nbhelpers.emulator.replica import Replica
from nbhelpers.emulator.vertex_ai import ENDPOINT, find_endpoint, inference_timeout_s
from nbhelpers.limits import predict_payload_bytes

_FAULT_MESSAGES = {503: "Took too long to respond.", 429: "Rate of traffic exceeds serving "
                   "capacity. Decrease your rate or check your quota."}
SHARED_DOMAIN = "aiplatform.googleapis.com"


class Proxy:
    """A response streamed through from a replica (chat completions, SSE or JSON), waited for
    at most `timeout_s` (the endpoint's inference timeout)."""

    def __init__(self, url: str, body: dict[str, Any], *, timeout_s: float):
        self.url, self.body, self.timeout_s = url, body, timeout_s


def deadline_exceeded(timeout_s: float) -> ApiError:
    """The front end's answer when the container has not answered within the endpoint's
    inference timeout (the container may still finish the work: nobody gets its answer)."""
    return ApiError(504, f"Deadline Exceeded: the model server did not answer within the "
                    f"endpoint's inference timeout of {timeout_s:g}s.", "DEADLINE_EXCEEDED")


def is_dedicated(endpoint: dict[str, Any]) -> bool:
    return bool(endpoint.get("dedicatedEndpointEnabled"))


class Serving:
    """Serving calls. `replicas` is the deployments' own dict (deployed model id -> its
    replicas), shared so a finished deployment serves at once.

    A deployed model's requests go to its replicas in turn (round robin). Google does not
    document how Vertex AI balances requests across replicas (an assumption, marked so in
    docs/google-contract.md); round robin is chosen over least-in-flight because the emulator's
    replicas are identical and streamed replies end in the server's proxy, outside this
    class, so an in-flight count here would not see them end; and it makes which replica
    serves a call predictable in tests."""

    def __init__(self, state: State, replicas: dict[str, list[Replica]]):
        self.state, self.replicas = state, replicas
        self._turns: dict[str, int] = {}  # deployed model id -> requests routed so far
        self._turn_lock = threading.Lock()
        self.faults: list[dict[str, Any]] = []  # injected errors for serving calls
        self.expired_tokens: set[str] = set()
        # One pool per inference timeout: a kept connection keeps the timeout it was made with.
        self._pools: dict[float, ConnectionPool] = {}

    def routes(self) -> list[Route]:
        return [("POST", ENDPOINT + r":predict", self.predict),
                ("POST", ENDPOINT + r":streamRawPredict", self.stream_raw_predict),
                ("POST", ENDPOINT + r"/chat/completions", self.chat)]

    def inject_fault(self, status: int, count: int, message: str | None) -> list[dict[str, Any]]:
        """The next `count` serving calls fail with `status`, as an overloaded endpoint does."""
        with self.state.lock:
            self.faults.append({"status": status, "count": count,
                                "message": message or _FAULT_MESSAGES.get(status, "error")})
        return self.faults

    def expire_token(self, token: str) -> None:
        """Calls with this access token get a 401, as after the token's hour is up."""
        self.expired_tokens.add(token)

    def _serving(self, endpoint: dict[str, Any]) -> tuple[dict[str, Any], Replica]:
        """The live deployed model with the largest traffic share, and the next of its
        replicas in turn (round robin: see the class docstring)."""
        split = endpoint.get("trafficSplit") or {}
        live = [d for d in endpoint["deployedModels"] if self.replicas.get(d["id"])]
        if not live:
            raise ApiError(400, f"Endpoint {endpoint['name']} does not have any deployed "
                           "models.", "FAILED_PRECONDITION")
        chosen = max(live, key=lambda d: split.get(d["id"], 0))
        replicas = self.replicas[chosen["id"]]
        with self._turn_lock:
            turn = self._turns.get(chosen["id"], 0)
            self._turns[chosen["id"]] = turn + 1
        return chosen, replicas[turn % len(replicas)]

    def _front_end(self, *, project: str, location: str, eid: str, headers: Any,
                   raw_length: int, dedicated_host: bool, streaming: bool) -> dict[str, Any]:
        """What the serving front end checks before the replica sees the call, in Google's
        order: the endpoint, the host it came through, streaming, the access token, injected
        faults, the payload size. Returns the endpoint."""
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        dedicated = is_dedicated(endpoint)
        if dedicated and dedicated_host and dedicated_host != endpoint["name"]:
            called = self.state.data["endpoints"].get(dedicated_host) or {}
            raise ApiError(400, f"The dedicated domain name "
                           f"'{called.get('dedicatedEndpointDns', '')}' serves endpoint "
                           f"{dedicated_host}, not {endpoint['name']}; send this endpoint's "
                           "requests to its own dedicated domain name "
                           f"'{endpoint.get('dedicatedEndpointDns', '')}'.",
                           "FAILED_PRECONDITION")
        if dedicated and not dedicated_host:
            raise ApiError(400, f"Dedicated Endpoint cannot be accessed through the shared "
                           f"Vertex AI domain {SHARED_DOMAIN}. Please access the endpoint "
                           f"using its dedicated domain name "
                           f"'{endpoint.get('dedicatedEndpointDns', '')}'",
                           "FAILED_PRECONDITION")
        if dedicated_host and not dedicated:
            raise ApiError(400, f"Endpoint {endpoint['name']} is not a dedicated endpoint and "
                           "has no dedicated domain name; send its requests to the shared "
                           f"Vertex AI domain {location}-{SHARED_DOMAIN}.",
                           "FAILED_PRECONDITION")
        if streaming and not dedicated:
            raise ApiError(400, f"Streaming is not supported on the shared public endpoint "
                           f"{endpoint['name']}: streamRawPredict and streamed chat "
                           "completions are served by dedicated endpoints only (create the "
                           "endpoint with dedicatedEndpointEnabled).", "FAILED_PRECONDITION")
        self._admit(headers or {})
        access.require(self.state, headers, "aiplatform.endpoints.predict", project=project,
                       resource=endpoint["name"])
        limit = predict_payload_bytes(dedicated=dedicated)
        if raw_length > limit:
            raise ApiError(400, f"Request payload size exceeds the limit: {limit} bytes.")
        return endpoint

    def _admit(self, headers: Any) -> None:
        """The access token, then injected faults."""
        token = (headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if token and token in self.expired_tokens:
            raise ApiError(401, "Request had invalid authentication credentials. Expected OAuth "
                           "2 access token, login cookie or other valid authentication "
                           "credential.", "UNAUTHENTICATED")
        with self.state.lock:
            fault = self.faults[0] if self.faults else None
            if fault:
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self.faults.pop(0)
        if fault:
            raise ApiError(fault["status"], fault["message"])

    def predict(self, body: dict[str, Any], *, project: str, location: str, eid: str,
                raw_length: int = 0, headers: Any = None, dedicated_host: bool = False,
                **_: Any) -> dict[str, Any]:
        endpoint = self._front_end(project=project, location=location, eid=eid,
                                   headers=headers, raw_length=raw_length,
                                   dedicated_host=dedicated_host, streaming=False)
        deployed, replica = self._serving(endpoint)
        timeout_s = inference_timeout_s(endpoint)
        pool = self._pools.get(timeout_s) or self._pools.setdefault(timeout_s, ConnectionPool())
        try:
            status, payload = pool.post_json(replica.url + replica.predict_route, body,
                                             timeout=timeout_s)
        except TimeoutError:
            raise deadline_exceeded(timeout_s) from None
        if status != 200:
            raise ApiError(status if status < 500 else 500,
                           f"Prediction failed: the model server answered {status}: "
                           f"{json.dumps(payload)[:500]}")
        return {"predictions": payload.get("predictions", []), "deployedModelId": deployed["id"],
                "model": deployed["model"], "modelVersionId": "1"}

    def stream_raw_predict(self, body: dict[str, Any], *, project: str, location: str,
                           eid: str, raw_length: int = 0, headers: Any = None,
                           dedicated_host: bool = False, **_: Any) -> Proxy:
        """The body goes to the container's predict route as it is; its answer streams back."""
        endpoint = self._front_end(project=project, location=location, eid=eid,
                                   headers=headers, raw_length=raw_length,
                                   dedicated_host=dedicated_host, streaming=True)
        _, replica = self._serving(endpoint)
        return Proxy(replica.url + replica.predict_route, body,
                     timeout_s=inference_timeout_s(endpoint))

    def chat(self, body: dict[str, Any], *, project: str, location: str, eid: str,
             raw_length: int = 0, headers: Any = None, dedicated_host: bool = False,
             **_: Any) -> Proxy:
        endpoint = self._front_end(project=project, location=location, eid=eid,
                                   headers=headers, raw_length=raw_length,
                                   dedicated_host=dedicated_host,
                                   streaming=bool(body.get("stream")))
        _, replica = self._serving(endpoint)
        return Proxy(replica.url + "/v1/chat/completions", body,
                     timeout_s=inference_timeout_s(endpoint))
