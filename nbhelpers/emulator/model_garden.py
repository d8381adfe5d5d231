"""Vertex AI Model Garden (v1beta1), as `vertexai.model_garden.OpenModel` calls it: publisher
models with their verified deploy configurations, a project's acceptance of a model's EULA, and
the one-call `:deploy`, whose operation makes the endpoint, the model and the deployment through
the same services as the step-by-step path (so serving, logs, cleanup and reconnect see no
difference). The requests are recorded in docs/google-contract.md (C67-C75).

Google's verified configurations are Google's data, read live on Vertex AI; the ones served here
are modelled on the hardware, images and settings of Google's Llama notebooks (an assumption,
marked so in docs/google-contract.md), which is enough for the client to show where its own plan
differs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from nbhelpers import releases
from nbhelpers.emulator.common import LOCATION_PATH, ApiError, Route, State, now, project_number
from nbhelpers.emulator.deployments import Deployments, machine_spec
from nbhelpers.emulator.operations import Operations
from nbhelpers.emulator.vertex_ai import VertexAI, parent
from nbhelpers.hardware import MACHINE_TYPES

V1BETA1 = "type.googleapis.com/google.cloud.aiplatform.v1beta1."
# Google marks the option its notebooks deploy with Fast Deployment by this deploy-metadata label.
FAST_LABEL = "show-faster-deployment-option"
_PUBLISHER_MODEL = (r"/v1beta1/publishers/(?P<publisher>[^/]+)/models/(?P<model>[^/@:]+)"
                    r"(?:@(?P<version>[^/:]+))?")
_EULA = r"/v1beta1/projects/(?P<project>[^/:]+)/modelGardenEula:(?P<verb>check|accept)"
# Where Google keeps its copy of the Meta weights is not public; this stands in for it.
_WEIGHTS = "gs://vertex-model-garden-public-us"


@dataclass(frozen=True, kw_only=True)
class VerifiedConfig:
    """One verified deploy option: a machine and the container settings Google tested on it."""

    task: str  # the option's name (deployTaskName)
    machine_type: str
    tag: str  # the vLLM image tag
    max_model_len: int
    max_num_seqs: int = 256
    vision: bool = False
    fast: bool = False  # offered with Fast Deployment (us-central1 only)

    def deploy(self, *, weights: str, model_id: str, title: str) -> dict[str, Any]:
        """The option as a PublisherModel.CallToAction.Deploy."""
        accelerator, count = MACHINE_TYPES[self.machine_type]
        args = ["python", "-m", "vllm.entrypoints.api_server", "--host=0.0.0.0",
                f"--port={releases.PORT}", f"--model={weights}",
                f"--tensor-parallel-size={count}", "--swap-space=16",
                "--gpu-memory-utilization=0.95" if not self.vision else
                "--gpu-memory-utilization=0.9",
                f"--max-model-len={self.max_model_len}", f"--max-num-seqs={self.max_num_seqs}"]
        args += ["--enforce-eager"] if self.vision else ["--enable-prefix-caching"]
        labels = {FAST_LABEL: "true"} if self.fast else {}
        return {
            "title": title, "deployTaskName": self.task, "modelDisplayName": title,
            "containerSpec": {
                "imageUri": releases.image_uri(self.tag), "args": args,
                "env": [{"name": "MODEL_ID", "value": model_id},
                        {"name": "DEPLOY_SOURCE", "value": "UI_NATIVE_MODEL"}],
                "ports": [{"containerPort": releases.PORT}],
                "predictRoute": releases.PREDICT_ROUTE, "healthRoute": releases.HEALTH_ROUTE,
                "sharedMemorySizeMb": str(releases.SHARED_MEMORY_MB),
                "deploymentTimeout": f"{releases.DEPLOYMENT_TIMEOUT_S}s"},
            "dedicatedResources": {"machineSpec": {"machineType": self.machine_type,
                                                   "acceleratorType": accelerator,
                                                   "acceleratorCount": count},
                                   "minReplicaCount": 1, "maxReplicaCount": 1},
            "deployMetadata": {"labels": labels},
        }


@dataclass(frozen=True, kw_only=True)
class PublisherModel:
    """One version of a publisher model: the Hugging Face repository its weights come from (as
    Google's notebooks name it in MODEL_ID) and its verified configurations, default first."""

    publisher: str
    model: str  # e.g. "llama3_1"
    version: str  # e.g. "llama-3.1-8b-instruct"
    hf_id: str
    configs: tuple[VerifiedConfig, ...]

    @property
    def name(self) -> str:
        return f"publishers/{self.publisher}/models/{self.model}"

    def resource(self) -> dict[str, Any]:
        title = self.hf_id.split("/")[-1]
        weights = f"{_WEIGHTS}/{self.model}/{title}"
        return {"name": self.name, "versionId": self.version,
                "openSourceCategory": "THIRD_PARTY_OWNED_OSS", "launchStage": "GA",
                "versionState": "VERSION_STATE_STABLE",
                "supportedActions": {"multiDeployVertex": {"multiDeployVertex": [
                    config.deploy(weights=weights, model_id=self.hf_id, title=title)
                    for config in self.configs]}}}


def _llama31(size: str, machine: str, *, fast: bool = False) -> list[PublisherModel]:
    tag = "20241210_0916_RC00"  # the Llama 3.1 notebook's image
    models = []
    for instruct in (False, True):
        suffix = "-Instruct" if instruct else ""
        name = size.replace("-FP8", "") + suffix + ("-FP8" if size.endswith("-FP8") else "")
        configs = [VerifiedConfig(task="vLLM", machine_type=machine, tag=tag, max_model_len=8192)]
        if fast and instruct:
            configs.append(VerifiedConfig(task="vLLM Fast Deployment",
                                          machine_type="a2-ultragpu-1g", tag=tag,
                                          max_model_len=8192, fast=True))
        models.append(PublisherModel(publisher="meta", model="llama3_1",
                                     version=f"llama-3.1-{name.lower()}",
                                     hf_id=f"meta-llama/Meta-Llama-3.1-{name}",
                                     configs=tuple(configs)))
    return models


def _llama32(size: str, machine: str, *, vision: bool = False) -> list[PublisherModel]:
    tag = "20241202_0916_RC00_maas"  # the Llama 3.2 notebook's image
    models = []
    for instruct in (False, True):
        name = f"{size}{'-Vision' if vision else ''}{'-Instruct' if instruct else ''}"
        config = (VerifiedConfig(task="vLLM", machine_type=machine, tag=tag, max_model_len=4096,
                                 max_num_seqs=12, vision=True) if vision else
                  VerifiedConfig(task="vLLM", machine_type=machine, tag=tag, max_model_len=8192))
        models.append(PublisherModel(publisher="meta", model="llama3-2",
                                     version=f"llama-3.2-{name.lower()}",
                                     hf_id=f"meta-llama/Llama-3.2-{name}", configs=(config,)))
    return models


# Keyed by "publisher/model@version". Hardware as Google's Llama notebooks deploy each model.
PUBLISHER_MODELS: dict[str, PublisherModel] = {
    f"{m.publisher}/{m.model}@{m.version}": m
    for m in (*_llama31("8B", "g2-standard-12", fast=True), *_llama31("70B", "a3-highgpu-4g"),
              *_llama31("405B-FP8", "a3-highgpu-8g"), *_llama32("1B", "g2-standard-8"),
              *_llama32("3B", "g2-standard-8"), *_llama32("11B", "a2-highgpu-1g", vision=True),
              *_llama32("90B", "a3-highgpu-8g", vision=True))
}


class ModelGarden:
    """Publisher models, EULA acceptances (kept by project number under "eulas") and the
    `:deploy` method, which runs on the Vertex AI and deployments services."""

    def __init__(self, state: State, operations: Operations, vertex_ai: VertexAI,
                 deployments: Deployments):
        self.state, self.operations = state, operations
        self.vertex_ai, self.deployments = vertex_ai, deployments
        self.state.data.setdefault("eulas", {})
        for op in self.state.data["operations"].values():  # their watchers ended with the process
            if not op["done"] and op.get("metadata", {}).get("@type") == (
                    V1BETA1 + "DeployOperationMetadata"):
                op.update(done=True, error={"code": 10, "message": "The deployment was "
                                            "aborted: the emulator restarted."})

    def routes(self) -> list[Route]:
        return [("GET", _PUBLISHER_MODEL, self.get_publisher_model),
                ("POST", _EULA, self.eula),
                ("POST", LOCATION_PATH + r":deploy", self.deploy)]

    @staticmethod
    def find(name: str) -> PublisherModel:
        """The publisher model of `publishers/P/models/M@V` (or P/M@V), or Google's 404."""
        short = name.removeprefix("publishers/").replace("/models/", "/")
        if "@" not in short:  # no version: the model's first, as the default
            short = next((k for k in PUBLISHER_MODELS if k.startswith(short + "@")), short)
        found = PUBLISHER_MODELS.get(short.lower())
        if found is None:
            raise ApiError(404, f"Publisher Model `{name}` is not found.")
        return found

    def get_publisher_model(self, body: dict[str, Any], *, publisher: str, model: str,
                            version: str | None = None, query: dict[str, str],
                            **_: Any) -> dict[str, Any]:
        if query.get("isHuggingFaceModel") == "true":
            raise ApiError(404, "Hugging Face model ids are not served by the nbhelpers "
                           "emulator: use the publisher model (e.g. meta/llama3_1@"
                           "llama-3.1-8b-instruct).")
        name = f"{publisher}/{model}" + (f"@{version}" if version else "")
        return self.find(name).resource()

    # --- EULA ------------------------------------------------------------------------------
    def _accepted(self, project: str) -> list[str]:
        return self.state.data["eulas"].setdefault(project_number(project), [])

    def eula(self, body: dict[str, Any], *, project: str, verb: str,
             **_: Any) -> dict[str, Any]:
        """`modelGardenEula:check` and `:accept`: one acceptance per publisher model and
        project, whatever the version (the licence is the model family's)."""
        asked = str(body.get("publisherModel") or "")
        model = self.find(asked)
        with self.state.lock:
            accepted = self._accepted(project)
            if verb == "accept" and model.name not in accepted:
                accepted.append(model.name)
                self.state.save()
            acked = model.name in accepted
        return {"projectNumber": project_number(project), "publisherModel": asked,
                "publisherModelEulaAcked": acked}

    # --- deploy ----------------------------------------------------------------------------
    def deploy(self, body: dict[str, Any], *, project: str, location: str,
               headers: Any = None, **_: Any) -> dict[str, Any]:
        """Checks everything before creating anything, then makes the endpoint, uploads the
        model and deploys it as the caller (`headers`: whose token), through the same
        services as the step-by-step calls; the operation ends with the deployment's."""
        if body.get("huggingFaceModelId"):
            raise ApiError(400, "Deploying a Hugging Face model id is not served by the "
                           "nbhelpers emulator; name the publisher model (publisherModelName).")
        model = self.find(str(body.get("publisherModelName") or ""))
        model_config = body.get("modelConfig") or {}
        endpoint_config = body.get("endpointConfig") or {}
        resources = dict((body.get("deployConfig") or {}).get("dedicatedResources") or {})
        with self.state.lock:
            if model.name not in self._accepted(project):
                if not model_config.get("acceptEula"):
                    raise ApiError(400, f"The End User License Agreement (EULA) of {model.name} "
                                   "has not been accepted for this project. Accept it on the "
                                   "model card, or deploy with accept_eula=True.",
                                   "FAILED_PRECONDITION")
                self._accepted(project).append(model.name)
                self.state.save()
        default = model.resource()["supportedActions"]["multiDeployVertex"]["multiDeployVertex"]
        chosen = default[0]
        if resources.get("machineSpec"):
            machine = machine_spec(resources)
            chosen = next((c for c in default if c["dedicatedResources"]["machineSpec"]
                           ["machineType"] == machine["machineType"]), chosen)
        else:
            resources = dict(chosen["dedicatedResources"])
        container = dict(model_config.get("containerSpec") or chosen["containerSpec"])
        token = model_config.get("huggingFaceAccessToken")
        env = list(container.get("env") or [])
        if token and not any(e.get("name") == "HF_TOKEN" for e in env):
            env.append({"name": "HF_TOKEN", "value": token})  # upload keeps only a placeholder
        container["env"] = env
        short = f"{model.publisher}_{model.version}".replace(".", "_")
        endpoint_op = self.vertex_ai.create_endpoint({
            "displayName": endpoint_config.get("endpointDisplayName")
            or f"{short}-mg-one-click-deploy",
            # Model Garden has made dedicated endpoints the default (August 2025).
            "dedicatedEndpointEnabled": not endpoint_config.get("dedicatedEndpointDisabled")},
            project=project, location=location, headers=headers)
        endpoint_name = endpoint_op["response"]["name"]
        upload_op = self.vertex_ai.upload_model({"model": {
            "displayName": model_config.get("modelDisplayName") or f"{short}-{int(time.time())}",
            "containerSpec": container}}, project=project, location=location,
            headers=headers)
        model_name = upload_op["response"]["model"]
        with self.state.lock:
            self.state.data["models"][model_name]["baseModelSource"] = {"modelGardenSource": {
                "publicModelName": model.name, "versionId": model.version}}
            self.state.save()
        inner = self.deployments.deploy_model(
            {"deployedModel": {"model": model_name, "dedicatedResources": resources},
             "trafficSplit": {"0": 100}},
            project=project, location=location, eid=endpoint_name.split("/")[-1],
            headers=headers)
        op = self.operations.create(parent(project, location), done=False, metadata={
            "@type": V1BETA1 + "DeployOperationMetadata",
            "genericMetadata": {"createTime": now(), "updateTime": now()},
            "publisherModel": f"{model.name}@{model.version}",
            "destination": f"projects/{project}/locations/{location}",
            "projectNumber": project_number(project), "modelId": model_name.split("/")[-1]})
        threading.Thread(target=self._follow, daemon=True, args=(op["name"], inner["name"], {
            "@type": V1BETA1 + "DeployResponse", "publisherModel": f"{model.name}@{model.version}",
            "endpoint": endpoint_name, "model": model_name})).start()
        return op

    def _follow(self, op_name: str, inner_name: str, response: dict[str, Any]) -> None:
        """Ends the Model Garden operation as its deployment ends: the deployment's error, or
        the endpoint and model it made."""
        while True:
            with self.state.lock:
                inner = dict(self.state.data["operations"].get(inner_name) or {"done": True})
            if inner.get("done"):
                break
            time.sleep(0.05)
        if inner.get("error") or "response" not in inner:
            self.operations.finish(op_name, error=inner.get("error") or {
                "code": 13, "message": "The deployment ended without a result."})
        else:
            self.operations.finish(op_name, response=response)
