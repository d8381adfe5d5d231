"""The Model Garden path: `vertexai.model_garden.OpenModel(...).deploy(...)`, the one call Google's
Llama notebooks deploy with, and `list_deploy_options()`, Google's verified configurations,
shown next to our plan with where they differ.

What `OpenModel.deploy` cannot do, and what is done about it:
- It takes no labels (`system_labels` are Google's, "for tracking purposes only"), so the endpoint
  and the model are found by the display names given to them and labelled as soon as they exist,
  while the deployment still runs: cleanup by labels and the run's reuse find them even when the
  kernel dies before the deployment ends.
- It makes its own endpoint each time.
The container deployed is the plan's (image, arguments, environment, as container overrides), so
what the memory planner and the argument checks passed is what runs; the Hugging Face token goes
as `hugging_face_access_token`, never in the container overrides.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbhelpers import releases, tokens, vllm_args
from nbhelpers.catalog import ModelSpec
from nbhelpers.connection import Session
from nbhelpers.container import ContainerSpec
from nbhelpers.errors import ConfigError, DeploymentError
from nbhelpers.hardware import Hardware

VLLM_CONTAINER = "vllm-container"  # Model.upload then model.deploy, step by step
MODEL_GARDEN = "model-garden"  # OpenModel.deploy: one call, EULA accepted with it
DEPLOY_WITH = (VLLM_CONTAINER, MODEL_GARDEN)
# Model Garden's publisher model of each family, as Google's notebooks and docs name it
# (`meta/llama3_1@llama-3.1-8b-instruct`, `meta/llama3-2@llama-3.2-1b-instruct`).
PUBLISHER_MODELS = {"llama3.1": "meta/llama3_1", "llama3.2": "meta/llama3-2"}
MODEL_CARD = "https://console.cloud.google.com/vertex-ai/publishers/meta/model-garden/{model}"
# The vLLM settings compared with a verified configuration, as the plan names them.
_COMPARED_ARGS = {"tensor-parallel-size": "tensor_parallel_size",
                  "max-model-len": "max_model_len", "max-num-seqs": "max_num_seqs",
                  "gpu-memory-utilization": "gpu_memory_utilization",
                  "enforce-eager": "enforce_eager"}


def publisher_model(spec: ModelSpec) -> str:
    """Model Garden's name of a catalog model: publisher/model@version."""
    return f"{PUBLISHER_MODELS[spec.family]}@{spec.name.lower()}"


@dataclass(frozen=True, kw_only=True)
class VerifiedOption:
    """One of Google's verified configurations of a model (`list_deploy_options()`)."""

    name: str
    machine_type: str
    accelerator_type: str
    accelerator_count: int
    image_uri: str
    settings: dict[str, Any]  # the vLLM settings of _COMPARED_ARGS its arguments give
    fast: bool = False  # offered with Fast Deployment

    def describe(self) -> str:
        tag = self.image_uri.rsplit(":", 1)[-1]
        said = ", ".join(f"{k} {v}" for k, v in self.settings.items())
        return (f"{self.name}{' (Fast Deployment)' if self.fast else ''}: {self.machine_type} "
                f"({self.accelerator_count} x {self.accelerator_type}), image {tag}"
                + (f", {said}" if said else ""))


def _settings(args: list[str]) -> dict[str, Any]:
    values = vllm_args.parse(list(args), strict=False)
    return {name: values[flag] for flag, name in _COMPARED_ARGS.items() if flag in values}


def _option(deploy: Any) -> VerifiedOption:
    """A VerifiedOption from the SDK's PublisherModel.CallToAction.Deploy."""
    machine = deploy.dedicated_resources.machine_spec
    labels = dict(deploy.deploy_metadata.labels) if deploy.deploy_metadata else {}
    return VerifiedOption(
        name=deploy.deploy_task_name or deploy.title or "verified", fast=labels.get(
            "show-faster-deployment-option") == "true", machine_type=machine.machine_type,
        accelerator_type=machine.accelerator_type.name,
        accelerator_count=int(machine.accelerator_count),
        image_uri=deploy.container_spec.image_uri,
        settings=_settings(list(deploy.container_spec.args)))


def verified_options(spec: ModelSpec) -> list[VerifiedOption]:
    """Google's verified configurations of the model, read with the SDK's
    `OpenModel.list_deploy_options()` (aiplatform must be initialised: connect() first)."""
    from vertexai.model_garden import OpenModel

    return [_option(d) for d in OpenModel(publisher_model(spec)).list_deploy_options()]


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Our plan next to Google's verified configurations, and where each differs."""

    publisher_model: str
    options: list[VerifiedOption] = field(default_factory=list)
    differences: list[list[str]] = field(default_factory=list)  # per option
    unavailable: str = ""  # why the options could not be read

    def describe(self) -> str:
        head = f"Google's verified configurations of {self.publisher_model}"
        if self.unavailable:
            return f"{head}: not read ({self.unavailable})"
        lines = [f"{head} (list_deploy_options):"]
        for number, (option, diff) in enumerate(zip(self.options, self.differences,
                                                     strict=True), 1):
            lines.append(f"  {number}. {option.describe()}")
            lines.append("     " + ("same as this plan" if not diff else
                                    "this plan differs: " + "; ".join(diff)))
        return "\n".join(lines)


def differences(option: VerifiedOption, *, hardware: Hardware,
                container: ContainerSpec) -> list[str]:
    """Where the plan differs from one verified configuration, each as 'what: ours vs
    Google's'."""
    found = []
    ours_gpus = (hardware.accelerator_type, hardware.accelerator_count)
    if hardware.machine_type != option.machine_type:
        found.append(f"machine {hardware.machine_type} vs {option.machine_type}")
    if ours_gpus != (option.accelerator_type, option.accelerator_count):
        found.append(f"GPUs {ours_gpus[1]} x {ours_gpus[0]} vs {option.accelerator_count} x "
                     f"{option.accelerator_type}")
    if container.image_uri != option.image_uri:
        ours, theirs = (releases.release_of(container.image_uri).tag,
                        option.image_uri.rsplit(":", 1)[-1])
        found.append(f"image {ours} vs {theirs}")
    ours_settings = _settings(container.args)
    for name in _COMPARED_ARGS.values():
        if ours_settings.get(name) != option.settings.get(name):
            found.append(f"{name} {ours_settings.get(name, 'default')} vs "
                         f"{option.settings.get(name, 'default')}")
    return found


def compare(spec: ModelSpec, *, hardware: Hardware, container: ContainerSpec,
            session: Session | None) -> Comparison:
    """The plan's hardware and container next to Google's verified configurations; without a
    connection, or when Google lists none, says why instead."""
    name = publisher_model(spec)
    if session is None:
        return Comparison(publisher_model=name, unavailable="connect() first")
    from google.api_core import exceptions
    from google.auth.exceptions import GoogleAuthError

    try:
        options = verified_options(spec)
    except (exceptions.GoogleAPICallError, GoogleAuthError, ValueError, OSError) as err:
        return Comparison(publisher_model=name,
                          unavailable=tokens.redact(getattr(err, "message", None) or str(err)))
    return Comparison(publisher_model=name, options=options, differences=[
        differences(o, hardware=hardware, container=container) for o in options])


def require_eula(session: Session, spec: ModelSpec, *, accept_eula: bool) -> bool:
    """Whether the deploy must accept the model's licence: False when the project already
    has; True when it has not and `accept_eula` says to; else a ConfigError, before anything
    is created, naming the model card and ACCEPT_EULA."""
    from vertexai.model_garden import OpenModel

    name = publisher_model(spec)
    if OpenModel(name).check_license_agreement_status():
        return False
    if not accept_eula:
        card = MODEL_CARD.format(model=PUBLISHER_MODELS[spec.family].split("/")[1])
        raise ConfigError(
            f"project {session.settings.project} has not accepted the licence (EULA) of "
            f"{name.split('@')[0]} in Model Garden. Read it on the model card ({card}), then "
            "set ACCEPT_EULA = True (plan_deployment(..., accept_eula=True)), or deploy with "
            f"DEPLOY_WITH = {VLLM_CONTAINER!r}.")
    print(f"Accepting the licence of {name.split('@')[0]} for project "
          f"{session.settings.project} with this deployment (ACCEPT_EULA).")
    return True


def _named(display_name: str) -> list[Any]:
    """Endpoints and models named `display_name` (what Model Garden makes carries it)."""
    from google.cloud import aiplatform

    query = f'display_name="{display_name}"'
    return [*aiplatform.Endpoint.list(filter=query), *aiplatform.Model.list(filter=query)]


def _label(resource: Any, labels: dict[str, str]) -> None:
    if dict(resource.labels) != labels:
        resource.update(labels=labels)


def deploy_open_model(session: Session, *, spec: ModelSpec, hardware: Hardware,
                      container: ContainerSpec, dedicated_endpoint: bool, accept_eula: bool,
                      replicas: tuple[int, int], spot: bool, display_name: str,
                      labels: dict[str, str], timeout_s: int,
                      on_created: Callable[[str, str], None],
                      wait: Callable[[Callable[[], bool]], object]) -> str:
    """Deploys with `OpenModel.deploy` and returns the endpoint's resource name. The endpoint
    and model are labelled, and `on_created(endpoint, model)` called, as soon as they exist;
    `wait(done)` polls until the deployment ends (waiting.wait_until: with progress). A
    failed deployment raises DeploymentError, with both kept (and labelled) for its logs."""
    from vertexai.model_garden import OpenModel

    accept = require_eula(session, spec, accept_eula=accept_eula)
    env = dict(container.env)
    token = env.pop("HF_TOKEN", None)
    model = OpenModel(publisher_model(spec))
    # An earlier failed attempt of this run left resources of the same name: not these.
    earlier = {r.resource_name for r in _named(display_name)}
    seen: dict[str, str] = {}  # "endpoint"/"model" -> resource name, once labelled

    def label_new() -> None:
        """Labels what the deployment has made so far; reports both once both exist."""
        if len(seen) == 2:
            return
        for resource in _named(display_name):
            key = "endpoint" if "/endpoints/" in resource.resource_name else "model"
            if resource.resource_name not in earlier and key not in seen:
                _label(resource, labels)
                seen[key] = resource.resource_name
        if len(seen) == 2:
            on_created(seen["endpoint"], seen["model"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(
            model.deploy, accept_eula=accept, hugging_face_access_token=token,
            machine_type=hardware.machine_type, accelerator_type=hardware.accelerator_type,
            accelerator_count=hardware.accelerator_count, min_replica_count=replicas[0],
            max_replica_count=replicas[1], spot=spot, use_dedicated_endpoint=dedicated_endpoint,
            dedicated_endpoint_disabled=not dedicated_endpoint,
            endpoint_display_name=display_name, model_display_name=display_name,
            deploy_request_timeout=timeout_s,
            serving_container_image_uri=container.image_uri,
            serving_container_args=container.args,
            serving_container_environment_variables=env,
            serving_container_ports=[container.port],
            serving_container_predict_route=container.predict_route,
            serving_container_health_route=container.health_route,
            serving_container_shared_memory_size_mb=container.shared_memory_mb,
            serving_container_deployment_timeout=container.deployment_timeout_s)
        def done() -> bool:
            label_new()  # until both exist, each poll looks for them
            return future.done()

        wait(done)
        label_new()
        try:
            endpoint = future.result()
        except Exception as err:
            raise DeploymentError(
                f"deploying {spec.name} through Model Garden failed: {tokens.redact(str(err))}"
                + (f"\nEndpoint {seen['endpoint']} and model {seen['model']} are kept (without "
                   "a deployed model they cost nothing) so their logs can be read; the "
                   "debugging notebook reads them and the cleanup notebook deletes both."
                   if len(seen) == 2 else "")) from None
    return str(endpoint.resource_name)
