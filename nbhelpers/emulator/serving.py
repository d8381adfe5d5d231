"""Online serving on an endpoint: `:predict` and OpenAI chat completions, passed on to the
replica of the deployed model that takes the traffic, after the checks the front end makes
(access token, injected faults, payload size)."""

from __future__ import annotations

import json
from typing import Any

from nbhelpers.emulator.common import ApiError, Route, State
from nbhelpers.emulator.httpbase import ConnectionPool
from nbhelpers.emulator.replica import Replica
from nbhelpers.emulator.vertex_ai import ENDPOINT, find_endpoint
from nbhelpers.limits import PREDICT_PAYLOAD_BYTES

_FAULT_MESSAGES = {503: "Took too long to respond.", 429: "Rate of traffic exceeds serving "
                   "capacity. Decrease your rate or check your quota."}


class Proxy:
    """A response streamed through from a replica (chat completions, SSE or JSON)."""

    def __init__(self, url: str, body: dict[str, Any]):
        self.url, self.body = url, body


class Serving:
    """Serving calls. `replicas` is the deployments' own dict (deployed model id -> replica),
    shared so a finished deployment serves at once."""

    def __init__(self, state: State, replicas: dict[str, Replica]):
        self.state, self.replicas = state, replicas
        self.faults: list[dict[str, Any]] = []  # injected errors for serving calls
        self.expired_tokens: set[str] = set()
        self._pool = ConnectionPool()

    def routes(self) -> list[Route]:
        return [("POST", ENDPOINT + r":predict", self.predict),
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
        """The live deployed model with the largest traffic share, and its replica."""
        split = endpoint.get("trafficSplit") or {}
        live = [d for d in endpoint["deployedModels"] if d["id"] in self.replicas]
        if not live:
            raise ApiError(400, f"Endpoint {endpoint['name']} does not have any deployed "
                           "models.", "FAILED_PRECONDITION")
        chosen = max(live, key=lambda d: split.get(d["id"], 0))
        return chosen, self.replicas[chosen["id"]]

    def _admit(self, headers: Any) -> None:
        """What the serving front end checks first: the access token, then injected faults."""
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
                raw_length: int = 0, headers: Any = None, **_: Any) -> dict[str, Any]:
        self._admit(headers or {})
        if raw_length > PREDICT_PAYLOAD_BYTES:
            raise ApiError(400, f"Request payload size exceeds the limit: "
                           f"{PREDICT_PAYLOAD_BYTES} bytes.")
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        deployed, replica = self._serving(endpoint)
        status, payload = self._pool.post_json(replica.url + replica.predict_route, body)
        if status != 200:
            raise ApiError(status if status < 500 else 500,
                           f"Prediction failed: the model server answered {status}: "
                           f"{json.dumps(payload)[:500]}")
        return {"predictions": payload.get("predictions", []), "deployedModelId": deployed["id"],
                "model": deployed["model"], "modelVersionId": "1"}

    def chat(self, body: dict[str, Any], *, project: str, location: str, eid: str,
             headers: Any = None, **_: Any) -> Proxy:
        self._admit(headers or {})
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        _, replica = self._serving(endpoint)
        return Proxy(replica.url + "/v1/chat/completions", body)
