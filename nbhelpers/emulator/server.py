"""The Vertex AI REST surface that the real SDKs use (see ../shared/docs/vertex-rest-contract.md),
plus the Service Usage and Resource Manager calls of the setup steps, served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nbhelpers.emulator.httpbase import ConnectionPool, JsonHandler, Server
from nbhelpers.emulator.replica import Replica
from nbhelpers.emulator.startup import (
    SEEDED_CAUSES,
    QuotaFailure,
    StartupFailure,
    seeded_failure_lines,
    start_replica,
)

PREDICT_PAYLOAD_LIMIT = 1_572_864
DEFAULT_GPU_QUOTA = 16
TOKEN_PLACEHOLDER = "<set at upload; not stored by the emulator>"
V1 = "type.googleapis.com/google.cloud.aiplatform.v1."
EMPTY = "type.googleapis.com/google.protobuf.Empty"
STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
          503: "UNAVAILABLE", 412: "FAILED_PRECONDITION"}
GRPC_CODE = {"INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "FAILED_PRECONDITION": 9, "INTERNAL": 13}


class ApiError(Exception):
    def __init__(self, http_status: int, message: str, status: str | None = None):
        super().__init__(message)
        self.http_status, self.message = http_status, message
        self.status = status or STATUS.get(http_status, "UNKNOWN")


def project_number(project: str) -> str:
    """A stable made-up project number, as real resource names carry numbers, not ids."""
    if project.isdigit():
        return project
    return str(int(hashlib.sha256(project.encode()).hexdigest()[:10], 16) % 10**12).rjust(12, "1")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _accelerator_name(value: Any) -> str:
    """Enums arrive as numbers with enum-encoding=int; map them through the SDK's own enum."""
    if isinstance(value, (int, float)):
        from google.cloud.aiplatform_v1.types import AcceleratorType

        return AcceleratorType(int(value)).name
    return str(value or "ACCELERATOR_TYPE_UNSPECIFIED")


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


def _matches(resource: dict[str, Any], terms: list[tuple[str, str]]) -> bool:
    for key, value in terms:
        if key == "display_name":
            if resource.get("displayName") != value:
                return False
        elif resource.get("labels", {}).get(key[len("labels."):]) != value:
            return False
    return True


class State:
    """Every resource, persisted as JSON after each change when a file is given."""

    def __init__(self, path: Path | None):
        self.path = path
        self.lock = threading.RLock()
        self.data: dict[str, Any] = {"endpoints": {}, "models": {}, "operations": {},
                                     "services": {}, "iam": {}, "logs": {}, "counter": 1000}
        if path and path.exists():
            self.data.update(json.loads(path.read_text()))

    def next_id(self) -> str:
        with self.lock:
            self.data["counter"] += 1
            return str(self.data["counter"])

    def save(self) -> None:
        if self.path:
            with self.lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.data, indent=1))
                tmp.replace(self.path)


class VertexEmulator:
    """The HTTP server and the behaviour behind it. `deploy_seconds` is how long a deployment
    takes before it is ready (real ones take up to an hour)."""

    def __init__(self, state_file: str | Path | None = None, deploy_seconds: float = 0.5,
                 service_seconds: float = 0.0):
        self.state = State(Path(state_file) if state_file else None)
        self.deploy_seconds = deploy_seconds
        self.service_seconds = service_seconds  # per request, in each replica
        self.faults: list[dict[str, Any]] = []  # injected errors for serving calls
        self._pool = ConnectionPool()
        self.expired_tokens: set[str] = set()
        self.deploying: dict[str, int] = {}  # endpoint or model name -> deployments in flight
        self.seeded_failures: list[str] = []  # causes the next deployments fail with
        self.replicas: dict[str, Replica] = {}
        self._server: Server | None = None
        self._tls_server: Server | None = None
        self.ca_file: str | None = None
        self.dedicated_dns: str | None = None
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = []
        p = r"/(?:v1|v1beta1|ui)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
        for method, pattern, func in (
            ("POST", p + r"/endpoints", self.create_endpoint),
            ("GET", p + r"/endpoints", self.list_endpoints),
            ("GET", p + r"/endpoints/(?P<eid>[^/:]+)", self.get_endpoint),
            ("DELETE", p + r"/endpoints/(?P<eid>[^/:]+)", self.delete_endpoint),
            ("POST", p + r"/endpoints/(?P<eid>[^/:]+):deployModel", self.deploy_model),
            ("POST", p + r"/endpoints/(?P<eid>[^/:]+):undeployModel", self.undeploy_model),
            ("POST", p + r"/endpoints/(?P<eid>[^/:]+):predict", self.predict),
            ("POST", p + r"/endpoints/(?P<eid>[^/:]+)/chat/completions", self.chat),
            ("POST", p + r"/models:upload", self.upload_model),
            ("GET", p + r"/models", self.list_models),
            ("GET", p + r"/models/(?P<mid>[^/:@]+)(?:@[^/:]*)?", self.get_model),
            ("DELETE", p + r"/models/(?P<mid>[^/:@]+)(?:@[^/:]*)?", self.delete_model),
            ("GET", r"/(?:v1|v1beta1|ui)/(?P<name>(?:.+/)?operations/[^/]+)", self.get_operation),
            ("GET", r"/v1/projects/(?P<project>[^/]+)/services/(?P<service>[^/:]+)",
             self.get_service),
            ("POST", r"/v1/projects/(?P<project>[^/]+)/services/(?P<service>[^/:]+):enable",
             self.enable_service),
            ("GET", r"/v3/projects/(?P<project>[^/:]+)", self.get_project),
            ("POST", r"/v3/projects/(?P<project>[^/:]+):getIamPolicy", self.get_iam_policy),
            ("POST", r"/v3/projects/(?P<project>[^/:]+):setIamPolicy", self.set_iam_policy),
            ("GET", r"/v1/projects/(?P<project>[^/]+)/locations/global/services/"
                    r"(?P<service>[^/]+)/quotaInfos/(?P<qid>[^/]+)", self.get_quota_info),
            ("POST", r"/emulator/quota", self.set_quota),
            ("GET", r"/emulator/info", self.info),
            ("POST", r"/emulator/faults", self.inject_fault),
            ("POST", r"/emulator/fail-next-deploy", self.seed_failure),
            ("POST", r"/v2/entries:list", self.list_log_entries),
            ("POST", r"/emulator/expired-tokens", self.expire_token),
            ("GET", r"/emulator/logs/(?P<eid>[^/]+)", self.endpoint_logs),
        ):
            self.routes.append((method, re.compile(pattern + r"$"), func))
        self.storage_url: str | None = None
        self._restart_replicas()

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0,
              tls_dir: Path | None = None) -> VertexEmulator:
        """Serves HTTP on (host, port); with `tls_dir`, also HTTPS on 127.0.0.1 for dedicated
        endpoints, with a self-signed certificate kept in that folder."""
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._server = Server((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="vertex-emulator").start()
        if tls_dir is not None:
            from nbhelpers.emulator.tls import make_certificate, server_context

            cert, key = make_certificate(tls_dir)
            self._tls_server = Server(("127.0.0.1", 0), Handler)
            self._tls_server.socket = server_context(cert, key).wrap_socket(
                self._tls_server.socket, server_side=True)
            threading.Thread(target=self._tls_server.serve_forever, daemon=True,
                             name="vertex-emulator-tls").start()
            self.ca_file = str(cert)
            self.dedicated_dns = f"127.0.0.1:{self._tls_server.server_address[1]}"
            with self.state.lock:  # ports change between runs: point kept endpoints here
                for endpoint in self.state.data["endpoints"].values():
                    if endpoint.get("dedicatedEndpointEnabled"):
                        endpoint["dedicatedEndpointDns"] = self.dedicated_dns
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        for replica in self.replicas.values():
            replica.stop()
        self.replicas.clear()
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._server = self._tls_server = None

    # --- helpers -----------------------------------------------------------------------
    def _parent(self, project: str, location: str) -> str:
        return f"projects/{project_number(project)}/locations/{location}"

    def _operation(self, resource: str, response: dict[str, Any] | None = None,
                   done: bool = True, error: dict[str, Any] | None = None) -> dict[str, Any]:
        prefix = f"{resource}/" if resource else ""
        op: dict[str, Any] = {"name": f"{prefix}operations/{self.state.next_id()}",
                              "done": done}
        if response is not None and done:
            op["response"] = response
        if error is not None:
            op["error"] = error
        with self.state.lock:
            self.state.data["operations"][op["name"]] = op
            self.state.save()
        return op

    def _lookup(self, collection: str, name: str, missing: str) -> dict[str, Any]:
        resource = self.state.data[collection].get(name)
        if resource is None:
            raise ApiError(404, missing.format(name=name))  # Vertex AI's own wording
        return resource

    def _endpoint(self, project: str, location: str, eid: str) -> dict[str, Any]:
        return self._lookup("endpoints", f"{self._parent(project, location)}/endpoints/{eid}",
                            'Endpoint "{name}" not found.')

    def _model(self, project: str, location: str, mid: str) -> dict[str, Any]:
        name = f"{self._parent(project, location)}/models/{mid.split('@')[0]}"
        return self._lookup("models", name, 'The Model "{name}" does not exist.')

    def _list(self, collection: str, project: str, location: str,
              query: dict[str, str]) -> dict[str, Any]:
        terms = parse_filter(query.get("filter", ""))
        parent = self._parent(project, location) + "/"
        found = [r for n, r in self.state.data[collection].items()
                 if n.startswith(parent) and _matches(r, terms)]
        return {collection: found} if found else {}

    def _remove(self, collection: str, resource: dict[str, Any]) -> dict[str, Any]:
        with self.state.lock:
            del self.state.data[collection][resource["name"]]
            self.state.save()
        return self._operation(resource["name"], {"@type": EMPTY})

    def log(self, endpoint_name: str, lines: list[str]) -> None:
        """Keeps container log lines as Cloud Logging would: one timestamped entry a line."""
        with self.state.lock:
            entries = self.state.data["logs"].setdefault(endpoint_name, [])
            for line in lines:
                entries.append({"t": time.time(), "text": line, "id": self.state.next_id()})
            self.state.save()

    # --- endpoints ---------------------------------------------------------------------
    def create_endpoint(self, body, project, location, **_):
        parent = self._parent(project, location)
        name = f"{parent}/endpoints/{self.state.next_id()}"
        endpoint = {"name": name, "displayName": body.get("displayName", ""),
                    "labels": body.get("labels", {}), "createTime": _now(),
                    "updateTime": _now(), "etag": "AMEw9yN=", "deployedModels": [],
                    "trafficSplit": {}}
        if body.get("description"):
            endpoint["description"] = body["description"]
        if body.get("dedicatedEndpointEnabled"):
            endpoint["dedicatedEndpointEnabled"] = True
            # Real DNS names look like E.REGION-NUMBER.prediction.vertexai.goog; ours must be
            # reachable, so it is the HTTPS listener on 127.0.0.1.
            endpoint["dedicatedEndpointDns"] = self.dedicated_dns or (
                f"{name.split('/')[-1]}.{location}-{project_number(project)}"
                ".prediction.vertexai.goog")
        with self.state.lock:
            self.state.data["endpoints"][name] = endpoint
            self.state.save()
        return self._operation(name, {"@type": V1 + "Endpoint", **endpoint})

    def list_endpoints(self, body, project, location, query, **_):
        return self._list("endpoints", project, location, query)

    def get_endpoint(self, body, project, location, eid, **_):
        return self._endpoint(project, location, eid)

    def delete_endpoint(self, body, project, location, eid, **_):
        endpoint = self._endpoint(project, location, eid)
        if endpoint["deployedModels"] or self.deploying.get(endpoint["name"]):
            raise ApiError(400, f"Endpoint {endpoint['name']} has deployed models or a model "
                           "being deployed; undeploy them (or wait for the deployment to end) "
                           "before deleting the endpoint.", "FAILED_PRECONDITION")
        return self._remove("endpoints", endpoint)

    # --- models ------------------------------------------------------------------------
    def upload_model(self, body, project, location, **_):
        spec = body.get("model") or {}
        if not spec.get("containerSpec", {}).get("imageUri"):
            raise ApiError(400, "model.container_spec.image_uri is required.")
        name = f"{self._parent(project, location)}/models/{self.state.next_id()}"
        container = dict(spec["containerSpec"])
        # The replica only needs to know a token was given; never keep one on disk.
        container["env"] = [{**e, "value": TOKEN_PLACEHOLDER} if e.get("name") == "HF_TOKEN"
                            and e.get("value") else e for e in container.get("env", [])]
        model = {"name": name, "displayName": spec.get("displayName", ""),
                 "labels": spec.get("labels", {}), "containerSpec": container,
                 "versionId": "1", "versionAliases": ["default"], "createTime": _now(),
                 "updateTime": _now(), "etag": "AMEw9yM=",
                 "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],
                 "deployedModels": []}
        with self.state.lock:
            self.state.data["models"][name] = model
            self.state.save()
        return self._operation(name, {"@type": V1 + "UploadModelResponse", "model": name,
                                      "modelVersionId": "1"})

    def list_models(self, body, project, location, query, **_):
        return self._list("models", project, location, query)

    def get_model(self, body, project, location, mid, **_):
        return self._model(project, location, mid)

    def delete_model(self, body, project, location, mid, **_):
        model = self._model(project, location, mid)
        if self.deploying.get(model["name"]):
            raise ApiError(400, f"Model {model['name']} is being deployed; wait for the "
                           "deployment to end, then undeploy it.", "FAILED_PRECONDITION")
        if model["deployedModels"]:
            raise ApiError(400, f"Model {model['name']} is deployed to "
                           f"{model['deployedModels'][0]['endpoint']}; undeploy it first.",
                           "FAILED_PRECONDITION")
        return self._remove("models", model)

    # --- deploy ------------------------------------------------------------------------
    def deploy_model(self, body, project, location, eid, **_):
        endpoint = self._endpoint(project, location, eid)
        deployed = dict(body.get("deployedModel") or {})
        model = self._model(project, location, deployed.get("model", "").split("/")[-1])
        resources = deployed.get("dedicatedResources") or {}
        machine = resources.get("machineSpec") or {}
        if not machine.get("machineType"):
            raise ApiError(400, "Model requires dedicated resources: "
                           "deployed_model.dedicated_resources.machine_spec is required.")
        machine["acceleratorType"] = _accelerator_name(machine.get("acceleratorType"))
        machine["acceleratorCount"] = int(machine.get("acceleratorCount") or 0)
        from nbhelpers.hardware import MACHINE_TYPES

        expected = MACHINE_TYPES.get(machine["machineType"])
        if expected and expected != (machine["acceleratorType"], machine["acceleratorCount"]):
            raise ApiError(400, f"Machine type {machine['machineType']} requires "
                           f"{expected[1]} {expected[0]}; got {machine['acceleratorCount']} "
                           f"{machine['acceleratorType']}.")
        deployed_id = self.state.next_id() + "0000"
        deployed.update({"id": deployed_id, "model": model["name"], "modelVersionId": "1",
                         "createTime": _now(),
                         "dedicatedResources": {**resources, "machineSpec": machine}})
        deployed.setdefault("displayName", model["displayName"])
        op = self._operation(endpoint["name"], done=False)
        with self.state.lock:
            for name in (endpoint["name"], model["name"]):
                self.deploying[name] = self.deploying.get(name, 0) + 1
        threading.Thread(target=self._finish_deploy, daemon=True,
                         args=(op["name"], endpoint["name"], model["name"], deployed,
                               body.get("trafficSplit") or {"0": 100})).start()
        return op

    def _start_replica(self, model: dict[str, Any], machine: dict[str, Any],
                       endpoint_name: str) -> tuple[Replica, list[str]]:
        return start_replica(model["containerSpec"], machine,
                             service_seconds=self.service_seconds,
                             on_log=lambda lines: self.log(endpoint_name, lines))

    def _finish_deploy(self, op_name, endpoint_name, model_name, deployed, traffic) -> None:
        try:
            self._complete_deploy(op_name, endpoint_name, model_name, deployed, traffic)
        finally:
            with self.state.lock:
                for name in (endpoint_name, model_name):
                    self.deploying[name] -= 1

    def _complete_deploy(self, op_name, endpoint_name, model_name, deployed, traffic) -> None:
        time.sleep(self.deploy_seconds)
        with self.state.lock:
            endpoint = self.state.data["endpoints"].get(endpoint_name)
            model = self.state.data["models"].get(model_name)
        error = None
        if endpoint is None or model is None:
            error = {"code": 5, "message": "The endpoint or model was deleted during deployment."}
        else:
            machine = deployed["dedicatedResources"]["machineSpec"]
            with self.state.lock:
                seeded = self.seeded_failures.pop(0) if self.seeded_failures else None
            try:
                if seeded == "quota":
                    raise QuotaFailure(machine)
                if seeded:
                    raise StartupFailure(
                        seeded_failure_lines(seeded, model["containerSpec"], machine))
                replica, lines = self._start_replica(model, machine, endpoint_name)
                self.log(endpoint_name, lines)
            except QuotaFailure as failure:
                error = {"code": 8, "message": str(failure)}
            except StartupFailure as failure:
                self.log(endpoint_name, failure.lines)
                eid = endpoint_name.split("/")[-1]
                error = {"code": 3, "message": (
                    "Model server exited unexpectedly. Model server logs can be found at "
                    "https://console.cloud.google.com/logs/viewer?project="
                    f"{endpoint_name.split('/')[1]}&resource=aiplatform.googleapis.com%2F"
                    f"Endpoint&advancedFilter=resource.labels.endpoint_id%3D%22{eid}%22")}
        with self.state.lock:
            op = self.state.data["operations"][op_name]
            if error:
                op.update(done=True, error=error)
            else:
                self.replicas[deployed["id"]] = replica
                endpoint["deployedModels"].append(deployed)
                split = {(deployed["id"] if k == "0" else k): v for k, v in traffic.items()}
                endpoint["trafficSplit"] = {**endpoint.get("trafficSplit", {}), **split}
                endpoint["updateTime"] = _now()
                model["deployedModels"].append({"endpoint": endpoint_name,
                                                "deployedModelId": deployed["id"]})
                op.update(done=True, response={"@type": V1 + "DeployModelResponse",
                                               "deployedModel": {"id": deployed["id"]}})
            self.state.save()

    def undeploy_model(self, body, project, location, eid, **_):
        endpoint = self._endpoint(project, location, eid)
        deployed_id = str(body.get("deployedModelId", ""))
        match = [d for d in endpoint["deployedModels"] if d["id"] == deployed_id]
        if not match:
            raise ApiError(404, f"Deployed model {deployed_id!r} not found on "
                           f"{endpoint['name']}.")
        with self.state.lock:
            endpoint["deployedModels"].remove(match[0])
            endpoint["trafficSplit"] = {k: v for k, v in
                                        (body.get("trafficSplit") or
                                         endpoint.get("trafficSplit", {})).items()
                                        if k != deployed_id}
            model = self.state.data["models"].get(match[0]["model"])
            if model:
                model["deployedModels"] = [d for d in model["deployedModels"]
                                           if d["deployedModelId"] != deployed_id]
            self.state.save()
        replica = self.replicas.pop(deployed_id, None)
        if replica:
            replica.stop()
        return self._operation(endpoint["name"], {"@type": V1 + "UndeployModelResponse"})

    def _restart_replicas(self) -> None:
        """After a restart from the state file, deployed models serve again."""
        for endpoint in self.state.data["endpoints"].values():
            for deployed in endpoint["deployedModels"]:
                model = self.state.data["models"].get(deployed["model"])
                if model:
                    machine = deployed["dedicatedResources"]["machineSpec"]
                    self.replicas[deployed["id"]] = self._start_replica(
                        model, machine, endpoint["name"])[0]

    # --- serving -----------------------------------------------------------------------
    def _serving(self, endpoint: dict[str, Any]) -> tuple[dict[str, Any], Replica]:
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

    def inject_fault(self, body, **_):
        status = int(body.get("status", 503))
        default = {503: "Took too long to respond.", 429: "Rate of traffic exceeds serving "
                   "capacity. Decrease your rate or check your quota."}
        with self.state.lock:
            self.faults.append({"status": status, "count": int(body.get("count", 1)),
                                "message": body.get("message") or default.get(status, "error")})
        return {"faults": self.faults}

    def expire_token(self, body, **_):
        self.expired_tokens.add(str(body["token"]))
        return {}

    def predict(self, body, project, location, eid, raw_length=0, headers=None, **_):
        self._admit(headers or {})
        if raw_length > PREDICT_PAYLOAD_LIMIT:
            raise ApiError(400, f"Request payload size exceeds the limit: "
                           f"{PREDICT_PAYLOAD_LIMIT} bytes.")
        deployed, replica = self._serving(self._endpoint(project, location, eid))
        status, payload = self._pool.post_json(replica.url + replica.predict_route, body)
        if status != 200:
            raise ApiError(status if status < 500 else 500,
                           f"Prediction failed: the model server answered {status}: "
                           f"{json.dumps(payload)[:500]}")
        return {"predictions": payload.get("predictions", []), "deployedModelId": deployed["id"],
                "model": deployed["model"], "modelVersionId": "1"}

    def chat(self, body, project, location, eid, headers=None, **_):
        self._admit(headers or {})
        _, replica = self._serving(self._endpoint(project, location, eid))
        return _Proxy(replica.url + "/v1/chat/completions", body)

    # --- Service Usage and Resource Manager (setup steps) --------------------------------
    def _service(self, project: str, service: str) -> dict[str, Any]:
        enabled = service in self.state.data["services"].get(project_number(project), [])
        return {"name": f"projects/{project_number(project)}/services/{service}",
                "parent": f"projects/{project_number(project)}",
                "config": {"name": service}, "state": "ENABLED" if enabled else "DISABLED"}

    def get_service(self, body, project, service, **_):
        return self._service(project, service)

    def enable_service(self, body, project, service, **_):
        with self.state.lock:
            enabled = self.state.data["services"].setdefault(project_number(project), [])
            if service not in enabled:
                enabled.append(service)
            self.state.save()
        return self._operation("", {
            "@type": "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
            "service": self._service(project, service)})

    def get_project(self, body, project, **_):
        return {"name": f"projects/{project_number(project)}", "projectId": project,
                "state": "ACTIVE", "displayName": project, "parent": "organizations/0"}

    def get_iam_policy(self, body, project, **_):
        return self.state.data["iam"].get(project_number(project),
                                          {"version": 1, "etag": "BwX=", "bindings": []})

    def set_iam_policy(self, body, project, **_):
        policy = dict(body.get("policy") or {})
        policy["etag"] = "BwY" + self.state.next_id() + "="
        with self.state.lock:
            self.state.data["iam"][project_number(project)] = policy
            self.state.save()
        return policy

    def get_operation(self, body, name, **_):
        operation = self.state.data["operations"].get(name)
        if operation is None:
            raise ApiError(404, f"Operation {name!r} not found.")
        return operation

    # --- Cloud Quotas ---------------------------------------------------------------------
    def get_quota_info(self, body, project, service, qid, **_):
        """Serving quotas default to 16 GPUs of each kind in every region; tests lower them."""
        regions = self.state.data.setdefault("quotas", {}).get(qid, {"*": DEFAULT_GPU_QUOTA})
        infos = [{"dimensions": {} if region == "*" else {"region": region},
                  "details": {"value": str(value)},
                  "applicableLocations": [] if region == "*" else [region]}
                 for region, value in regions.items()]
        return {"name": f"projects/{project_number(project)}/locations/global/services/"
                        f"{service}/quotaInfos/{qid}",
                "quotaId": qid, "service": service, "dimensions": ["region"],
                "metric": f"{service}/{qid}", "isPrecise": True,
                "dimensionsInfos": infos}

    def set_quota(self, body, **_):
        with self.state.lock:
            quotas = self.state.data.setdefault("quotas", {})
            quotas.setdefault(body["quota_id"], {"*": DEFAULT_GPU_QUOTA})[
                body.get("region", "*")] = int(body["value"])
            self.state.save()
        return {}

    # --- emulator's own ------------------------------------------------------------------
    def info(self, body, **_):
        return {"emulator": "nbhelpers", "storage_url": self.storage_url,
                "ca_file": self.ca_file, "dedicated_dns": self.dedicated_dns}

    def _entries(self, eid: str) -> list[tuple[str, dict[str, Any]]]:
        return [(name, entry) for name, logs in self.state.data["logs"].items()
                if name.endswith("/endpoints/" + eid) for entry in logs]

    def endpoint_logs(self, body, eid, **_):
        return {"lines": [entry["text"] for _, entry in self._entries(eid)]}

    def list_log_entries(self, body, **_):
        """Cloud Logging entries:list for the endpoint the filter names."""
        match = re.search(r'resource\.labels\.endpoint_id\s*=\s*"?(\d+)"?', body.get("filter", ""))
        if not match:
            return {}
        found = sorted(self._entries(match.group(1)), key=lambda item: item[1]["t"],
                       reverse="desc" in str(body.get("orderBy", "")).lower())
        found = found[:int(body.get("pageSize") or 1000)]
        entries = []
        for name, entry in found:
            project, location = name.split("/")[1], name.split("/")[3]
            stamp = datetime.fromtimestamp(entry["t"], UTC).isoformat().replace("+00:00", "Z")
            error = bool(re.search(r"Error|ERROR|Traceback|error:", entry["text"]))
            entries.append({
                "logName": f"projects/{project}/logs/aiplatform.googleapis.com%2F"
                           "prediction_container",
                "resource": {"type": "aiplatform.googleapis.com/Endpoint",
                             "labels": {"endpoint_id": match.group(1), "location": location,
                                        "resource_container": project}},
                "textPayload": entry["text"], "timestamp": stamp, "insertId": entry["id"],
                "severity": "ERROR" if error else "INFO"})
        return {"entries": entries} if entries else {}

    def seed_failure(self, body, **_):
        cause = str(body.get("cause", ""))
        if cause not in SEEDED_CAUSES:
            raise ApiError(400, f"unknown cause {cause!r}; choose one of {sorted(SEEDED_CAUSES)}")
        with self.state.lock:
            self.seeded_failures.append(cause)
        return {"seeded": self.seeded_failures}


class _Proxy:
    """A response streamed through from a replica (chat completions, SSE or JSON)."""

    def __init__(self, url: str, body: dict[str, Any]):
        self.url, self.body = url, body


class _Handler(JsonHandler):
    owner: VertexEmulator

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
            for route_method, pattern, func in self.owner.routes:
                match = pattern.match(path)
                if match and route_method == method:
                    result = func(body, query=query, raw_length=len(raw),
                                  headers=self.headers, **match.groupdict())
                    break
            else:
                raise ApiError(404, f"The requested URL {path} was not found on this server "
                               "(nbhelpers emulator).")
        except ApiError as err:
            return self.send_json(err.http_status, {"error": {
                "code": err.http_status, "message": err.message, "status": err.status}})
        except json.JSONDecodeError as err:
            return self.send_json(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                                   "message": f"Invalid JSON payload: {err}"}})
        if isinstance(result, _Proxy):
            return self._proxy(result)
        self.send_json(200, result)

    def _proxy(self, proxy: _Proxy) -> None:
        request = urllib.request.Request(proxy.url, json.dumps(proxy.body).encode(),
                                         {"Content-Type": "application/json"})
        try:
            upstream = urllib.request.urlopen(request, timeout=120)
        except urllib.error.HTTPError as err:
            upstream = err
        with upstream:
            self.send_response(upstream.status if hasattr(upstream, "status") else upstream.code)
            content_type = upstream.headers.get("Content-Type", "application/json")
            self.send_header("Content-Type", content_type)
            if content_type.startswith("text/event-stream"):
                self.send_header("Connection", "close")
                self.end_headers()
                for line in upstream:
                    self.wfile.write(line)
                    self.wfile.flush()
                self.close_connection = True
            else:
                data = upstream.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")
