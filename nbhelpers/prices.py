"""What a deployment costs per hour: the price of a prediction node of each machine type (its
vCPUs and memory plus its GPUs) and the estimate of a plan. A fact table: imports nothing of ours
but the hardware table, the value rules and errors.

Source and date. Vertex AI bills a deployed model per node-hour at the rates of the "Prediction
and explanation" tables of https://cloud.google.com/vertex-ai/pricing#prediction-prices. Those
tables could NOT be read with this project's research tools on 2026-11-26 (the stored copies of
the page stop before them). The figures below are Compute Engine's list prices of the same machine
types, GPUs included, on demand and on Spot VMs, from the Cloud Billing catalog as the open
dataset CATALOG transcribes it (generated 2025-03-06; read 2026-11-26). That Vertex AI charges a
prediction node what Compute Engine charges for the VM is an ASSUMPTION (Vertex AI adds its own
management charge, whose size no readable source gives): treat an estimate as a floor, and check
the pricing page before relying on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbhelpers import checks
from nbhelpers.errors import ConfigError, choices
from nbhelpers.hardware import ACCELERATORS, MACHINE_TYPES

PRICING_PAGE = "https://cloud.google.com/vertex-ai/pricing#prediction-prices"
CATALOG = ("Cyclenerd/google-cloud-pricing-cost-calculator pricing.yml (Compute Engine prices from "
           "the Cloud Billing catalog, generated 2025-03-06), compute.instance.<machine>.cost."
           "us-central1")
READ_ON = "2026-11-26"
PRICED_REGION = "us-central1"
# Regions whose price equals us-central1's for every machine type read from CATALOG.
SAME_PRICE_REGIONS = ("us-central1", "us-east1", "us-west1")
MAX_REPLICAS = 1_000  # far above any quota: keeps the arithmetic of a typo finite
ASSUMPTION = (f"assumption: Vertex AI's prediction node priced at Compute Engine's VM price "
              f"(the Vertex AI table at {PRICING_PAGE} was not readable on {READ_ON})")


@dataclass(frozen=True, kw_only=True)
class NodeRate:
    """USD per hour of one node, on demand and on Spot VMs, and where the figures come from."""

    on_demand: float
    spot: float
    source: str
    assumption: bool = True  # always, until Vertex AI's own table is read


def _read(on_demand: float, spot: float) -> NodeRate:
    return NodeRate(on_demand=on_demand, spot=spot, source=f"{CATALOG}: hour, hour_spot")


def _times(rate: NodeRate, factor: int, of: str) -> NodeRate:
    """A machine type that is `factor` of another (vCPUs, memory and GPUs alike): CATALOG's
    prices are linear in them wherever both were read (a2-highgpu 1g-8g, a3-highgpu 1g/2g/8g)."""
    return NodeRate(on_demand=rate.on_demand * factor, spot=rate.spot * factor,
                    source=f"{factor} x {of} ({CATALOG}); linear, as every size read there is")


# G2: CATALOG's g2-standard prices are an L4 plus a rate per vCPU (with its 4 GB): fitted to
# g2-standard-12 and -16, and equal to CATALOG's own g2-standard-24 and -32 to the last digit.
_L4, _G2_VCPU = (0.560040239, 0.2231), (0.036698004, 0.014208)


def _g2(vcpus: int, gpus: int) -> NodeRate:
    return NodeRate(on_demand=gpus * _L4[0] + vcpus * _G2_VCPU[0],
                    spot=gpus * _L4[1] + vcpus * _G2_VCPU[1],
                    source=f"{gpus} L4 at ${_L4[0]}/h (Spot ${_L4[1]}) + {vcpus} vCPUs with 4 GB "
                           f"each at ${_G2_VCPU[0]}/h (Spot ${_G2_VCPU[1]}), fitted to "
                           f"{CATALOG} g2-standard-12/16 and equal to its -24 and -32")


_A2_1G, _A2U_2G = _read(3.673385, 1.293355), _read(10.1375957808219, 4.05493671232877)
_A3_1G = _read(11.0612499878219, 4.42446871232877)
NODE_RATES: dict[str, NodeRate | None] = {
    **{f"g2-standard-{n}": _g2(n, MACHINE_TYPES[f"g2-standard-{n}"][1])
       for n in (8, 12, 16, 24, 32, 48, 96)},
    "g2-standard-16": _read(1.147208303, 0.450428),
    "g2-standard-24": _read(2.000832574, 0.787192),
    "g2-standard-32": _read(1.734376367, 0.677756),
    "a2-highgpu-1g": _A2_1G,
    "a2-highgpu-2g": _read(7.34677, 2.58671),
    "a2-highgpu-4g": _read(14.69354, 5.17342),
    "a2-highgpu-8g": _read(29.38708, 10.34684),
    "a2-ultragpu-1g": NodeRate(on_demand=_A2U_2G.on_demand / 2, spot=_A2U_2G.spot / 2,
                               source=f"half of a2-ultragpu-2g ({CATALOG}); linear, as -2g and "
                                      "-4g are there"),
    "a2-ultragpu-2g": _A2U_2G,
    "a2-ultragpu-4g": _read(20.2751915616438, 8.10987342465753),
    "a2-ultragpu-8g": _times(_A2U_2G, 4, "a2-ultragpu-2g"),
    "a3-highgpu-1g": _A3_1G,
    "a3-highgpu-2g": _read(22.1224999756438, 8.84893742465754),
    "a3-highgpu-4g": _times(_A3_1G, 4, "a3-highgpu-1g"),
    "a3-highgpu-8g": _read(88.4899999025753, 35.3957496986301),
    "a3-ultragpu-8g": None,  # H200: not in CATALOG's version read; no figure found
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
                f"${total * 24:,.2f}/day; Compute Engine's price for these VMs, Vertex AI's "
                f"may be higher (prices.py){more}: check {PRICING_PAGE}")


def estimate(machine_type: str, *, replicas: int = 1, spot: bool = False,
             region: str = PRICED_REGION) -> PriceEstimate:
    """The hourly price of `replicas` nodes of `machine_type` (its vCPUs, memory and GPUs), on
    demand or on Spot VMs."""
    checks.text("machine_type", machine_type)
    if machine_type not in MACHINE_TYPES:
        raise ConfigError(f"unknown machine type {machine_type!r}; choose one of "
                          f"{choices(MACHINE_TYPES)}")
    checks.whole("replicas", replicas, low=1, high=MAX_REPLICAS)
    checks.flag("spot", spot)
    checks.text("region", region)
    accelerator, count = MACHINE_TYPES[machine_type]
    rate = NODE_RATES.get(machine_type)
    caveats = [ASSUMPTION]
    if region not in SAME_PRICE_REGIONS:
        caveats.append(f"priced with {PRICED_REGION} rates: the table has none for {region}")
    node: float | None = None
    if rate is None:
        caveats = [f"no price found for {machine_type} ({count} x {accelerator}; "
                   "prices.NODE_RATES)"]
    else:
        node = rate.spot if spot else rate.on_demand
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
