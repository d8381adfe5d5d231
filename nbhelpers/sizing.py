"""How big a deployment is: its replicas (`Scaling`: how many, Spot or on-demand VMs, what
autoscaling follows) and its machine type (the ones a model starts on, and the cheaper sizes
within a price limit, which the plan offers when it refuses a price)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbhelpers import catalog, checks, planner, prices
from nbhelpers.catalog import ModelSpec
from nbhelpers.checks import shown
from nbhelpers.container import VllmOptions, memory_inputs, server_args
from nbhelpers.errors import ConfigError
from nbhelpers.hardware import MACHINE_TYPES, Hardware
from nbhelpers.releases import DEFAULT_TAG, image_uri

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


def require_price_within(limit: float, price: prices.PriceEstimate, *, spec: ModelSpec,
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
