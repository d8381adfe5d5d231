"""What every emulated Google service shares: the error reply, the persisted state, made-up
project numbers and timestamps, so each service module only holds its own behaviour."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

V1 = "type.googleapis.com/google.cloud.aiplatform.v1."
# Vertex AI resources sit under a project and location; the SDKs call v1, the OpenAI client
# v1beta1, and console links use ui.
LOCATION_PATH = r"/(?:v1|v1beta1|ui)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
          503: "UNAVAILABLE", 412: "FAILED_PRECONDITION"}

# (HTTP method, path regex without the final `$`, handler). A handler is called as
# handler(body, query=..., raw_length=..., headers=..., dedicated_host=..., **path_params) and
# returns the JSON reply; dedicated_host is the endpoint whose dedicated DNS name (its own HTTPS
# listener) the call came through, or None for the shared host.
Route = tuple[str, str, Callable[..., Any]]


class ApiError(Exception):
    """An error reply in Google's JSON shape: {"error": {"code", "message", "status"}}."""

    def __init__(self, http_status: int, message: str, status: str | None = None):
        super().__init__(message)
        self.http_status, self.message = http_status, message
        self.status = status or STATUS.get(http_status, "UNKNOWN")


def project_number(project: str) -> str:
    """A stable made-up project number, as real resource names carry numbers, not ids."""
    if project.isdigit():
        return project
    return str(int(hashlib.sha256(project.encode()).hexdigest()[:10], 16) % 10**12).rjust(12, "1")


def now(seconds: float | None = None) -> str:
    """An RFC 3339 UTC time as Google APIs write it: of `seconds` since the epoch, or now."""
    when = datetime.now(UTC) if seconds is None else datetime.fromtimestamp(seconds, UTC)
    return when.isoformat().replace("+00:00", "Z")


class State:
    """Every resource, persisted as JSON after each change when a file is given, so other
    processes and a restarted emulator see them."""

    def __init__(self, path: Path | None):
        self.path = path
        self.lock = threading.RLock()
        self.data: dict[str, Any] = {"endpoints": {}, "models": {}, "operations": {},
                                     "services": {}, "iam": {}, "logs": {}, "counter": 1000}
        if path and path.exists():
            self.data.update(json.loads(path.read_text()))

    def next_id(self) -> str:
        """Resource ids come from one counter, so every name is unique across services."""
        with self.lock:
            self.data["counter"] += 1
            return str(self.data["counter"])

    def save(self) -> None:
        """Writes the whole state through a temporary file, so readers never see half of it."""
        if self.path:
            with self.lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.data, indent=1))
                tmp.replace(self.path)
