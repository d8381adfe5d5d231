"""Who may do what: IAM permission checks by the caller's identity (its access token names it),
from the project's IAM policy and an endpoint's own policy, as Google checks them.

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
resources, including deploying and undeploying (a custom role with only
aiplatform.endpoints.predict calls an endpoint without controlling it).
Assumptions: the permission sets below are the few this suite's calls need, not Google's whole
role definitions; the refusal's wording follows Google's usual "Permission '...' denied on
resource '...' (or it may not exist)."
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
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/owner": frozenset(_ENDPOINT_USE + _ENDPOINT_CONTROL + _MODELS + _IAM),
    "roles/editor": frozenset(_ENDPOINT_USE + _ENDPOINT_CONTROL + _MODELS),
    "roles/aiplatform.admin": frozenset(_ENDPOINT_USE + _ENDPOINT_CONTROL + _MODELS + _IAM),
    "roles/aiplatform.user": frozenset(_ENDPOINT_USE + _ENDPOINT_CONTROL + _MODELS),
    "roles/aiplatform.viewer": frozenset(("aiplatform.endpoints.get", "aiplatform.endpoints.list",
                                          "aiplatform.models.get", "aiplatform.models.list")),
}
RESTRICTED = "restricted_principals"  # state key: e-mail -> the groups it belongs to
ENDPOINT_POLICIES = "endpoint_iam"  # state key: endpoint resource name -> its IAM policy


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


def require(state: State, headers: Any, permission: str, *, project: str,
            resource: str) -> None:
    """Raises Google's 403 unless the caller holds `permission` on `resource` (a full
    resource name; an endpoint's own policy counts for it and what is under it)."""
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
                permission in ROLE_PERMISSIONS.get(binding.get("role", ""), frozenset()):
            return
    raise ApiError(403, f"Permission '{permission}' denied on resource "
                   f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
                   "PERMISSION_DENIED")
