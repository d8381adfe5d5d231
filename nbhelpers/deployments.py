"""Deploy a catalog model to a Vertex AI endpoint with the vLLM container, idempotently.

Re-running with the same run id reuses the live deployment instead of paying for a second one.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import asdict, dataclass
from typing import Any

from nbhelpers import catalog, checks, model_garden, tokens, validate
from nbhelpers.catalog import ModelSpec
from nbhelpers.checks import shown
from nbhelpers.connection import Session
from nbhelpers.errors import ConfigError, DeploymentError
from nbhelpers.hardware import Hardware
from nbhelpers.model_garden import MODEL_GARDEN
from nbhelpers.plans import DeploymentPlan
from nbhelpers.releases import DEPLOYMENT_TIMEOUT_S
from nbhelpers.settings import LABEL_MODEL
from nbhelpers.sizing import Scaling
from nbhelpers.waiting import MAX_DEPLOY_WAIT_S, deploy_turn, wait_for_deploys, wait_until


@dataclass(kw_only=True)
class Deployment:
    """A model serving on an endpoint, as recorded in the run's state file."""

    key: str
    model_name: str
    endpoint_name: str
    model_resource: str
    deployed_model_id: str
    machine_type: str
    dedicated_endpoint: bool

    @property
    def endpoint_id(self) -> str:
        return self.endpoint_name.split("/")[-1]

    @property
    def model(self) -> ModelSpec:
        return catalog.get_model(self.model_name)

    def endpoint(self) -> Any:
        """The aiplatform.Endpoint, made once: its prediction client is built on first use,
        which costs tens of milliseconds that every later call would otherwise pay again."""
        cached = self.__dict__.get("_endpoint")
        if cached is None:
            from google.cloud import aiplatform

            cached = self.__dict__["_endpoint"] = aiplatform.Endpoint(self.endpoint_name)
        return cached


def endpoint_of(target: Any) -> Any:
    """The aiplatform.Endpoint of a Deployment; an Endpoint is returned as it is."""
    return target.endpoint() if isinstance(target, Deployment) else target


def _run_endpoint(session: Session, key: str) -> Any:
    """This run's endpoint for the model: the one its state file names, else the one its
    labels name (a recycled runtime loses the state file, not the labels); None if none."""
    from google.api_core import exceptions
    from google.cloud import aiplatform

    record = session.state.deployments.get(key) or {}
    if record.get("endpoint_name"):
        try:
            endpoint = aiplatform.Endpoint(record["endpoint_name"])
            endpoint.gca_resource  # noqa: B018 - the SDK may fetch lazily
            return endpoint
        except exceptions.NotFound:
            session.state.forget_deployment(key)
    query = (f"{session.settings.label_filter()} AND "
             f"labels.{LABEL_MODEL}={validate.label_value(key)}")
    found = aiplatform.Endpoint.list(filter=query)
    return found[0] if found else None


def _adopt(session: Session, key: str, endpoint: Any, plan: DeploymentPlan) -> Deployment | None:
    """The deployment serving on this run's endpoint, recorded as the run's, or None."""
    endpoint._sync_gca_resource()
    served = list(endpoint.gca_resource.deployed_models)
    if not served:
        return None
    record = session.state.deployments.get(key) or {}
    chosen = next((d for d in served if d.id == record.get("deployed_model_id")),
                  next((d for d in served if d.model.split("@")[0] == record.get("model_resource")),
                       served[0]))
    deployment = Deployment(
        key=key, model_name=plan.model.name, endpoint_name=endpoint.resource_name,
        model_resource=chosen.model.split("@")[0], deployed_model_id=chosen.id,
        machine_type=chosen.dedicated_resources.machine_spec.machine_type,
        dedicated_endpoint=bool(endpoint.gca_resource.dedicated_endpoint_enabled))
    session.state.record_deployment(key, {**record, **asdict(deployment), "status": "deployed"})
    return deployment


def _check_quota(session: Session, hardware: Hardware, scaling: Scaling) -> None:
    """Stops before anything is created when the serving quota (Spot VMs' own with Spot) is
    short of the GPUs of the most replicas; a quota that cannot be read (API off, no
    permission) is reported and the deployment goes on."""
    from google.api_core import exceptions

    from nbhelpers.quota import require_quota

    try:
        check = require_quota(session, hardware, replicas=scaling.most, spot=scaling.spot)
        print(f"Serving quota: {check.describe()}.")
    except exceptions.GoogleAPICallError as err:
        print(f"Could not read the serving quota ({err.message}); deploying anyway.")


def deploy(session: Session, plan: DeploymentPlan, *,
           timeout_s: int = DEPLOYMENT_TIMEOUT_S) -> Deployment:
    """Creates endpoint and model (both labelled) and deploys, or reuses the run's deployment:
    one per run and model, whatever happened to earlier kernels. A deployment still in progress
    (a kernel died while waiting for it, or another kernel runs it now) is waited for, then
    used, instead of paying for a second one."""
    if not isinstance(plan, DeploymentPlan):
        raise ConfigError(f"plan must be what plan_deployment() returns, got "
                          f"{shown(plan)} ({type(plan).__name__})")
    checks.whole("timeout_s", timeout_s, low=1, high=MAX_DEPLOY_WAIT_S)
    key = plan.model.slug
    with deploy_turn(session, key, timeout_s=timeout_s):
        endpoint = _run_endpoint(session, key)
        if endpoint is not None:
            wait_for_deploys(endpoint, timeout_s=timeout_s)
            live = _adopt(session, key, endpoint, plan)
            if live is not None:
                print(f"Reusing the live deployment of {plan.model.name} on endpoint "
                      f"{live.endpoint_id} (run {session.settings.run_id}); nothing new is "
                      "created or billed.")
                return live
        plan.require_fit()
        _check_quota(session, plan.hardware, plan.scaling)
        if plan.deploy_with == MODEL_GARDEN:
            return _deploy_with_model_garden(session, plan, endpoint, timeout_s=timeout_s)
        return _deploy_new(session, plan, endpoint, timeout_s=timeout_s)


def _display_name(session: Session, key: str) -> str:
    return validate.display_name(f"{key}-{validate.label_value(session.settings.run_id)}")[:128]


def _deploy_with_model_garden(session: Session, plan: DeploymentPlan, endpoint: Any, *,
                              timeout_s: int) -> Deployment:
    """OpenModel.deploy makes its own endpoint: an empty one of the run (an earlier failed
    attempt) is deleted first; the new endpoint and model are labelled and recorded as soon as
    they exist."""
    from google.cloud import aiplatform

    key = plan.model.slug
    if endpoint is not None and not endpoint.gca_resource.deployed_models:
        endpoint.delete()
    print(f"Deploying {plan.model.name} through Model Garden on {plan.hardware.describe()}. "
          "On Vertex AI this takes 15-60 minutes.", flush=True)

    def created(endpoint_name: str, model_resource: str) -> None:
        session.state.record_deployment(key, {
            **(session.state.deployments.get(key) or {}), "endpoint_name": endpoint_name,
            "model_resource": model_resource, "memory_plan": plan.memory.inputs,
            "status": "deploying", "deploy_started": time.strftime("%Y-%m-%dT%H:%M:%S")})

    try:
        endpoint_name = model_garden.deploy_open_model(
            session, spec=plan.model, hardware=plan.hardware, container=plan.container,
            dedicated_endpoint=plan.dedicated_endpoint, accept_eula=plan.accept_eula,
            replicas=(plan.scaling.min_replicas, plan.scaling.most), spot=plan.scaling.spot,
            display_name=_display_name(session, key),
            labels=session.settings.labels(**{LABEL_MODEL: key}), timeout_s=timeout_s,
            on_created=created, wait=lambda done: wait_until(
                done, "Model Garden to deploy the model and vLLM to pass its health check",
                timeout_s=float("inf")))
    except DeploymentError as err:
        if key in session.state.deployments:
            session.state.record_deployment(key, {**session.state.deployments[key],
                                                  "status": "failed", "error": str(err)})
        raise
    deployment = _adopt(session, key, aiplatform.Endpoint(endpoint_name), plan)
    if deployment is None:
        raise DeploymentError(f"the Model Garden deployment to {endpoint_name} ended without a "
                              "deployed model; the debugging notebook reads its logs")
    print(f"Deployed: endpoint {deployment.endpoint_id}.")
    return deployment


def _deploy_new(session: Session, plan: DeploymentPlan, endpoint: Any, *,
                timeout_s: int) -> Deployment:
    """Uploads the model and deploys it to the run's endpoint (made here when there is none,
    or kept empty by an earlier failed attempt), recording each step in the run's state first,
    so a re-run and cleanup find what exists."""
    from google.cloud import aiplatform

    settings = session.settings
    key = plan.model.slug
    labels = settings.labels(**{LABEL_MODEL: key})
    display = _display_name(session, key)
    if endpoint is None:
        endpoint = aiplatform.Endpoint.create(
            display_name=display, labels=labels,
            dedicated_endpoint_enabled=plan.dedicated_endpoint,
            inference_timeout=plan.inference_timeout_s)
    record = session.state.deployments.get(key) or {}
    session.state.record_deployment(key, {**record, "endpoint_name": endpoint.resource_name,
                                          "status": "endpoint created"})
    container = plan.container
    model = aiplatform.Model.upload(
        display_name=display,
        serving_container_image_uri=container.image_uri,
        serving_container_args=container.args,
        serving_container_environment_variables=container.env,
        serving_container_ports=[container.port],
        serving_container_predict_route=container.predict_route,
        serving_container_health_route=container.health_route,
        serving_container_shared_memory_size_mb=container.shared_memory_mb,
        serving_container_deployment_timeout=container.deployment_timeout_s,
        labels=labels,
    )
    session.state.record_deployment(key, {**session.state.deployments[key],
                                          "model_resource": model.resource_name,
                                          "memory_plan": plan.memory.inputs,
                                          "status": "deploying",
                                          "deploy_started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    hardware = plan.hardware
    print(f"Deploying {plan.model.name} to endpoint {endpoint.name} on {hardware.describe()}. "
          "On Vertex AI this takes 15-60 minutes (weights download, then vLLM loads them).",
          flush=True)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(
            model.deploy, endpoint=endpoint, machine_type=hardware.machine_type,
            accelerator_type=hardware.accelerator_type,
            accelerator_count=hardware.accelerator_count,
            service_account=session.state.get("service_account"),
            deploy_request_timeout=timeout_s, sync=True, **plan.scaling.deploy_arguments(),
        )
        try:
            wait_until(future.done, "the vLLM server to load the model and pass its health "
                       "check", timeout_s=float("inf"))
            future.result()
        except Exception as err:
            session.state.record_deployment(key, {**session.state.deployments[key],
                                                  "status": "failed",
                                                  "error": tokens.redact(str(err))})
            raise DeploymentError(
                f"deploying {plan.model.name} failed: {tokens.redact(str(err))}\n"
                f"Endpoint {endpoint.name} and model {model.name} are kept (without a deployed "
                "model they cost nothing) so their logs can be read; the debugging notebook "
                "reads them and the cleanup notebook deletes both."
            ) from None
    deployment = _adopt(session, key, endpoint, plan)
    if deployment is None:
        raise DeploymentError(f"the deployment to endpoint {endpoint.name} ended without a "
                              "deployed model; the debugging notebook reads its logs")
    print(f"Deployed in {time.monotonic() - started:.0f}s: endpoint {deployment.endpoint_id}.")
    return deployment


def run_deployment(session: Session, model: str | ModelSpec) -> Deployment | None:
    """This run's live deployment of `model` (what 01 or 02 deployed in the same run, found
    by the run's state or its labels), or None; nothing is created."""
    spec = model if isinstance(model, ModelSpec) else catalog.get_model(model)
    endpoint = _run_endpoint(session, spec.slug)
    if endpoint is None:
        return None
    endpoint._sync_gca_resource()
    if not endpoint.gca_resource.deployed_models:
        return None
    record = session.state.deployments.get(spec.slug) or {}
    served = list(endpoint.gca_resource.deployed_models)
    chosen = next((d for d in served if d.id == record.get("deployed_model_id")), served[0])
    return Deployment(key=spec.slug, model_name=spec.name, endpoint_name=endpoint.resource_name,
                      model_resource=chosen.model.split("@")[0], deployed_model_id=chosen.id,
                      machine_type=chosen.dedicated_resources.machine_spec.machine_type,
                      dedicated_endpoint=bool(endpoint.gca_resource.dedicated_endpoint_enabled))


def reconnect(session: Session, endpoint_id: str) -> Deployment:
    """A Deployment for an existing endpoint (an id or a full resource name)."""
    from google.api_core import exceptions
    from google.cloud import aiplatform

    if not isinstance(endpoint_id, str) or not endpoint_id.strip():
        raise ConfigError(f"endpoint_id is empty or not text ({shown(endpoint_id)}): give "
                          "the endpoint's number or resource name")
    checks.text("endpoint_id", endpoint_id)
    try:
        endpoint = aiplatform.Endpoint(endpoint_id.strip())
        deployed = list(endpoint.gca_resource.deployed_models)
    except exceptions.NotFound:
        raise ConfigError(
            f"endpoint {endpoint_id!r} not found in {session.settings.project}/"
            f"{session.settings.region}; check the id and the region"
        ) from None
    if not deployed:
        raise DeploymentError(f"endpoint {endpoint_id} has no deployed model to talk to")
    model_resource = deployed[0].model.split("@")[0]
    from google.cloud.aiplatform import Model

    env = {e.name: e.value for e in Model(model_resource).gca_resource.container_spec.env}
    spec = catalog.get_model(env.get("MODEL_ID", ""))
    return Deployment(key=spec.slug, model_name=spec.name, endpoint_name=endpoint.resource_name,
                      model_resource=model_resource, deployed_model_id=deployed[0].id,
                      machine_type=deployed[0].dedicated_resources.machine_spec.machine_type,
                      dedicated_endpoint=bool(endpoint.gca_resource.dedicated_endpoint_enabled))
