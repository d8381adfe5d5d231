"""The setup steps' Google APIs: Service Usage (enable an API, or several at once as `gcloud
services enable` does), Resource Manager (the project: v3 for the SDK, v1 for gcloud), the
project's IAM policy, with Google's policy versions (a conditional binding is only
shown whole at version 3) and etags (a write based on a stale read is ABORTED), and IAM's
custom roles (`projects.roles` create, get, patch, delete, undelete, as iam.googleapis.com/v1
serves them); the sources are in docs/google-contract.md."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

from nbhelpers.emulator import access
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
# IAM v1 projects.roles (iam.googleapis.com): a project's custom roles.
_ROLES = r"/v1/projects/(?P<project>[^/:]+)/roles"
_ROLE = _ROLES + r"/(?P<role_id>[^/:]+)"
ROLE_ID = re.compile(r"[A-Za-z0-9_.]{3,64}")  # CreateRoleRequest.roleId
ROLE_STAGES = ("ALPHA", "BETA", "GA", "DEPRECATED", "DISABLED", "EAP")
ROLE_FIELDS = ("title", "description", "includedPermissions", "stage")  # what patch may change
TITLE_BYTES = 100  # Role.title: "typically limited to 100 UTF-8 bytes"
UNDELETE_DAYS = 7  # a deleted custom role can be undeleted for 7 days...
PURGE_DAYS = 37  # ...and its id is free again 37 days after the deletion
_PERMISSION = re.compile(r"[a-z][a-zA-Z0-9]*(\.[a-zA-Z][a-zA-Z0-9]*){2}")


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
            ("POST", _ROLES, self.create_role),
            ("GET", _ROLE, self.get_role),
            ("PATCH", _ROLE, self.patch_role),
            ("DELETE", _ROLE, self.delete_role),
            ("POST", _ROLE + r":undelete", self.undelete_role),
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

    # --- IAM custom roles (projects.roles) ---------------------------------------------------
    def _roles(self) -> dict[str, dict[str, Any]]:
        return self.state.data.setdefault(access.CUSTOM_ROLES, {})

    def _days_deleted(self, role: dict[str, Any]) -> float:
        return (time.time() - float(role.get("_deletedAt", time.time()))) / 86400

    def _role(self, project: str, role_id: str, headers: Any, permission: str,
              ) -> dict[str, Any]:
        """The stored role (deleted or not), after the caller's permission check; 404 when
        there is none, or when it was deleted longer ago than it can be undeleted."""
        name = f"projects/{project}/roles/{role_id}"
        access.require(self.state, headers, permission, project=project, resource=name,
                       service="iam.googleapis.com")
        role = self._roles().get(name)
        if role is None or (role.get("deleted") and self._days_deleted(role) > UNDELETE_DAYS):
            raise ApiError(404, f"The role named {name} was not found.", "NOT_FOUND")
        return role

    def create_role(self, body: dict[str, Any], project: str, headers: Any = None,
                    **_: Any) -> dict[str, Any]:
        """`{roleId, role}`: the role is checked as IAM checks it; an id in use is
        ALREADY_EXISTS, one deleted less than 37 days ago cannot be taken again."""
        access.require(self.state, headers, "iam.roles.create", project=project,
                       resource=f"projects/{project}", service="iam.googleapis.com")
        role_id = str(body.get("roleId") or "")
        if not ROLE_ID.fullmatch(role_id):
            raise ApiError(400, f"The role_id ({role_id}) is invalid: a role ID has 3 to 64 "
                           "letters, digits, underscores (_) and periods (.).")
        fields = _role_fields(dict(body.get("role") or {}), ROLE_FIELDS)
        name = f"projects/{project}/roles/{role_id}"
        with self.state.lock:
            existing = self._roles().get(name)
            if existing is not None and not existing.get("deleted"):
                raise ApiError(409, f"A role named {role_id} in projects/{project} already "
                               "exists.", "ALREADY_EXISTS")
            if existing is not None and self._days_deleted(existing) < PURGE_DAYS:
                raise ApiError(400, f"You can't create a role_id ({role_id}) which has been "
                               "marked for deletion.", "FAILED_PRECONDITION")
            role = {"name": name, "stage": "ALPHA", **fields,
                    "etag": _etag(self.state.next_id())}
            self._roles()[name] = role
            self.state.save()
        return _shown(role)

    def get_role(self, body: dict[str, Any], project: str, role_id: str, headers: Any = None,
                 **_: Any) -> dict[str, Any]:
        """A deleted role (within its 7 days) is shown with `deleted: true`."""
        return _shown(self._role(project, role_id, headers, "iam.roles.get"))

    def patch_role(self, body: dict[str, Any], project: str, role_id: str,
                   query: dict[str, str], headers: Any = None, **_: Any) -> dict[str, Any]:
        """The fields `updateMask` names (all the body gives without one) take the body's
        values; a stale etag is ABORTED, a deleted role must be undeleted first."""
        mask = [f.strip() for f in query.get("updateMask", "").split(",") if f.strip()] or \
            [f for f in ROLE_FIELDS if f in body]
        unknown = [f for f in mask if f not in ROLE_FIELDS]
        if unknown or not mask:
            raise ApiError(400, f"Invalid update_mask {query.get('updateMask', '')!r}: give "
                           f"one or more of {', '.join(ROLE_FIELDS)}.")
        fields = _role_fields({f: body.get(f) for f in mask}, mask)
        with self.state.lock:
            role = self._role(project, role_id, headers, "iam.roles.update")
            if role.get("deleted"):
                raise ApiError(400, f"The role {role['name']} is deleted: undelete it before "
                               "changing it.", "FAILED_PRECONDITION")
            if body.get("etag") and body["etag"] != role["etag"]:
                raise ApiError(409, CONCURRENT_CHANGE, "ABORTED")
            role.update(fields, etag=_etag(self.state.next_id()))
            self.state.save()
        return _shown(role)

    def delete_role(self, body: dict[str, Any], project: str, role_id: str,
                    query: dict[str, str], headers: Any = None, **_: Any) -> dict[str, Any]:
        """Marks the role deleted: its bindings stay in policies and grant nothing."""
        with self.state.lock:
            role = self._role(project, role_id, headers, "iam.roles.delete")
            if query.get("etag") and query["etag"] != role["etag"]:
                raise ApiError(409, CONCURRENT_CHANGE, "ABORTED")
            if not role.get("deleted"):
                role.update(deleted=True, _deletedAt=time.time(),
                            etag=_etag(self.state.next_id()))
                self.state.save()
        return _shown(role)

    def undelete_role(self, body: dict[str, Any], project: str, role_id: str,
                      headers: Any = None, **_: Any) -> dict[str, Any]:
        """`{etag}`: the role comes back as it was, and so do its bindings' permissions."""
        with self.state.lock:
            role = self._role(project, role_id, headers, "iam.roles.undelete")
            if not role.get("deleted"):
                raise ApiError(400, f"The role {role['name']} is not deleted.",
                               "FAILED_PRECONDITION")
            if body.get("etag") and body["etag"] != role["etag"]:
                raise ApiError(409, CONCURRENT_CHANGE, "ABORTED")
            role.pop("deleted", None)
            role.pop("_deletedAt", None)
            role["etag"] = _etag(self.state.next_id())
            self.state.save()
        return _shown(role)

    def age_deleted_role(self, name: str, days: float) -> None:
        """Makes a deleted role's deletion `days` old (tests: past the undelete window)."""
        with self.state.lock:
            self._roles()[name]["_deletedAt"] = time.time() - days * 86400
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


def _role_fields(given: dict[str, Any], fields: Any) -> dict[str, Any]:
    """The role's writable fields, checked as IAM checks them: a known stage, a title of at
    most 100 bytes, and permissions that exist (here: well formed, and for Vertex AI one of
    those the emulator knows; anything else would grant nothing)."""
    out: dict[str, Any] = {}
    for field in fields:
        if field not in given or given[field] is None:
            continue
        value = given[field]
        if field == "stage" and value not in ROLE_STAGES:
            raise ApiError(400, f"Invalid stage {value!r}: choose one of "
                           f"{', '.join(ROLE_STAGES)}.")
        if field == "title" and len(str(value).encode()) > TITLE_BYTES:
            raise ApiError(400, f"The title is {len(str(value).encode())} bytes; at most "
                           f"{TITLE_BYTES}.")
        if field == "includedPermissions":
            value = sorted({str(p) for p in value or []})
            for permission in value:
                if not _PERMISSION.fullmatch(permission) or (
                        permission.startswith("aiplatform.")
                        and permission not in access.AIPLATFORM_PERMISSIONS):
                    raise ApiError(400, f"Permission {permission} is not valid.")
        out[field] = value
    return out


def _shown(role: dict[str, Any]) -> dict[str, Any]:
    """The Role as the API returns it: no private keys; an ALPHA stage is left out, as
    Google leaves it out."""
    return {k: v for k, v in role.items() if not k.startswith("_")
            and not (k == "stage" and v == "ALPHA")}
