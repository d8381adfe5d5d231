"""Who may do what: IAM permission checks by the caller's identity (its access token names it),
from the project's IAM policy and an endpoint's own policy, as Google checks them, with the
permissions of predefined roles (modelled below) and of the project's custom roles (kept by
setup_apis' IAM roles API under `projects/{project}/roles/{roleId}`).

Every caller is the rehearsal project's owner, as before, unless it was named a *restricted
principal* (POST /emulator/restricted-principals): its permissions then come only from the role
bindings that name it (`user:EMAIL`, or `group:GROUP` for the groups it was given), on the
project or on the endpoint. This is how tests play workshop attendees beside their organiser.

Sources (read 2026-11-26): "Control access to Vertex AI endpoints"
(cloud.google.com/vertex-ai/docs/general/endpoint-access-control): an endpoint has its own IAM
policy (v1beta1 endpoints getIamPolicy/setIamPolicy), granted permissions apply to that endpoint
only, getIamPolicy needs endpoints.getIamPolicy on the endpoint or the project (Vertex AI
Administrator); "Vertex AI access control with IAM" (.../general/access-control): project-level
access applies to every resource of the project; the Vertex AI User role grants use of the
resources, including deploying and undeploying; "Use custom roles to grant least privilege": a
custom role with only aiplatform.endpoints.predict calls an endpoint without controlling it.
The Vertex AI REST reference names one permission per method: endpoints.get needs
aiplatform.endpoints.get; predict, rawPredict, streamRawPredict and chat.completions all need
aiplatform.endpoints.predict. IAM's roles.delete reference: a deleted custom role's bindings
stay in policies but have no effect; a role whose stage is DISABLED grants nothing (Role
reference, RoleLaunchStage).
Assumptions: the predefined roles' permission sets below are the few this suite's calls need,
not Google's whole role definitions. The refusal's wording is Google's as public reports quote
it: "Permission '...' denied on resource '//SERVICE/NAME' (or it may not exist)."
"""

from __future__ import annotations

from typing import Any

from nbhelpers.emulator.common import ApiError, State, project_number
from nbhelpers.emulator.identity import email_of

_ENDPOINT_USE = ("aiplatform.endpoints.get", "aiplatform.endpoints.predict")
_ENDPOINT_CONTROL = ("aiplatform.endpoints.create", "aiplatform.endpoints.list",
                     "aiplatform.endpoints.update", "aiplatform.endpoints.deploy",
                     "aiplatform.endpoints.undeploy", "aiplatform.endpoints.delete")
_MODELS = ("aiplatform.models.upload", "aiplatform.models.get", "aiplatform.models.list",
           "aiplatform.models.update", "aiplatform.models.delete")
_IAM = ("aiplatform.endpoints.getIamPolicy", "aiplatform.endpoints.setIamPolicy")
# IAM's own roles API (projects.roles): who may define custom roles.
CUSTOM_ROLE_ADMIN = ("iam.roles.create", "iam.roles.get", "iam.roles.list", "iam.roles.update",
                     "iam.roles.delete", "iam.roles.undelete")
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/owner": frozenset(_ENDPOINT_USE + _ENDPOINT_CONTROL + _MODELS + _IAM
                             + CUSTOM_ROLE_ADMIN),
    "roles/editor": frozenset(_ENDPOINT_USE + _ENDPOINT_CONTROL + _MODELS),
    "roles/aiplatform.admin": frozenset(_ENDPOINT_USE + _ENDPOINT_CONTROL + _MODELS + _IAM),
    "roles/aiplatform.user": frozenset(_ENDPOINT_USE + _ENDPOINT_CONTROL + _MODELS),
    "roles/aiplatform.viewer": frozenset(("aiplatform.endpoints.get", "aiplatform.endpoints.list",
                                          "aiplatform.models.get", "aiplatform.models.list")),
    "roles/iam.roleAdmin": frozenset(CUSTOM_ROLE_ADMIN),
}
# The Vertex AI permissions the emulator knows: a custom role naming another aiplatform.*
# permission would be a misspelling that grants nothing, so the roles API refuses it.
AIPLATFORM_PERMISSIONS = frozenset(_ENDPOINT_USE + _ENDPOINT_CONTROL + _MODELS + _IAM)
RESTRICTED = "restricted_principals"  # state key: e-mail -> the groups it belongs to
ENDPOINT_POLICIES = "endpoint_iam"  # state key: endpoint resource name -> its IAM policy
CUSTOM_ROLES = "custom_roles"  # state key: projects/P/roles/R -> the Role as the API shows it


def caller(headers: Any) -> str | None:
    """The e-mail the request's access token names, or None (no rehearsal token)."""
    token = ((headers or {}).get("Authorization") or "").removeprefix("Bearer ").strip()
    return email_of(token) or None


def restrict(state: State, email: str, groups: list[str]) -> None:
    with state.lock:
        state.data.setdefault(RESTRICTED, {})[email.lower()] = sorted(g.lower() for g in groups)
        state.save()


def _bindings(policy: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [b for b in (policy or {}).get("bindings") or [] if not b.get("condition")]


def role_permissions(state: State, role: str) -> frozenset[str]:
    """What a binding of `role` grants: a predefined role's modelled permissions, or a custom
    role's includedPermissions; nothing for a custom role that is deleted, DISABLED or unknown."""
    if not role.startswith(("projects/", "organizations/")):
        return ROLE_PERMISSIONS.get(role, frozenset())
    custom = state.data.get(CUSTOM_ROLES, {}).get(role)
    if custom is None or custom.get("deleted") or custom.get("stage") == "DISABLED":
        return frozenset()
    return frozenset(custom.get("includedPermissions") or [])


def require(state: State, headers: Any, permission: str, *, project: str,
            resource: str, service: str = "aiplatform.googleapis.com") -> None:
    """Raises Google's 403 unless the caller holds `permission` on `resource` (a full
    resource name of `service`; an endpoint's own policy counts for it and what is under it)."""
    email = caller(headers)
    restricted = state.data.get(RESTRICTED, {})
    if email is None or email.lower() not in restricted:
        return  # the rehearsal project's owner
    members = {f"user:{email.lower()}"} | {f"group:{g}" for g in restricted[email.lower()]}
    policies = [state.data["iam"].get(project_number(project))]
    endpoints = state.data.get(ENDPOINT_POLICIES, {})
    policies += [policy for name, policy in endpoints.items()
                 if resource == name or resource.startswith(name + "/")]
    for binding in (b for policy in policies for b in _bindings(policy)):
        if members & {m.lower() for m in binding.get("members", [])} and \
                permission in role_permissions(state, binding.get("role", "")):
            return
    raise ApiError(403, f"Permission '{permission}' denied on resource "
                   f"'//{service}/{resource}' (or it may not exist).", "PERMISSION_DENIED")
