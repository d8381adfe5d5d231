"""Deploy a catalog model to a Vertex AI endpoint with the vLLM container, idempotently.

Re-running with the same run id reuses the live deployment instead of paying for a second one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from nbhelpers import catalog, checks, model_garden, planner, prices, releases, tokens, validate
from nbhelpers.catalog import ModelSpec
from nbhelpers.checks import shown
from nbhelpers.connection import Session, current_session
from nbhelpers.container import (
    ContainerSpec,
    VllmOptions,
    check_server_args,
    container_spec,
    memory_inputs,
    server_args,
)
from nbhelpers.errors import ConfigError, DeploymentError
from nbhelpers.hardware import MACHINE_TYPES, Hardware
from nbhelpers.limits import (
    DEDICATED_DEFAULT_INFERENCE_TIMEOUT_S,
    DEDICATED_MAX_INFERENCE_TIMEOUT_S,
    SHARED_INFERENCE_TIMEOUT_S,
    predict_payload_bytes,
)
from nbhelpers.model_garden import DEPLOY_WITH, MODEL_GARDEN, VLLM_CONTAINER, Comparison
from nbhelpers.releases import DEFAULT_TAG, DEPLOYMENT_TIMEOUT_S, image_uri
from nbhelpers.request_rules import Requests
from nbhelpers.settings import LABEL_MODEL

MAX_DEPLOY_WAIT_S = 24 * 3600  # a bound on deploy's timeout_s: far past any real deployment
# Autoscaling targets a deployment may scale on: Scaling's name for each, the argument of the
# aiplatform SDK's Model.deploy that carries it (google-cloud-aiplatform 2.x), and its range.
AUTOSCALING_TARGETS: dict[str, tuple[str, int, int, str]] = {
    "gpu_duty_cycle": ("autoscaling_target_accelerator_duty_cycle", 1, 100,
                       "percent of the time the GPUs are busy"),
    "requests_per_minute": ("autoscaling_target_request_count_per_minute", 1, 1_000_000,
                            "prediction requests per minute per replica"),
    "vllm_kv_cache_usage": ("autoscaling_target_vllm_gpu_cache_usage_perc", 1, 100,
                            "percent of vLLM's KV cache in use"),
    "vllm_requests_waiting": ("autoscaling_target_vllm_num_requests_waiting", 1, 1_000_000,
                              "requests waiting in vLLM's queue"),
}


@dataclass(frozen=True, kw_only=True)
class Scaling:
    """How many replicas serve, on which VMs, and what they scale on. The price and the GPUs a
    plan needs count `max_replicas`: what autoscaling may reach is what may be billed."""

    min_replicas: int = 1
    max_replicas: int | None = None  # None: min_replicas, no autoscaling
    spot: bool = False  # Spot VMs: cheaper, and Compute Engine may take them back at any time
    targets: dict[str, int] = field(default_factory=dict)  # AUTOSCALING_TARGETS names

    @property
    def most(self) -> int:
        return self.min_replicas if self.max_replicas is None else self.max_replicas

    def check(self) -> None:
        checks.whole("min_replicas", self.min_replicas, low=1, high=prices.MAX_REPLICAS,
                     why="scale to zero is a preview of the v1beta1 API, not offered here")
        if self.max_replicas is not None:
            checks.whole("max_replicas", self.max_replicas, low=self.min_replicas,
                         high=prices.MAX_REPLICAS, why="at least min_replicas, or None")
        checks.flag("spot", self.spot)
        if not isinstance(self.targets, dict):
            raise ConfigError(f"targets must be a dict of autoscaling targets, got "
                              f"{shown(self.targets)}")
        for name, value in self.targets.items():
            checks.one_of("autoscaling target", name, AUTOSCALING_TARGETS)
            _, low, high, what = AUTOSCALING_TARGETS[name]
            checks.whole(f"targets[{name!r}]", value, low=low, high=high, why=what)

    def deploy_arguments(self) -> dict[str, Any]:
        """The aiplatform SDK's Model.deploy arguments for this scaling."""
        arguments: dict[str, Any] = {"min_replica_count": self.min_replicas,
                                     "max_replica_count": self.most}
        if self.spot:
            arguments["spot"] = True
        for name, value in self.targets.items():
            arguments[AUTOSCALING_TARGETS[name][0]] = value
        return arguments

    def describe(self) -> str:
        count = (f"{self.min_replicas} replica{'s' if self.min_replicas > 1 else ''}"
                 if self.most == self.min_replicas else
                 f"{self.min_replicas} to {self.most} replicas")
        vms = "Spot VMs (may be taken back at any time)" if self.spot else "on-demand VMs"
        targets = ", ".join(f"{name} {value}" for name, value in self.targets.items())
        return f"{count} on {vms}" + (f", autoscaling on {targets}" if targets else "")


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
        _require_price_within(limit, price, spec=spec, options=options, image=image,
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


def _cheaper_scaling(limit: float, price: prices.PriceEstimate,
                     scaling: Scaling) -> list[tuple[float, str]]:
    """Fewer replicas, or Spot VMs, on the same machine type, where within the limit."""
    found = []
    per_node = price.node_usd_per_hour
    if per_node and scaling.most > 1 and per_node * scaling.min_replicas <= limit:
        most = min(int(limit // per_node), scaling.most - 1)
        found.append((per_node * most, f"max_replicas = {most} on {price.machine_type} (about "
                                       f"${per_node * most:,.2f}/hour at most)"))
    if not scaling.spot:
        spot = prices.estimate(price.machine_type, replicas=scaling.most, spot=True,
                               region=price.region)
        if spot.known and (spot.usd_per_hour or 0) <= limit:
            found.append((spot.usd_per_hour or 0, f"spot = True on {price.machine_type} (about "
                                                  f"${spot.usd_per_hour:,.2f}/hour; Compute "
                                                  "Engine may take Spot VMs back at any time)"))
    return found


def _starts_on(spec: ModelSpec, hardware: Hardware, *, options: VllmOptions | None,
               image: str, weights_uri: str = "") -> bool:
    """Whether the memory planner predicts the model starts on this hardware with `options`
    (None: the catalog's settings), its heads dividing among the GPUs as vLLM needs."""
    heads = spec.config.get("text_config", spec.config)["num_attention_heads"]
    if heads % hardware.accelerator_count:
        return False
    try:
        resolved = (options or VllmOptions()).resolved(spec, hardware.accelerator_count)
        args = server_args(weights_uri or spec.hf_id, resolved)
        return planner.plan_memory(accelerator=hardware.accelerator_type, suggest_fixes=False,
                                   **memory_inputs(spec, args, image)).ok
    except ConfigError:
        return False


def machine_choices(model: str | ModelSpec, *, container_tag: str = DEFAULT_TAG) -> list[str]:
    """The machine types a notebook offers for `model`: the catalog's (the tutorial's) first,
    then its alternatives (the tutorial's 8 x L4 for 70B), then every other one on which the
    memory planner predicts it starts with the catalog's settings, cheapest first."""
    spec = model if isinstance(model, ModelSpec) else catalog.get_model(model)
    image = image_uri(container_tag)
    tutorial = [spec.hardware.machine_type, *(h.machine_type for h in spec.alternatives)]
    others = [m for m in MACHINE_TYPES if m not in tutorial
              and _starts_on(spec, Hardware.for_machine(m), options=None, image=image)]
    return tutorial + sorted(others, key=lambda m: prices.estimate(m).usd_per_hour or 1e9)


def machine_param_choices(models: list[str]) -> list[str]:
    """The choices of a notebook's `MACHINE_TYPE = ""  # @param [...]` for the models of its
    `MODEL` list: '' (the tutorial's machine for the model picked) first, then each model's
    tutorial machines, then every other machine one of them starts on. Colab's form cannot
    follow the model: the machine picker refuses a machine the model does not start on."""
    specs = [catalog.get_model(name) for name in models]
    tutorial = [m for spec in specs
                for m in (spec.hardware.machine_type, *(h.machine_type for h in spec.alternatives))]
    starts = {m for spec in specs for m in machine_choices(spec)}
    return list(dict.fromkeys(["", *tutorial, *(m for m in MACHINE_TYPES if m in starts)]))


def _require_price_within(limit: float, price: prices.PriceEstimate, *, spec: ModelSpec,
                          options: VllmOptions | None, image: str, weights_uri: str,
                          scaling: Scaling) -> None:
    """Refuses a plan whose hourly price is above MAX_HOURLY_COST (or unknown), before
    anything exists, naming the machine types within the limit on which the memory planner
    predicts the model starts with the same settings."""
    if price.known and (price.usd_per_hour or 0) <= limit:
        return
    cheaper = _cheaper_scaling(limit, price, scaling)
    for machine in MACHINE_TYPES:
        other = prices.estimate(machine, replicas=scaling.most, spot=scaling.spot,
                                region=price.region)
        if machine == price.machine_type or not other.known or (other.usd_per_hour or 0) > limit:
            continue
        hardware = Hardware.for_machine(machine)
        if _starts_on(spec, hardware, options=options, image=image, weights_uri=weights_uri):
            cheaper.append((other.usd_per_hour or 0, f"MACHINE_TYPE = {machine!r} "
                            f"({hardware.describe()}, about ${other.usd_per_hour:,.2f}/hour)"))
    said = (f"costs {price.describe()}, above MAX_HOURLY_COST ${limit:,.2f}/hour" if price.known
            else f"has no price ({price.describe()}), so it cannot be held to MAX_HOURLY_COST "
                 f"${limit:,.2f}/hour")
    choices_said = "".join(f"\n  - {line}" for _, line in sorted(cheaper)[:5]) or \
        "\n  - none of the machine types fits this model within it: raise the limit"
    raise ConfigError(
        f"{spec.name} on {price.machine_type} {said}. Choices within the limit where the memory "
        "plan predicts it starts:"
        f"{choices_said}\nOr raise MAX_HOURLY_COST (plan_deployment(max_hourly_cost=...)); "
        "0 means no limit.")


def wait_until(done: Callable[[], bool], what: str, *, timeout_s: float) -> bool:
    """Polls `done` until it holds (True) or `timeout_s` passes (False), saying what it waits
    for, less often as the wait grows (deploys take up to an hour). Polls quickly at first, so
    short waits end soon after they could."""
    started = time.monotonic()
    next_report, pause = 10.0, 0.05
    while not done():
        waited = time.monotonic() - started
        if waited >= timeout_s:
            return False
        if waited >= next_report:
            print(f"  ... {int(waited // 60)}m{int(waited % 60):02d}s: still waiting for {what}",
                  flush=True)
            next_report = next_report * 2 if next_report < 300 else next_report + 300
        time.sleep(min(pause, max(0.0, timeout_s - waited)))
        pause = min(pause * 1.5, 5.0)  # 0.05, 0.08, 0.11 s ...: a short deploy is seen soon
    return True


def deploys_in_progress(endpoint: Any) -> list[str]:
    """The endpoint's DeployModel operations that have not ended. Vertex AI refuses to delete
    an endpoint (or its model) while one runs, and a kernel that died while waiting leaves one
    running: this is how a re-run and cleanup find it."""
    from google.longrunning import operations_pb2

    running, token = [], ""
    while True:
        reply = endpoint.api_client.list_operations(request=operations_pb2.ListOperationsRequest(
            name=endpoint.resource_name, page_token=token))
        running += [op.name for op in reply.operations if not op.done
                    and op.metadata.type_url.endswith(".DeployModelOperationMetadata")]
        token = reply.next_page_token
        if not token:
            return running


def wait_for_deploys(endpoint: Any, *, timeout_s: float) -> bool:
    """Waits, with progress, until no deployment runs on the endpoint; True if one was running.
    Raises DeploymentError when one still runs after `timeout_s`."""
    if not deploys_in_progress(endpoint):
        return False
    print(f"A deployment is in progress on endpoint {endpoint.name}; waiting for it to end "
          f"(up to {timeout_s / 60:.0f} min) before going on.", flush=True)
    if not wait_until(lambda: not deploys_in_progress(endpoint),
                      f"the deployment in progress on endpoint {endpoint.name}",
                      timeout_s=timeout_s):
        raise DeploymentError(
            f"a deployment on endpoint {endpoint.name} was still in progress after "
            f"{timeout_s / 60:.0f} min; Vertex AI lets nothing delete it before it ends. Run "
            "this again later (the cleanup notebook deletes it once it has ended); its "
            "nbh-expires label lets `python -m nbhelpers cleanup --expired` find it too.")
    return True


@contextlib.contextmanager
def _deploy_turn(session: Session, key: str, *, timeout_s: float) -> Iterator[None]:
    """One deployment at a time per run and model on this machine: kernels that share a run id
    take turns, so the second finds the first's deployment instead of paying for another. The
    lock is a file lock, which the operating system drops when a kernel dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the endpoint's labels still find the deployment
        yield
        return
    path = session.state.path.parent / f"deploy-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        def take() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        if not take():
            print(f"Another kernel of run {session.settings.run_id} is deploying {key} now; "
                  "waiting for it, then using its deployment.", flush=True)
            if not wait_until(take, f"the other kernel's deployment of {key}",
                              timeout_s=timeout_s):
                raise DeploymentError(
                    f"another kernel of run {session.settings.run_id} was still deploying "
                    f"{key} after {timeout_s / 60:.0f} min; run this cell again later")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    with _deploy_turn(session, key, timeout_s=timeout_s):
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
