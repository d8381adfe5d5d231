"""The setup steps' Google APIs: Service Usage (enable an API, or several at once as `gcloud
services enable` does), Resource Manager (the project: v3 for the SDK, v1 for gcloud) and the
project's IAM policy, with Google's policy versions (a conditional binding is only
shown whole at version 3) and etags (a write based on a stale read is ABORTED); the sources are
in docs/google-contract.md."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from nbhelpers.emulator.common import ApiError, Route, State, project_number
from nbhelpers.emulator.operations import Operations

_PROJECT = r"/v3/projects/(?P<project>[^/:]+)"
_PROJECT_V1 = r"/v1/projects/(?P<project>[^/:]+)"  # Resource Manager v1, as gcloud calls it
_SERVICE = r"/v1/projects/(?P<project>[^/]+)/services/(?P<service>[^/:]+)"
VALID_POLICY_VERSIONS = (0, 1, 3)
WITHCOND = "_withcond_"  # how a version-1 read names a conditional binding's role
CONCURRENT_CHANGE = ("There were concurrent policy changes. Please retry the whole "
                     "read-modify-write with exponential backoff.")
_INITIAL_ETAG = "BwWWja0YfJA="  # canonical base64: the SDK decodes etags to bytes


class SetupApis:
    """Enabled services and IAM policies, kept by project number under "services" and "iam"."""

    def __init__(self, state: State, operations: Operations):
        self.state, self.operations = state, operations
        # Writes by "someone else" that land just before the next setIamPolicy (tests).
        self._before_next_write: list[Callable[[SetupApis, str], None]] = []

    def routes(self) -> list[Route]:
        return [
            ("GET", _SERVICE, self.get_service),
            ("POST", _SERVICE + r":enable", self.enable_service),
            ("POST", r"/v1/projects/(?P<project>[^/]+)/services:batchEnable",
             self.batch_enable_services),
            ("GET", _PROJECT, self.get_project),
            ("POST", _PROJECT + r":getIamPolicy", self.get_iam_policy),
            ("POST", _PROJECT + r":setIamPolicy", self.set_iam_policy),
            ("GET", _PROJECT_V1, self.get_project_v1),
            ("POST", _PROJECT_V1 + r":getIamPolicy", self.get_iam_policy),
            ("POST", _PROJECT_V1 + r":setIamPolicy", self.set_iam_policy),
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

    def batch_enable_services(self, body: dict[str, Any], project: str,
                              **_: Any) -> dict[str, Any]:
        """`services:batchEnable {serviceIds}` (at most 20, all or none): one operation whose
        response lists every service enabled."""
        ids = [str(s) for s in body.get("serviceIds") or []]
        if not ids or len(ids) > 20:
            raise ApiError(400, f"serviceIds must name 1 to 20 services; got {len(ids)}.")
        with self.state.lock:
            enabled = self.state.data["services"].setdefault(project_number(project), [])
            enabled += [s for s in ids if s not in enabled]
            self.state.save()
        return self.operations.create("", {
            "@type": "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse",
            "services": [self._service(project, s) for s in ids]})

    def get_project_v1(self, body: dict[str, Any], project: str, **_: Any) -> dict[str, Any]:
        """Resource Manager v1's Project (what `gcloud projects describe` prints): the number
        is a field of its own, the id is the name."""
        return {"projectNumber": project_number(project), "projectId": project,
                "lifecycleState": "ACTIVE", "name": project,
                "createTime": "2024-01-01T00:00:00.000Z",
                "parent": {"type": "organization", "id": "0"}}

    def get_project(self, body: dict[str, Any], project: str, **_: Any) -> dict[str, Any]:
        return {"name": f"projects/{project_number(project)}", "projectId": project,
                "state": "ACTIVE", "displayName": project, "parent": "organizations/0"}

    # --- project IAM ---------------------------------------------------------------------
    def _stored_policy(self, project: str) -> dict[str, Any]:
        return self.state.data["iam"].get(project_number(project)) or {
            "version": 1, "etag": _INITIAL_ETAG, "bindings": []}

    def get_iam_policy(self, body: dict[str, Any], project: str, **_: Any) -> dict[str, Any]:
        """The policy in the version asked for: below 3, conditional bindings come back as
        Google returns them, renamed `ROLE_withcond_HASH` without their condition."""
        requested = int((body.get("options") or {}).get("requestedPolicyVersion") or 0)
        if requested not in VALID_POLICY_VERSIONS:
            raise ApiError(400, f"Invalid requested policy version {requested}; valid values "
                           f"are {', '.join(map(str, VALID_POLICY_VERSIONS))}.")
        policy = self._stored_policy(project)
        if not _has_conditions(policy):
            return {**policy, "version": 1}
        if requested == 3:
            return {**policy, "version": 3}
        return {**policy, "version": 1, "bindings": [_hide_condition(b)
                                                      for b in policy["bindings"]]}

    def set_iam_policy(self, body: dict[str, Any], project: str, **_: Any) -> dict[str, Any]:
        """Google's read-modify-write rules: a stale etag is ABORTED; a write below version 3
        that would touch conditions is refused; without an etag the write wins, conditions
        and all (Google's documented way to lose them)."""
        policy = dict(body.get("policy") or {})
        version = int(policy.get("version") or 0)
        bindings = [dict(b) for b in policy.get("bindings") or []]
        with self.state.lock:
            if self._before_next_write:
                self._before_next_write.pop(0)(self, project)
            stored = self._stored_policy(project)
            etag = policy.get("etag")
            if etag and etag != stored["etag"]:
                raise ApiError(409, CONCURRENT_CHANGE, "ABORTED")
            if version < 3 and (any(b.get("condition") for b in bindings)
                                or (etag and _has_conditions(stored))):
                raise ApiError(400, f"Policy version {version} cannot be used with conditional "
                               "role bindings: read the policy with requestedPolicyVersion 3 "
                               "and set version 3 in the policy you write.")
            hidden = [b["role"] for b in bindings if WITHCOND in b.get("role", "")]
            if hidden:
                raise ApiError(400, f"Role {hidden[0]} does not exist: it is how a version-1 "
                               "read shows a conditional binding. Read the policy with "
                               "options.requestedPolicyVersion 3 and write it back at version 3.")
            saved = {"version": 3 if any(b.get("condition") for b in bindings) else 1,
                     "etag": _etag(self.state.next_id()), "bindings": bindings}
            self.state.data["iam"][project_number(project)] = saved
            self.state.save()
        return saved

    def interleave_write(self, change: Callable[[SetupApis, str], None]) -> None:
        """Runs `change(setup_apis, project)` just before the next setIamPolicy is looked at:
        another administrator's write that lands between a client's read and its write."""
        self._before_next_write.append(change)

    def write_as_someone_else(self, project: str, binding: dict[str, Any]) -> None:
        """Adds `binding` (a conditional one, typically) the way another person's version-3
        read-modify-write would: the etag changes, whatever a client read before is stale."""
        with self.state.lock:
            stored = self._stored_policy(project)
            bindings = [*stored["bindings"], binding]
            self.state.data["iam"][project_number(project)] = {
                "version": 3 if any(b.get("condition") for b in bindings) else 1,
                "etag": _etag(self.state.next_id()), "bindings": bindings}
            self.state.save()


def _has_conditions(policy: dict[str, Any]) -> bool:
    return any(b.get("condition") for b in policy.get("bindings") or [])


def _hide_condition(binding: dict[str, Any]) -> dict[str, Any]:
    """A conditional binding as a version-1 read shows it: the role renamed with a hash of
    the condition, the condition itself left out."""
    if not binding.get("condition"):
        return binding
    digest = hashlib.sha256(json.dumps([binding["role"], binding["condition"]],
                                       sort_keys=True).encode()).hexdigest()[:20]
    return {"role": f"{binding['role']}{WITHCOND}{digest}", "members": binding["members"]}


def _etag(counter: str) -> str:
    """Etags are opaque base64 strings, new on every write."""
    return base64.b64encode(f"nbh-iam-{counter}".encode()).decode()
