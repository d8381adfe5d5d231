"""Vertex AI `:deployModel` and `:undeployModel`: a deployment is an operation that finishes in
the background, once the model's container has started on `minReplicaCount` replicas or failed
the way vLLM or the platform fails, with its lines in the endpoint's log.

Replicas: a deployed model gets `dedicatedResources.minReplicaCount` replicas (at least one),
each started as the container starts; autoscaling above the minimum is not simulated (the
`maxReplicaCount` and `autoscalingMetricSpecs` are kept and read back only). The read-back's
`status.availableReplicaCount` is the DeployedModel field Google documents for "the number of
available replicas of the deployed model" (google-cloud-aiplatform 2.x,
`aiplatform_v1.types.DeployedModel.Status`, read 2026-11-26)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from nbhelpers.emulator import access
from nbhelpers.emulator.cloud_logging import CloudLogging
from nbhelpers.emulator.common import V1, ApiError, Route, State, now
from nbhelpers.emulator.operations import Operations
from nbhelpers.emulator.replica import Replica
from nbhelpers.emulator.startup import (
    PLATFORM_CAUSES,
    SEEDED_CAUSES,
    QuotaFailure,
    StartupFailure,
    seeded_failure_lines,
    start_replica,
)
from nbhelpers.emulator.vertex_ai import ENDPOINT, find_endpoint, find_model
from nbhelpers.hardware import MACHINE_TYPES


def accelerator_name(value: Any) -> str:
    """Enums arrive as numbers with enum-encoding=int; map them through the SDK's own enum."""
    if isinstance(value, (int, float)):
        from google.cloud.aiplatform_v1.types import AcceleratorType

        return AcceleratorType(int(value)).name
    return str(value or "ACCELERATOR_TYPE_UNSPECIFIED")


def machine_spec(resources: dict[str, Any]) -> dict[str, Any]:
    """The deployment's machineSpec, normalised, or Vertex AI's 400 for a machine type that
    does not come with the accelerators asked for."""
    machine = resources.get("machineSpec") or {}
    if not machine.get("machineType"):
        raise ApiError(400, "Model requires dedicated resources: "
                       "deployed_model.dedicated_resources.machine_spec is required.")
    machine["acceleratorType"] = accelerator_name(machine.get("acceleratorType"))
    machine["acceleratorCount"] = int(machine.get("acceleratorCount") or 0)
    expected = MACHINE_TYPES.get(machine["machineType"])
    if expected and expected != (machine["acceleratorType"], machine["acceleratorCount"]):
        raise ApiError(400, f"Machine type {machine['machineType']} requires "
                       f"{expected[1]} {expected[0]}; got {machine['acceleratorCount']} "
                       f"{machine['acceleratorType']}.")
    return machine


def _exited_error(endpoint_name: str) -> dict[str, Any]:
    """The operation error of a container that failed to start, linking its logs."""
    eid = endpoint_name.split("/")[-1]
    return {"code": 3, "message": (
        "Model server exited unexpectedly. Model server logs can be found at "
        "https://console.cloud.google.com/logs/viewer?project="
        f"{endpoint_name.split('/')[1]}&resource=aiplatform.googleapis.com%2F"
        f"Endpoint&advancedFilter=resource.labels.endpoint_id%3D%22{eid}%22")}


class Deployments:
    """Deployed models and their replicas. `deploy_seconds` is how long a deployment takes
    before it is ready (real ones take up to an hour); `service_seconds` is each replica's time
    per request."""

    def __init__(self, state: State, operations: Operations, logging: CloudLogging, *,
                 deploy_seconds: float, service_seconds: float, engine: str = "rehearsal"):
        self.state, self.operations, self.logging = state, operations, logging
        self.deploy_seconds, self.service_seconds = deploy_seconds, service_seconds
        self.engine = engine  # what replicas answer from: "rehearsal" or "vllm" (vllm_engine)
        self.deploying: dict[str, int] = {}  # endpoint or model name -> deployments in flight
        self.seeded_failures: list[str] = []  # causes the next deployments fail with
        # deployed model id -> its serving replicas (minReplicaCount of them)
        self.replicas: dict[str, list[Replica]] = {}

    def routes(self) -> list[Route]:
        return [("POST", ENDPOINT + r":deployModel", self.deploy_model),
                ("POST", ENDPOINT + r":undeployModel", self.undeploy_model)]

    def busy(self, name: str) -> bool:
        """Whether a deployment to this endpoint, or of this model, is in flight."""
        return bool(self.deploying.get(name))

    def seed_failure(self, cause: str) -> list[str]:
        """Makes the next deployment fail with `cause`, for rehearsing the debugging notebook."""
        if cause not in SEEDED_CAUSES:
            raise ApiError(400, f"unknown cause {cause!r}; choose one of {sorted(SEEDED_CAUSES)}")
        with self.state.lock:
            self.seeded_failures.append(cause)
        return self.seeded_failures

    def deploy_model(self, body: dict[str, Any], *, project: str, location: str, eid: str,
                     headers: Any = None, **_: Any) -> dict[str, Any]:
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        access.require(self.state, headers, "aiplatform.endpoints.deploy", project=project,
                       resource=endpoint["name"])
        deployed = dict(body.get("deployedModel") or {})
        model = find_model(self.state, project=project, location=location,
                           mid=deployed.get("model", "").split("/")[-1])
        resources = deployed.get("dedicatedResources") or {}
        machine = machine_spec(resources)
        deployed_id = self.state.next_id() + "0000"
        deployed.update({"id": deployed_id, "model": model["name"], "modelVersionId": "1",
                         "createTime": now(),
                         "dedicatedResources": {**resources, "machineSpec": machine}})
        deployed.setdefault("displayName", model["displayName"])
        op = self.operations.create(endpoint["name"], done=False, metadata={
            "@type": V1 + "DeployModelOperationMetadata",
            "genericMetadata": {"createTime": now(), "updateTime": now()}})
        with self.state.lock:
            for name in (endpoint["name"], model["name"]):
                self.deploying[name] = self.deploying.get(name, 0) + 1
        threading.Thread(target=self._finish_deploy, daemon=True, kwargs={
            "op_name": op["name"], "endpoint_name": endpoint["name"], "model_name": model["name"],
            "deployed": deployed, "traffic": body.get("trafficSplit") or {"0": 100}}).start()
        return op

    def _start_replicas(self, model: dict[str, Any], deployed: dict[str, Any],
                        endpoint_name: str) -> list[Replica]:
        """Starts the deployed model's minimum replicas one after another, each logging its
        own start-up lines (marked "[replica i/n]" when there are several); a replica that
        fails stops those already started and raises StartupFailure."""
        resources = deployed["dedicatedResources"]
        count = replica_count(resources)
        started: list[Replica] = []
        try:
            for index in range(count):
                mark = _marker(index, count)
                replica, lines = start_replica(
                    model["containerSpec"], resources["machineSpec"],
                    service_seconds=self.service_seconds, engine=self.engine,
                    on_log=self._replica_log(endpoint_name, mark))
                started.append(replica)
                self.logging.log(endpoint_name, mark(lines))
        except StartupFailure as failure:
            for replica in started:
                replica.stop()
            raise StartupFailure(_marker(len(started), count)(failure.lines)) from None
        return started

    def _finish_deploy(self, *, op_name: str, endpoint_name: str, model_name: str,
                       deployed: dict[str, Any], traffic: dict[str, int]) -> None:
        try:
            self._complete_deploy(op_name=op_name, endpoint_name=endpoint_name,
                                  model_name=model_name, deployed=deployed, traffic=traffic)
        finally:
            with self.state.lock:
                for name in (endpoint_name, model_name):
                    self.deploying[name] -= 1

    def _replica_log(self, endpoint_name: str,
                     mark: Callable[[list[str]], list[str]]) -> Callable[[list[str]], None]:
        """Where a running replica's own lines go: the endpoint's log, marked as its own."""
        return lambda lines: self.logging.log(endpoint_name, mark(lines))

    def _start(self, endpoint_name: str, model: dict[str, Any],
               deployed: dict[str, Any]) -> tuple[list[Replica], dict[str, Any] | None]:
        """Starts the replicas, or fails as seeded or as the container would:
        (replicas, error)."""
        machine = deployed["dedicatedResources"]["machineSpec"]
        with self.state.lock:
            seeded = self.seeded_failures.pop(0) if self.seeded_failures else None
        try:
            if seeded in PLATFORM_CAUSES:
                raise QuotaFailure(machine, cause=seeded, region=endpoint_name.split("/")[3])
            if seeded:
                raise StartupFailure(
                    seeded_failure_lines(seeded, model["containerSpec"], machine))
            return self._start_replicas(model, deployed, endpoint_name), None
        except QuotaFailure as failure:
            return [], {"code": 8, "message": str(failure)}
        except StartupFailure as failure:
            self.logging.log(endpoint_name, failure.lines)
            return [], _exited_error(endpoint_name)

    def _complete_deploy(self, *, op_name: str, endpoint_name: str, model_name: str,
                         deployed: dict[str, Any], traffic: dict[str, int]) -> None:
        time.sleep(self.deploy_seconds)
        with self.state.lock:
            endpoint = self.state.data["endpoints"].get(endpoint_name)
            model = self.state.data["models"].get(model_name)
        replicas: list[Replica] = []
        error: dict[str, Any] | None
        if endpoint is None or model is None:
            error = {"code": 5, "message": "The endpoint or model was deleted during deployment."}
        else:
            replicas, error = self._start(endpoint_name, model, deployed)
        with self.state.lock:
            if not replicas or endpoint is None or model is None:
                self.operations.finish(op_name, error=error)
                return
            self.replicas[deployed["id"]] = replicas
            deployed["status"] = {"availableReplicaCount": len(replicas),
                                  "lastUpdateTime": now()}
            endpoint["deployedModels"].append(deployed)
            split = {(deployed["id"] if k == "0" else k): v for k, v in traffic.items()}
            endpoint["trafficSplit"] = {**endpoint.get("trafficSplit", {}), **split}
            endpoint["updateTime"] = now()
            model["deployedModels"].append({"endpoint": endpoint_name,
                                            "deployedModelId": deployed["id"]})
            self.operations.finish(op_name, response={"@type": V1 + "DeployModelResponse",
                                                      "deployedModel": {"id": deployed["id"]}})

    def undeploy_model(self, body: dict[str, Any], *, project: str, location: str, eid: str,
                       headers: Any = None, **_: Any) -> dict[str, Any]:
        endpoint = find_endpoint(self.state, project=project, location=location, eid=eid)
        access.require(self.state, headers, "aiplatform.endpoints.undeploy", project=project,
                       resource=endpoint["name"])
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
        for replica in self.replicas.pop(deployed_id, []):
            replica.stop()
        return self.operations.create(endpoint["name"],
                                      {"@type": V1 + "UndeployModelResponse"})

    def restart_replicas(self) -> None:
        """After a restart from the state file, deployed models serve again; deployments that
        were in flight ended with the old process (their threads are gone), so they fail."""
        for endpoint_name in list(self.state.data["endpoints"]):
            for name in self.operations.pending(endpoint_name):
                self.operations.finish(name, error={
                    "code": 10, "message": "The deployment was aborted: the emulator restarted."})
        for endpoint in self.state.data["endpoints"].values():
            for deployed in endpoint["deployedModels"]:
                model = self.state.data["models"].get(deployed["model"])
                if model:
                    self.replicas[deployed["id"]] = self._start_replicas(
                        model, deployed, endpoint["name"])

    def stop_replicas(self) -> None:
        for replicas in self.replicas.values():
            for replica in replicas:
                replica.stop()
        self.replicas.clear()


def replica_count(resources: dict[str, Any]) -> int:
    """The replicas a deployment starts: its minReplicaCount, at least one (the REST field's
    minimum); autoscaling above it is not simulated."""
    return max(int(resources.get("minReplicaCount") or 1), 1)


def _marker(index: int, count: int) -> Callable[[list[str]], list[str]]:
    """Marks a replica's log lines with its index when a deployment has several, so the
    endpoint's log tells them apart; a single replica's lines stay as vLLM prints them."""
    if count == 1:
        return lambda lines: lines
    return lambda lines: [f"[replica {index + 1}/{count}] {line}" for line in lines]

