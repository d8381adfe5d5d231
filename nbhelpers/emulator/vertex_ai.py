"""Vertex AI endpoints and models: create, list (with label filters), get and delete, an
endpoint's own IAM policy, and the lookups the deployment and serving modules use, answered in
Vertex AI's own wording. Callers named restricted principals are held to their IAM roles
(see access.py).

A dedicated endpoint gets its own address, as on Google each gets its own DNS name
(`E.REGION-NUMBER.prediction.vertexai.goog`): `*.localhost` names do not resolve on every
machine (glibc without nss-myhostname does not), so here it is a port of its own on 127.0.0.1,
opened by the server when the endpoint is made and closed when it is deleted. Its inference
timeout (`clientConnectionConfig.inferenceTimeout`, a proto Duration such as "600s") is kept
and enforced by serving.py. Sources: "Create a public endpoint"
(cloud.google.com/vertex-ai/docs/predictions/create-public-endpoint, read 2026-11-26): a
dedicated endpoint's request timeout defaults to 10 minutes and may be set up to 3600 s with
clientConnectionConfig.inferenceTimeout at creation; google-cloud-aiplatform 2.7.0
`Endpoint.create(inference_timeout=...)` sends it only with dedicated_endpoint_enabled.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from nbhelpers.emulator import access
from nbhelpers.emulator.common import (
    LOCATION_PATH,
    V1,
    ApiError,
    Route,
    State,
    now,
    project_number,
)
from nbhelpers.emulator.operations import Operations
from nbhelpers.emulator.setup_apis import CONCURRENT_CHANGE, _etag
from nbhelpers.limits import (
    DEDICATED_DEFAULT_INFERENCE_TIMEOUT_S,
    DEDICATED_MAX_INFERENCE_TIMEOUT_S,
    SHARED_INFERENCE_TIMEOUT_S,
)

EMPTY = "type.googleapis.com/google.protobuf.Empty"
TOKEN_PLACEHOLDER = "<set at upload; not stored by the emulator>"
ENDPOINT = LOCATION_PATH + r"/endpoints/(?P<eid>[^/:]+)"  # deploy and serving add verbs to it
_MODEL = LOCATION_PATH + r"/models/(?P<mid>[^/:@]+)(?:@[^/:]*)?"


def parent(project: str, location: str) -> str:
    """The collection parent, with the project number as real resource names carry it."""
    return f"projects/{project_number(project)}/locations/{location}"


def _lookup(state: State, collection: str, *, name: str, missing: str) -> dict[str, Any]:
    resource = state.data[collection].get(name)
    if resource is None:
        raise ApiError(404, missing.format(name=name))  # Vertex AI's own wording
    return resource


def find_endpoint(state: State, *, project: str, location: str, eid: str) -> dict[str, Any]:
    """The endpoint, or Vertex AI's 404."""
    return _lookup(state, "endpoints", name=f"{parent(project, location)}/endpoints/{eid}",
                   missing='Endpoint "{name}" not found.')


def find_model(state: State, *, project: str, location: str, mid: str) -> dict[str, Any]:
    """The model (a version suffix `@N` is ignored: there is one version), or Vertex AI's 404."""
    name = f"{parent(project, location)}/models/{mid.split('@')[0]}"
    return _lookup(state, "models", name=name, missing='The Model "{name}" does not exist.')


def inference_timeout_s(endpoint: dict[str, Any]) -> float:
    """How long the serving front end waits for the endpoint's container: the endpoint's own
    inference timeout, else its type's (10 min dedicated, 60 s shared)."""
    if not endpoint.get("dedicatedEndpointEnabled"):
        return SHARED_INFERENCE_TIMEOUT_S
    configured = (endpoint.get("clientConnectionConfig") or {}).get("inferenceTimeout")
    return _duration_s(configured) if configured else DEDICATED_DEFAULT_INFERENCE_TIMEOUT_S


def _duration_s(value: Any) -> float:
    """A proto Duration in JSON ("600s", "1.5s"), as the REST transport sends it."""
    match = re.fullmatch(r"(\d+(?:\.\d{1,9})?)s", str(value))
    if not match:
        raise ApiError(400, f"Invalid value at 'endpoint.client_connection_config."
                       f"inference_timeout' ({value!r}): a duration such as \"600s\".")
    return float(match.group(1))


def _client_connection_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """The endpoint's clientConnectionConfig, checked: a positive inference timeout of at most
    an hour, on a dedicated endpoint (shared ones end a prediction at about 60 s)."""
    config = body.get("clientConnectionConfig") or {}
    if not config.get("inferenceTimeout"):
        return None
    seconds = _duration_s(config["inferenceTimeout"])
    if not body.get("dedicatedEndpointEnabled"):
        raise ApiError(400, "client_connection_config.inference_timeout applies to dedicated "
                       "endpoints (dedicated_endpoint_enabled) and Private Service Connect "
                       "endpoints only; a shared public endpoint ends a prediction at "
                       f"{SHARED_INFERENCE_TIMEOUT_S} s.")
    if not 0 < seconds <= DEDICATED_MAX_INFERENCE_TIMEOUT_S:
        raise ApiError(400, f"client_connection_config.inference_timeout must be more than 0 "
                       f"and at most {DEDICATED_MAX_INFERENCE_TIMEOUT_S}s, got "
                       f"{config['inferenceTimeout']}.")
    return {"inferenceTimeout": config["inferenceTimeout"]}


def parse_filter(text: str) -> list[tuple[str, str]]:
    """Supports the filters the suite uses: `labels.k=v` and `display_name=v`, joined by AND."""
    terms = []
    for raw in re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        match = re.fullmatch(r'\s*(labels\.[a-z][a-z0-9_-]*|display_name)\s*=\s*"?([^"]*)"?\s*',
                             raw)
        if not match:
            raise ApiError(400, f"Unsupported filter term {raw!r}")
        terms.append((match.group(1), match.group(2)))
    return terms


def matches(resource: dict[str, Any], terms: list[tuple[str, str]]) -> bool:
    """Whether a resource passes every term of a parsed filter."""
    for key, value in terms:
        if key == "display_name":
            if resource.get("displayName") != value:
                return False
        elif resource.get("labels", {}).get(key[len("labels."):]) != value:
            return False
    return True


class VertexAI:
    """Endpoints and models. `busy(name)` tells whether a deployment to or of that resource is
    in flight (the deployments module knows; asking it through a callable keeps this module
    below it)."""

    def __init__(self, state: State, operations: Operations, busy: Callable[[str], bool]):
        self.state, self.operations, self.busy = state, operations, busy
        # The server's listeners: open(endpoint name) -> "127.0.0.1:PORT", close(endpoint name).
        # None until it serves HTTPS: dedicated endpoints then get Google-shaped names.
        self._open_address: Callable[[str], str] | None = None
        self._close_address: Callable[[str], None] = lambda name: None

    def routes(self) -> list[Route]:
        return [
            ("POST", LOCATION_PATH + r"/endpoints", self.create_endpoint),
            ("GET", LOCATION_PATH + r"/endpoints", self.list_endpoints),
            ("GET", ENDPOINT, self.get_endpoint),
            ("DELETE", ENDPOINT, self.delete_endpoint),
            ("PATCH", ENDPOINT, self.update_endpoint),
            ("POST", LOCATION_PATH + r"/models:upload", self.upload_model),
            ("GET", LOCATION_PATH + r"/models", self.list_models),
            ("GET", _MODEL, self.get_model),
            ("DELETE", _MODEL, self.delete_model),
            ("PATCH", _MODEL, self.update_model),
            ("POST", ENDPOINT + r":getIamPolicy", self.get_endpoint_iam_policy),
            ("POST", ENDPOINT + r":setIamPolicy", self.set_endpoint_iam_policy),
            ("POST", r"/emulator/restricted-principals", self.restrict_principal),
        ]

    def serve_dedicated_with(self, open_address: Callable[[str], str],
                             close_address: Callable[[str], None]) -> None:
        """Each dedicated endpoint is served on its own listener from now on; ports change
        between runs, so endpoints kept in the state file get a listener and a new address."""
        self._open_address, self._close_address = open_address, close_address
        with self.state.lock:
            for name, endpoint in self.state.data["endpoints"].items():
                if endpoint.get("dedicatedEndpointEnabled"):
                    endpoint["dedicatedEndpointDns"] = open_address(name)
            self.state.save()

    def _dedicated_dns(self, name: str, *, project: str, location: str) -> str:
        if self._open_address is not None:
            return self._open_address(name)
        return (f"{name.split('/')[-1]}.{location}-{project_number(project)}"
                ".prediction.vertexai.goog")

    def _list(self, collection: str, *, project: str, location: str,
              query: dict[str, str], headers: Any = None) -> dict[str, Any]:
        access.require(self.state, headers, f"aiplatform.{collection}.list", project=project,
                       resource=parent(project, location))
        terms = parse_filter(query.get("filter", ""))
        prefix = parent(project, location) + "/"
        found = [r for n, r in self.state.data[collection].items()
                 if n.startswith(prefix) and matches(r, terms)]
        return {collection: found} if found else {}

    def _add(self, collection: str, resource: dict[str, Any]) -> None:
        with self.state.lock:
            self.state.data[collection][resource["name"]] = resource
            self.state.save()

    def _update(self, resource: dict[str, Any], body: dict[str, Any],
                query: dict[str, str]) -> dict[str, Any]:
        """A PATCH: the fields `updateMask` names take the body's values (the SDK's
        `update(labels=...)` sends updateMask=labels); the resource itself is the reply."""
        fields = {"labels": "labels", "display_name": "displayName",
                  "displayName": "displayName", "description": "description"}
        mask = [f.strip() for f in query.get("updateMask", "").split(",") if f.strip()]
        unknown = [f for f in mask if f not in fields]
        if not mask or unknown:
            raise ApiError(400, f"Invalid update_mask {query.get('updateMask', '')!r}: give one "
                           f"or more of {', '.join(sorted(set(fields.values())))}.")
        with self.state.lock:
            for field in mask:
                resource[fields[field]] = body.get(fields[field], {} if field == "labels" else "")
            resource["updateTime"] = now()
            self.state.save()
        return resource

    def _remove(self, collection: str, resource: dict[str, Any]) -> dict[str, Any]:
        with self.state.lock:
            del self.state.data[collection][resource["name"]]
            self.state.save()
        return self.operations.create(resource["name"], {"@type": EMPTY})

    # --- endpoints ---------------------------------------------------------------------
    def create_endpoint(self, body: dict[str, Any], *, project: str, location: str,
                        headers: Any = None, **_: Any) -> dict[str, Any]:
        access.require(self.state, headers, "aiplatform.endpoints.create", project=project,
                       resource=parent(project, location))
        name = f"{parent(project, location)}/endpoints/{self.state.next_id()}"
        endpoint = {"name": name, "displayName": body.get("displayName", ""),
                    "labels": body.get("labels", {}), "createTime": now(),
                    "updateTime": now(), "etag": "AMEw9yN=", "deployedModels": [],
                    "trafficSplit": {}}
        if body.get("description"):
            endpoint["description"] = body["description"]
        connection = _client_connection_config(body)  # checked before anything exists
        if connection:
            endpoint["clientConnectionConfig"] = connection
        if body.get("dedicatedEndpointEnabled"):
            endpoint["dedicatedEndpointEnabled"] = True
            endpoint["dedicatedEndpointDns"] = self._dedicated_dns(name, project=project,
                                                                   location=location)
        self._add("endpoints", endpoint)
        return self.operations.create(name, {"@type": V1 + "Endpoint", **endpoint})

    def list_endpoints(self, body: dict[str, Any], *, project: str, location: str,
                       query: dict[str, str], headers: Any = None, **_: Any) -> dict[str, Any]:
        return self._list("endpoints", project=project, location=location, query=query,
                          headers=headers)

    def get_endpoint(self, body: dict[str, Any], *, project: str, location: str, eid: str,
                     headers: Any = None, **_: Any) -> dict[str, Any]:
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        access.require(self.state, headers, "aiplatform.endpoints.get", project=project,
                       resource=endpoint["name"])
        return endpoint

    def delete_endpoint(self, body: dict[str, Any], *, project: str, location: str, eid: str,
                        headers: Any = None, **_: Any) -> dict[str, Any]:
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        access.require(self.state, headers, "aiplatform.endpoints.delete", project=project,
                       resource=endpoint["name"])
        if endpoint["deployedModels"] or self.busy(endpoint["name"]):
            raise ApiError(400, f"Endpoint {endpoint['name']} has deployed models or a model "
                           "being deployed; undeploy them (or wait for the deployment to end) "
                           "before deleting the endpoint.", "FAILED_PRECONDITION")
        with self.state.lock:  # its IAM policy goes with it
            self.state.data.get(access.ENDPOINT_POLICIES, {}).pop(endpoint["name"], None)
        if endpoint.get("dedicatedEndpointEnabled"):
            self._close_address(endpoint["name"])  # its DNS name goes too
        return self._remove("endpoints", endpoint)

    def _endpoint_policy(self, name: str) -> dict[str, Any]:
        return self.state.data.get(access.ENDPOINT_POLICIES, {}).get(name) or {
            "version": 1, "etag": "BwWWja0YfJA=", "bindings": []}

    def get_endpoint_iam_policy(self, body: dict[str, Any], *, project: str, location: str,
                                eid: str, headers: Any = None, **_: Any) -> dict[str, Any]:
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        access.require(self.state, headers, "aiplatform.endpoints.getIamPolicy",
                       project=project, resource=endpoint["name"])
        return self._endpoint_policy(endpoint["name"])

    def set_endpoint_iam_policy(self, body: dict[str, Any], *, project: str, location: str,
                                eid: str, headers: Any = None, **_: Any) -> dict[str, Any]:
        """The whole policy is replaced; a write based on a stale read (its etag) is ABORTED,
        as for every IAM policy."""
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        access.require(self.state, headers, "aiplatform.endpoints.setIamPolicy",
                       project=project, resource=endpoint["name"])
        policy = dict(body.get("policy") or {})
        bindings = [dict(b) for b in policy.get("bindings") or []]
        with self.state.lock:
            stored = self._endpoint_policy(endpoint["name"])
            if policy.get("etag") and policy["etag"] != stored["etag"]:
                raise ApiError(409, CONCURRENT_CHANGE, "ABORTED")
            saved = {"version": 3 if any(b.get("condition") for b in bindings) else 1,
                     "etag": _etag(self.state.next_id()), "bindings": bindings}
            self.state.data.setdefault(access.ENDPOINT_POLICIES, {})[endpoint["name"]] = saved
            self.state.save()
        return saved

    def restrict_principal(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        """From now on `email` (in `groups`) holds only what IAM bindings grant it."""
        email = str(body.get("email") or "")
        if "@" not in email:
            raise ApiError(400, f"email must be an e-mail address, got {email!r}")
        access.restrict(self.state, email, [str(g) for g in body.get("groups") or []])
        return {"restricted": sorted(self.state.data[access.RESTRICTED])}

    def update_endpoint(self, body: dict[str, Any], *, project: str, location: str, eid: str,
                        query: dict[str, str], **_: Any) -> dict[str, Any]:
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        return self._update(endpoint, body, query)

    # --- models ------------------------------------------------------------------------
    def upload_model(self, body: dict[str, Any], *, project: str, location: str,
                     headers: Any = None, **_: Any) -> dict[str, Any]:
        access.require(self.state, headers, "aiplatform.models.upload", project=project,
                       resource=parent(project, location))
        spec = body.get("model") or {}
        if not spec.get("containerSpec", {}).get("imageUri"):
            raise ApiError(400, "model.container_spec.image_uri is required.")
        name = f"{parent(project, location)}/models/{self.state.next_id()}"
        container = dict(spec["containerSpec"])
        # The replica only needs to know a token was given; never keep one on disk.
        container["env"] = [{**e, "value": TOKEN_PLACEHOLDER} if e.get("name") == "HF_TOKEN"
                            and e.get("value") else e for e in container.get("env", [])]
        model = {"name": name, "displayName": spec.get("displayName", ""),
                 "labels": spec.get("labels", {}), "containerSpec": container,
                 "versionId": "1", "versionAliases": ["default"], "createTime": now(),
                 "updateTime": now(), "etag": "AMEw9yM=",
                 "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],
                 "deployedModels": []}
        self._add("models", model)
        return self.operations.create(name, {"@type": V1 + "UploadModelResponse",
                                             "model": name, "modelVersionId": "1"})

    def list_models(self, body: dict[str, Any], *, project: str, location: str,
                    query: dict[str, str], headers: Any = None, **_: Any) -> dict[str, Any]:
        return self._list("models", project=project, location=location, query=query,
                          headers=headers)

    def get_model(self, body: dict[str, Any], *, project: str, location: str, mid: str,
                  headers: Any = None, **_: Any) -> dict[str, Any]:
        model = find_model(self.state, project=project, location=location, mid=mid)
        access.require(self.state, headers, "aiplatform.models.get", project=project,
                       resource=model["name"])
        return model

    def delete_model(self, body: dict[str, Any], *, project: str, location: str, mid: str,
                     headers: Any = None, **_: Any) -> dict[str, Any]:
        model = find_model(self.state, project=project, location=location, mid=mid)
        access.require(self.state, headers, "aiplatform.models.delete", project=project,
                       resource=model["name"])
        if self.busy(model["name"]):
            raise ApiError(400, f"Model {model['name']} is being deployed; wait for the "
                           "deployment to end, then undeploy it.", "FAILED_PRECONDITION")
        if model["deployedModels"]:
            raise ApiError(400, f"Model {model['name']} is deployed to "
                           f"{model['deployedModels'][0]['endpoint']}; undeploy it first.",
                           "FAILED_PRECONDITION")
        return self._remove("models", model)

    def update_model(self, body: dict[str, Any], *, project: str, location: str, mid: str,
                     query: dict[str, str], **_: Any) -> dict[str, Any]:
        model = find_model(self.state, project=project, location=location, mid=mid)
        return self._update(model, body, query)
