"""The emulator's own `/emulator/...` routes, which tests and the rehearsal notebooks use to
set up what a real project would show (faults, failed deployments, expired tokens, quota)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbhelpers.emulator.cloud_logging import CloudLogging
from nbhelpers.emulator.common import ApiError, Route
from nbhelpers.emulator.deployments import Deployments
from nbhelpers.emulator.quotas import Quotas
from nbhelpers.emulator.serving import Serving
from nbhelpers.limits import PREDICT_PAYLOAD_BYTES

# Refusals of one serving call, for rehearsing the debugging notebook on request-time failures
# (POST /emulator/fail-next-request). The wording is Google's: the dedicated-endpoint refusal as
# quoted in yanolja/ogem#110 (2025-04), the payload limit as quoted in python-docs-samples#1247.
REQUEST_CAUSES: dict[str, tuple[int, str]] = {
    "wrong_host": (400, "Dedicated Endpoint cannot be accessed through the shared Vertex AI domain "
                   "aiplatform.googleapis.com. Please access the endpoint using its dedicated "
                   "domain name '{endpoint}.{region}-000000000000.prediction.vertexai.goog'"),
    "payload_too_large": (400, "Request payload size exceeds the limit: "
                          f"{PREDICT_PAYLOAD_BYTES} bytes."),
}


class Controls:
    """Thin routes into the services. `describe()` gives what /emulator/info reports (the
    server's addresses, known only once it listens)."""

    def __init__(self, *, deployments: Deployments, serving: Serving, quotas: Quotas,
                 logging: CloudLogging, describe: Callable[[], dict[str, Any]]):
        self.deployments, self.serving, self.quotas = deployments, serving, quotas
        self.logging, self.describe = logging, describe

    def routes(self) -> list[Route]:
        return [
            ("POST", r"/emulator/quota", self.set_quota),
            ("GET", r"/emulator/info", self.info),
            ("POST", r"/emulator/faults", self.inject_fault),
            ("POST", r"/emulator/fail-next-deploy", self.seed_failure),
            ("POST", r"/emulator/fail-next-request", self.seed_request_failure),
            ("POST", r"/emulator/expired-tokens", self.expire_token),
            ("GET", r"/emulator/logs/(?P<eid>[^/]+)", self.endpoint_logs),
        ]

    def info(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"emulator": "nbhelpers", **self.describe()}

    def set_quota(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.quotas.set_limit(body["quota_id"], body.get("region", "*"), int(body["value"]))
        return {}

    def inject_fault(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        faults = self.serving.inject_fault(int(body.get("status", 503)),
                                           int(body.get("count", 1)), body.get("message"))
        return {"faults": faults}

    def seed_failure(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"seeded": self.deployments.seed_failure(str(body.get("cause", "")))}

    def seed_request_failure(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        """The next serving call is refused with `cause`'s words (see REQUEST_CAUSES)."""
        cause = str(body.get("cause", ""))
        if cause not in REQUEST_CAUSES:
            raise ApiError(400, f"unknown cause {cause!r}; choose one of "
                           f"{sorted(REQUEST_CAUSES)}")
        status, message = REQUEST_CAUSES[cause]
        endpoint, region = str(body.get("endpoint", "ENDPOINT_ID")), str(body.get("region",
                                                                               "REGION"))
        return {"faults": self.serving.inject_fault(
            status, 1, message.format(endpoint=endpoint, region=region))}

    def expire_token(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.serving.expire_token(str(body["token"]))
        return {}

    def endpoint_logs(self, body: dict[str, Any], eid: str, **_: Any) -> dict[str, Any]:
        return {"lines": self.logging.lines(eid)}
