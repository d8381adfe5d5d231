"""The setup steps' Google APIs: Service Usage (enable an API), Resource Manager (the project)
and the project's IAM policy."""

from __future__ import annotations

from typing import Any

from nbhelpers.emulator.common import Route, State, project_number
from nbhelpers.emulator.operations import Operations

_PROJECT = r"/v3/projects/(?P<project>[^/:]+)"
_SERVICE = r"/v1/projects/(?P<project>[^/]+)/services/(?P<service>[^/:]+)"


class SetupApis:
    """Enabled services and IAM policies, kept by project number under "services" and "iam"."""

    def __init__(self, state: State, operations: Operations):
        self.state, self.operations = state, operations

    def routes(self) -> list[Route]:
        return [
            ("GET", _SERVICE, self.get_service),
            ("POST", _SERVICE + r":enable", self.enable_service),
            ("GET", _PROJECT, self.get_project),
            ("POST", _PROJECT + r":getIamPolicy", self.get_iam_policy),
            ("POST", _PROJECT + r":setIamPolicy", self.set_iam_policy),
        ]

    def _service(self, project: str, service: str) -> dict[str, Any]:
        enabled = service in self.state.data["services"].get(project_number(project), [])
        return {"name": f"projects/{project_number(project)}/services/{service}",
                "parent": f"projects/{project_number(project)}",
                "config": {"name": service}, "state": "ENABLED" if enabled else "DISABLED"}

    def get_service(self, body: dict[str, Any], project: str, service: str,
                    **_: Any) -> dict[str, Any]:
        return self._service(project, service)

    def enable_service(self, body: dict[str, Any], project: str, service: str,
                       **_: Any) -> dict[str, Any]:
        with self.state.lock:
            enabled = self.state.data["services"].setdefault(project_number(project), [])
            if service not in enabled:
                enabled.append(service)
            self.state.save()
        return self.operations.create("", {
            "@type": "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
            "service": self._service(project, service)})

    def get_project(self, body: dict[str, Any], project: str, **_: Any) -> dict[str, Any]:
        return {"name": f"projects/{project_number(project)}", "projectId": project,
                "state": "ACTIVE", "displayName": project, "parent": "organizations/0"}

    def get_iam_policy(self, body: dict[str, Any], project: str, **_: Any) -> dict[str, Any]:
        return self.state.data["iam"].get(project_number(project),
                                          {"version": 1, "etag": "BwX=", "bindings": []})

    def set_iam_policy(self, body: dict[str, Any], project: str, **_: Any) -> dict[str, Any]:
        policy = dict(body.get("policy") or {})
        policy["etag"] = "BwY" + self.state.next_id() + "="
        with self.state.lock:
            self.state.data["iam"][project_number(project)] = policy
            self.state.save()
        return policy
