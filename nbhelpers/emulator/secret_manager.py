"""Secret Manager v1 over REST, as the google-cloud-secret-manager SDK calls it with
transport="rest": create a secret, add a version, and access a version ("latest" or a number).
The client reads the Hugging Face token from here when the runtime keeps it in the project."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from nbhelpers.emulator.common import ApiError, Route, State, now, project_number

_SECRET = r"/v1/projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/:]+)"


def _crc32c(data: bytes) -> int:
    import google_crc32c

    return int(google_crc32c.value(data))


class SecretManager:
    """Secrets by resource name (with the project's number, as Google names them), kept under
    "secrets" with their versions in order."""

    def __init__(self, state: State):
        self.state = state

    def routes(self) -> list[Route]:
        return [
            ("POST", r"/v1/projects/(?P<project>[^/]+)/secrets", self.create_secret),
            ("POST", _SECRET + r":addVersion", self.add_version),
            ("GET", _SECRET + r"/versions/(?P<version>[^/:]+):access", self.access_version),
        ]

    def _secrets(self) -> dict[str, Any]:
        return self.state.data.setdefault("secrets", {})

    @staticmethod
    def _name(project: str, secret: str) -> str:
        return f"projects/{project_number(project)}/secrets/{secret}"

    def create_secret(self, body: dict[str, Any], *, project: str, query: dict[str, str],
                      **_: Any) -> dict[str, Any]:
        secret_id = query.get("secretId", "")
        if not secret_id:
            raise ApiError(400, "secretId is required")
        name = self._name(project, secret_id)
        with self.state.lock:
            if name in self._secrets():
                raise ApiError(409, f"Secret [{name}] already exists.")
            record = {"createTime": now(), "labels": body.get("labels", {}),
                      "replication": body.get("replication") or {"automatic": {}},
                      "versions": []}
            self._secrets()[name] = record
            self.state.save()
        return {"name": name, "createTime": record["createTime"], "labels": record["labels"],
                "replication": record["replication"]}

    def add_version(self, body: dict[str, Any], *, project: str, secret: str,
                    **_: Any) -> dict[str, Any]:
        name = self._name(project, secret)
        payload = body.get("payload") or {}
        try:
            data = base64.b64decode(payload.get("data", ""), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "payload.data must be base64") from None
        crc = _crc32c(data)
        if payload.get("dataCrc32c") not in (None, "") and int(payload["dataCrc32c"]) != crc:
            raise ApiError(400, "Checksum mismatch: payload.data_crc32c does not match the data.")
        with self.state.lock:
            record = self._secrets().get(name)
            if record is None:
                raise ApiError(404, f"Secret [{name}] not found.")
            version = {"data": base64.b64encode(data).decode(), "crc32c": str(crc),
                       "createTime": now(), "state": "ENABLED"}
            record["versions"].append(version)
            self.state.save()
            number = len(record["versions"])
        return {"name": f"{name}/versions/{number}", "createTime": version["createTime"],
                "state": "ENABLED"}

    def access_version(self, body: dict[str, Any], *, project: str, secret: str,
                       version: str, **_: Any) -> dict[str, Any]:
        name = self._name(project, secret)
        with self.state.lock:
            record = self._secrets().get(name)
            versions = record["versions"] if record else []
            enabled = [i for i, v in enumerate(versions, 1) if v["state"] == "ENABLED"]
            number = (enabled[-1] if enabled else 0) if version == "latest" else (
                int(version) if version.isdigit() else 0)
            if not record or not 0 < number <= len(versions):
                raise ApiError(404, f"Secret [{name}] not found or has no versions.")
            chosen = versions[number - 1]
        if chosen["state"] != "ENABLED":
            raise ApiError(400, f"Secret Version [{name}/versions/{number}] is in "
                                f"{chosen['state']} state.", "FAILED_PRECONDITION")
        return {"name": f"{name}/versions/{number}",
                "payload": {"data": chosen["data"], "dataCrc32c": chosen["crc32c"]}}
