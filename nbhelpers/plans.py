"""The deployment plan: everything a deployment will use, checked before any cloud call (the
container's arguments, the memory planner's prediction, the price limit, the inference timeout,
the requests the notebook will send, the Hugging Face token)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbhelpers import catalog, checks, model_garden, planner, prices, releases, tokens, validate
from nbhelpers.catalog import ModelSpec
from nbhelpers.checks import shown
from nbhelpers.connection import current_session
from nbhelpers.container import (
    ContainerSpec,
    VllmOptions,
    check_server_args,
    container_spec,
    memory_inputs,
    server_args,
)
from nbhelpers.errors import ConfigError
from nbhelpers.hardware import Hardware
from nbhelpers.limits import (
    DEDICATED_DEFAULT_INFERENCE_TIMEOUT_S,
    DEDICATED_MAX_INFERENCE_TIMEOUT_S,
    SHARED_INFERENCE_TIMEOUT_S,
    predict_payload_bytes,
)
from nbhelpers.model_garden import DEPLOY_WITH, MODEL_GARDEN, VLLM_CONTAINER, Comparison
from nbhelpers.releases import DEFAULT_TAG, image_uri
from nbhelpers.request_rules import Requests
from nbhelpers.sizing import Scaling, require_price_within


@dataclass(kw_only=True)
class DeploymentPlan:
    """Everything a deployment will use, checked before any cloud call."""

    model: ModelSpec
    hardware: Hardware
    options: VllmOptions
    container: ContainerSpec
    dedicated_endpoint: bool
    weights_uri: str
    memory: planner.MemoryPlan  # the memory planner's prediction for these GPUs and settings
    price: prices.PriceEstimate  # what the deployment costs per hour while it exists
    container_tag: str = DEFAULT_TAG
    force: bool = False  # deploy even when the planner predicts a failed start
    requests: Requests | None = None  # what the notebook will send, checked with the plan
    max_hourly_cost: float | None = None  # the limit the price was checked against
    scaling: Scaling = field(default_factory=Scaling)
    deploy_with: str = VLLM_CONTAINER  # or MODEL_GARDEN: OpenModel.deploy (model_garden.py)
    accept_eula: bool = False  # Model Garden: accept the model's licence with the deploy
    verified: Comparison | None = None  # Model Garden: Google's verified configurations
    # A dedicated endpoint's inference timeout (Endpoint.create's inference_timeout; None:
    # Google's default, 10 minutes); a shared endpoint ends a prediction at about 60 s.
    inference_timeout_s: int | None = None

    def endpoint_line(self) -> str:
        """The endpoint type and what it means for the requests the notebook sends."""
        if not self.dedicated_endpoint:
            return (f"shared (requests up to {predict_payload_bytes(dedicated=False):,} bytes, "
                    f"no streaming, a prediction ends at about {SHARED_INFERENCE_TIMEOUT_S} s)")
        timeout = (f"inference timeout {self.inference_timeout_s} s"
                   if self.inference_timeout_s else
                   f"inference timeout {DEDICATED_DEFAULT_INFERENCE_TIMEOUT_S} s, Google's "
                   "default")
        return (f"dedicated (its own DNS name; requests up to "
                f"{predict_payload_bytes(dedicated=True):,} bytes, streaming, {timeout})")

    @property
    def stores_token(self) -> bool:
        """Whether the Hugging Face token goes into the Model's container environment."""
        return "HF_TOKEN" in self.container.env

    def token_line(self) -> str:
        """Where the Hugging Face token goes, said once, before anything is deployed."""
        if self.stores_token:
            return ("your Hugging Face token will be stored in the Model's container "
                    "environment, readable by anyone in the project who can read models; set "
                    "WEIGHTS_URI to a gs:// copy (Model Garden's, after accepting the EULA) to "
                    "keep it out")
        if self.weights_uri:
            return "none stored: the weights come from Cloud Storage"
        return "none stored"

    def describe(self) -> str:
        source = self.weights_uri or f"Hugging Face {self.model.hf_id}"
        lines = [
            f"model:      {self.model.name} ({self.model.modality}, "
            f"{'instruct' if self.model.instruct else 'base'})",
            f"weights:    {source}",
            f"token:      {self.token_line()}",
            f"hardware:   {self.hardware.describe()}",
            f"replicas:   {self.scaling.describe()}",
            f"endpoint:   {self.endpoint_line()}",
            f"deploy:     {self.deploy_with}" + (
                " (OpenModel.deploy with this container; endpoint and model labelled once "
                "made)" if self.deploy_with == MODEL_GARDEN else ""),
            f"container:  {self.container.image_uri}",
            f"release:    {releases.release(self.container_tag).describe()}",
            "vllm args:  " + " ".join(self.container.args[3:]),
            f"env:        {self.container.public_env()}",
            "memory:     " + self.memory.describe().replace("\n", "\n            "),
            f"price:      {self.price.describe()}"
            + (f" (limit ${self.max_hourly_cost:,.2f}/hour)" if self.max_hourly_cost else ""),
        ]
        if self.requests is not None:
            lines.append(f"requests:   {self.requests.describe()} (checked)")
        if self.verified is not None:
            lines.append(self.verified.describe())
        return "\n".join(lines)

    def require_fit(self) -> None:
        """Stops, with the fixes, when the planner predicts vLLM will not start; a failed
        start is otherwise found only after the deployment's long wait."""
        if self.memory.ok or self.force:
            return
        fixes = "".join(f"\n  - {_fix_line(fix)}" for fix in self.memory.fixes) or \
            "\n  - none found on these GPUs: choose a smaller model"
        raise ConfigError(
            f"{self.model.name} will not start on {self.hardware.describe()}: "
            f"{self.memory.reason}.\nChange one of these and plan again:{fixes}\nTo deploy "
            "anyway, set FORCE_DEPLOY = True (plan_deployment(..., force=True)).")


def _fix_line(fix: planner.Fix) -> str:
    parameters = fix.notebook_parameters()
    said = ", ".join(f"{k} = {v!r}" for k, v in (parameters or {}).items())
    return f"{fix.summary}" + (f": set {said}" if said else "")


def plan_deployment(
    model: str | ModelSpec,
    *,
    machine_type: str = "",
    options: VllmOptions | None = None,
    weights_uri: str = "",
    dedicated_endpoint: bool = True,
    inference_timeout_s: int | None = None,
    container_tag: str = DEFAULT_TAG,
    family: str | None = None,
    ask_for_token: bool = True,
    hf_token_secret: str = tokens.DEFAULT_SECRET,
    force: bool = False,
    requests: Requests | None = None,
    max_hourly_cost: float | None = None,
    region: str = prices.PRICED_REGION,
    scaling: Scaling | None = None,
    deploy_with: str = VLLM_CONTAINER,
    accept_eula: bool = False,
) -> DeploymentPlan:
    """Validates the request, predicts whether vLLM will start (`memory`) and builds the
    container; raises ConfigError before any cloud call. Everything that would otherwise fail
    only after a GPU is billed is checked here: the container's arguments as the image's vLLM
    parses them, and `requests`, what the notebook will send once the model serves. The
    plan carries its hourly price in `region` at the most replicas `scaling` allows; a price
    above `max_hourly_cost` (USD; None or 0: no limit) is refused with cheaper choices. The
    endpoint is dedicated unless `dedicated_endpoint=False` (Model Garden's default since
    August 2025): its own DNS name, streaming, 10 MB requests, and `inference_timeout_s` (1 to
    3600; None: Google's 10 minutes); a shared endpoint ends a prediction at about 60 s. The
    Hugging Face token is read last (an interactive run asks for it), and only when the weights
    come from Hugging Face."""
    if family is not None:
        checks.one_of("family", family, catalog.FAMILIES)
    if not isinstance(model, ModelSpec):
        checks.text("model", model)
    spec = model if isinstance(model, ModelSpec) else catalog.get_model(model, family)
    checks.text("machine_type", machine_type, empty_ok=True)
    hardware = Hardware.for_machine(machine_type) if machine_type else spec.hardware
    if options is not None and not isinstance(options, VllmOptions):
        raise ConfigError(f"options must be nbhelpers.VllmOptions(...) or None, got "
                          f"{shown(options)} ({type(options).__name__})")
    resolved = (options or VllmOptions()).resolved(spec, hardware.accelerator_count)
    checks.text("weights_uri", weights_uri, empty_ok=True)
    if weights_uri:
        try:
            validate.gs_uri(weights_uri)
        except ConfigError as err:
            raise ConfigError(f"weights_uri: {err}") from None
    for name, value in (("dedicated_endpoint", dedicated_endpoint),
                        ("ask_for_token", ask_for_token), ("force", force)):
        checks.flag(name, value)
    _check_inference_timeout(inference_timeout_s, dedicated=dedicated_endpoint,
                             deploy_with=deploy_with)
    checks.text("container_tag", container_tag)
    tokens.check_secret_name("hf_token_secret", hf_token_secret)
    image = image_uri(container_tag)
    releases.require_machine_arch(container_tag, hardware.machine_type)
    if spec.modality == "vision":
        releases.require_vision(container_tag, spec.name)
    limit = prices.check_max_hourly_cost(max_hourly_cost)
    checks.text("region", region)
    if scaling is not None and not isinstance(scaling, Scaling):
        raise ConfigError(f"scaling must be nbhelpers.Scaling(...) or None, got "
                          f"{shown(scaling)} ({type(scaling).__name__})")
    scaling = scaling or Scaling()
    scaling.check()
    checks.one_of("deploy_with", deploy_with, DEPLOY_WITH)
    checks.flag("accept_eula", accept_eula)
    if deploy_with == MODEL_GARDEN and scaling.targets:
        raise ConfigError(f"deploy_with={MODEL_GARDEN!r} takes no autoscaling targets "
                          f"(OpenModel.deploy has none); drop {sorted(scaling.targets)} or "
                          f"deploy with {VLLM_CONTAINER!r}")
    args = server_args(weights_uri or spec.hf_id, resolved)
    check_server_args(args, image, gpus=hardware.accelerator_count)
    memory = planner.plan_memory(accelerator=hardware.accelerator_type,
                                 **memory_inputs(spec, args, image))
    price = prices.estimate(hardware.machine_type, replicas=scaling.most, spot=scaling.spot,
                            region=region)
    if limit is not None:
        require_price_within(limit, price, spec=spec, options=options, image=image,
                              weights_uri=weights_uri, scaling=scaling)
    if requests is not None:
        if not isinstance(requests, Requests):
            raise ConfigError(f"requests must be nbhelpers.Requests(...) or None, got "
                              f"{shown(requests)} ({type(requests).__name__})")
        requests.check(spec, max_model_len=resolved.max_model_len or spec.max_model_len,
                       dedicated=dedicated_endpoint, container_args=args)
    # Weights from Cloud Storage need no token: none is read, so none can be stored. One from
    # Hugging Face is looked for where the runtime keeps it (Secret Manager: the connected
    # project's `hf_token_secret`), and the Hub is asked whether it can read the model.
    token = None if weights_uri else tokens.hf_token(
        required=spec.gated, model_name=spec.name, ask=ask_for_token, repo_id=spec.hf_id,
        secret_name=hf_token_secret, project_secrets=current_session())
    container = container_spec(spec, resolved, weights_uri=weights_uri or None, hf_token=token,
                               tag=container_tag)
    return DeploymentPlan(model=spec, hardware=hardware, options=resolved, container=container,
                          dedicated_endpoint=dedicated_endpoint, weights_uri=weights_uri,
                          memory=memory, price=price, container_tag=container_tag, force=force,
                          requests=requests, max_hourly_cost=limit, scaling=scaling,
                          deploy_with=deploy_with, accept_eula=accept_eula,
                          inference_timeout_s=inference_timeout_s,
                          verified=model_garden.compare(spec, hardware=hardware,
                                                        container=container,
                                                        session=current_session())
                          if deploy_with == MODEL_GARDEN else None)


def _check_inference_timeout(value: Any, *, dedicated: bool, deploy_with: str) -> None:
    """An inference timeout is a dedicated endpoint's, made by Endpoint.create: None, or 1 to
    3600 seconds."""
    if value is None:
        return
    checks.whole("inference_timeout_s", value, low=1, high=DEDICATED_MAX_INFERENCE_TIMEOUT_S,
                 why="seconds a dedicated endpoint waits for a prediction; None: Google's "
                     f"default, {DEDICATED_DEFAULT_INFERENCE_TIMEOUT_S} s")
    if not dedicated:
        raise ConfigError(
            f"inference_timeout_s={value} needs a dedicated endpoint: a shared endpoint ends "
            f"every prediction at about {SHARED_INFERENCE_TIMEOUT_S} s and takes no timeout. "
            "Set dedicated_endpoint=True, or inference_timeout_s=None")
    if deploy_with == MODEL_GARDEN:
        raise ConfigError(
            f"inference_timeout_s={value} cannot be set with deploy_with={MODEL_GARDEN!r} "
            "(OpenModel.deploy makes its endpoint without one, so it keeps Google's "
            f"{DEDICATED_DEFAULT_INFERENCE_TIMEOUT_S} s); set inference_timeout_s=None or "
            f"deploy with {VLLM_CONTAINER!r}")
