"""What a deployment costs per hour: a price table for prediction nodes (a machine type's vCPUs
and memory, plus its GPUs) and the estimate of a plan. A fact table: imports nothing of ours but
the hardware table, the value rules and errors.

Source and date. Vertex AI bills a deployed model per node-hour, at the rates of the "Prediction
and explanation" tables of https://cloud.google.com/vertex-ai/pricing#prediction-prices (a vCPU
rate, a memory rate and an accelerator rate per region). Those tables were NOT readable with
this project's research tools on 2026-11-26 (the stored copies of the page stop before them), so
EVERY FIGURE BELOW IS AN ASSUMPTION: Compute Engine's on-demand list rates for us-central1 as the
team knows them, fitted to the few published figures a secondary source gives (each `Rate`
names its own). Vertex AI charges prediction nodes at least Compute Engine's rate, so treat an
estimate as a floor, and check the pricing page before relying on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbhelpers import checks
from nbhelpers.errors import ConfigError, choices
from nbhelpers.hardware import ACCELERATORS, MACHINE_SHAPES, MACHINE_TYPES

PRICING_PAGE = "https://cloud.google.com/vertex-ai/pricing#prediction-prices"
READ_ON = "2026-11-26"
PRICED_REGION = "us-central1"
MAX_REPLICAS = 1_000  # far above any quota: keeps the arithmetic of a typo finite


@dataclass(frozen=True, kw_only=True)
class Rate:
    """One price: USD per hour of one unit, where it comes from, and whether it is assumed."""

    usd_per_hour: float
    source: str
    assumption: bool = True


_CE = (f"assumption: Compute Engine on-demand list rate, {PRICED_REGION}, as the team knows it "
       f"(the Vertex AI prediction table at {PRICING_PAGE} was not readable on {READ_ON})")
_A3_CHECK = ("fitted so a3-highgpu-1g costs $10.9791/h, the Cloud Billing catalog's Compute Engine "
             "figure for us-central1 read 2026-09-26 (secondary source: tgarg01/silybench-data "
             "derived/csv/gpu_prices.csv)")
_G2_CHECK = ("fits g2-standard-24 at about $2.00/h (secondary source: a 2026-02-21 research "
             "note citing cloudprice.net and gcloud-compute.com)")

# Machine families: (USD per vCPU-hour, USD per GB-hour) of the node without its GPUs.
FAMILY_RATES: dict[str, tuple[Rate, Rate]] = {
    "g2": (Rate(usd_per_hour=0.02503, source=f"{_CE}; {_G2_CHECK}"),
           Rate(usd_per_hour=0.00292, source=f"{_CE}; {_G2_CHECK}")),
    "a2": (Rate(usd_per_hour=0.031611, source=_CE), Rate(usd_per_hour=0.004237, source=_CE)),
    "a3": (Rate(usd_per_hour=0.03461, source=f"{_CE}; {_A3_CHECK}"),
           Rate(usd_per_hour=0.00464, source=f"{_CE}; {_A3_CHECK}")),
}
# USD per GPU-hour. None: no figure found, not even a secondary one; a plan on it has no price.
GPU_RATES: dict[str, Rate | None] = {
    "NVIDIA_L4": Rate(usd_per_hour=0.56, source=f"{_CE}; {_G2_CHECK}"),
    "NVIDIA_TESLA_A100": Rate(usd_per_hour=2.933908, source=_CE),
    "NVIDIA_A100_80GB": Rate(usd_per_hour=3.93, source=_CE),
    "NVIDIA_H100_80GB": Rate(usd_per_hour=8.99348, source=f"{_CE}; {_A3_CHECK}"),
    "NVIDIA_H200_141GB": None,
}
# The share of the on-demand price a Spot VM node costs, per GPU type.
SPOT_SHARES: dict[str, Rate | None] = {
    "NVIDIA_L4": Rate(usd_per_hour=0.40, source="assumption: Compute Engine's Spot discount "
                      "for G2 of about 60%, not read from a source"),
    "NVIDIA_TESLA_A100": Rate(usd_per_hour=0.30, source="assumption: about 70% off, as a "
                              "secondary note gives the A100 40GB Spot GPU at $0.88/h"),
    "NVIDIA_A100_80GB": Rate(usd_per_hour=0.30, source="assumption: as the A100 40GB"),
    "NVIDIA_H100_80GB": Rate(usd_per_hour=0.5985, source="a3-highgpu-1g Spot $6.571/h over "
                             "on-demand $10.9791/h, Cloud Billing catalog read 2026-09-26 "
                             "(secondary source: tgarg01/silybench-data)"),
    "NVIDIA_H200_141GB": None,
}


@dataclass(frozen=True, kw_only=True)
class PriceEstimate:
    """The hourly price of a planned deployment, with what it rests on."""

    machine_type: str
    accelerator_type: str
    accelerator_count: int
    replicas: int
    spot: bool
    region: str
    node_usd_per_hour: float | None  # one node; None when a rate is missing
    caveats: tuple[str, ...] = field(default=())

    @property
    def usd_per_hour(self) -> float | None:
        return None if self.node_usd_per_hour is None else self.node_usd_per_hour * self.replicas

    @property
    def known(self) -> bool:
        return self.node_usd_per_hour is not None

    def headline(self) -> str:
        """The price in a few words, for reports: '$1.00/hour (estimate)' or 'unknown'."""
        total = self.usd_per_hour
        return "unknown" if total is None else f"${total:,.2f}/hour (estimate)"

    def describe(self) -> str:
        short = ACCELERATORS[self.accelerator_type].short
        what = (f"{self.replicas} x {self.machine_type} ({self.accelerator_count} x {short})"
                f"{' Spot' if self.spot else ''} in {self.region}")
        total = self.usd_per_hour
        if total is None:
            return f"unknown for {what}: {'; '.join(self.caveats)}"
        per_node = f" (${self.node_usd_per_hour:,.2f} per node)" if self.replicas > 1 else ""
        more = "".join(f"; {caveat}" for caveat in self.caveats[1:])
        return (f"about ${total:,.2f}/hour for {what}{per_node}, "
                f"${total * 24:,.2f}/day; an estimate from assumed rates "
                f"(prices.py){more}: check {PRICING_PAGE}")


def estimate(machine_type: str, *, replicas: int = 1, spot: bool = False,
             region: str = PRICED_REGION) -> PriceEstimate:
    """The hourly price of `replicas` nodes of `machine_type`: its vCPUs and memory at its
    family's rates plus its GPUs, times the Spot share when `spot`."""
    checks.text("machine_type", machine_type)
    if machine_type not in MACHINE_TYPES:
        raise ConfigError(f"unknown machine type {machine_type!r}; choose one of "
                          f"{choices(MACHINE_TYPES)}")
    checks.whole("replicas", replicas, low=1, high=MAX_REPLICAS)
    checks.flag("spot", spot)
    checks.text("region", region)
    accelerator, count = MACHINE_TYPES[machine_type]
    caveats = ["every rate is an assumption (prices.py names each one's basis)"]
    if region != PRICED_REGION:
        caveats.append(f"priced with {PRICED_REGION} rates: the table has none for {region}")
    vcpus, memory_gb = MACHINE_SHAPES[machine_type]
    vcpu_rate, memory_rate = FAMILY_RATES[machine_type.split("-")[0]]
    gpu_rate = GPU_RATES.get(accelerator)
    share = SPOT_SHARES.get(accelerator) if spot else Rate(usd_per_hour=1.0, source="on-demand",
                                                           assumption=False)
    node: float | None = None
    if gpu_rate is None:
        caveats = [f"no price found for {accelerator} (prices.GPU_RATES)"]
    elif share is None:
        caveats = [f"no Spot price found for {accelerator} (prices.SPOT_SHARES)"]
    else:
        node = (vcpus * vcpu_rate.usd_per_hour + memory_gb * memory_rate.usd_per_hour
                + count * gpu_rate.usd_per_hour) * share.usd_per_hour
    return PriceEstimate(machine_type=machine_type, accelerator_type=accelerator,
                         accelerator_count=count, replicas=replicas, spot=spot, region=region,
                         node_usd_per_hour=node, caveats=tuple(caveats))


def check_max_hourly_cost(value: float | None) -> float | None:
    """MAX_HOURLY_COST: None or 0 means no limit; otherwise USD per hour above 0."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)
                         and value == 0):
        return None
    checks.number("max_hourly_cost", value, low=0, high=1_000_000, low_open=True,
                  why="US dollars per hour, or 0 for no limit")
    return float(value)
