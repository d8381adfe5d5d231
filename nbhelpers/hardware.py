"""GPUs and the machine types that carry them: fixed by Compute Engine, read by the catalog,
the planner, the quota check and the emulator's Vertex AI."""

from __future__ import annotations

from dataclasses import dataclass

from nbhelpers.errors import ConfigError, choices


@dataclass(frozen=True, kw_only=True)
class Accelerator:
    vertex_type: str  # Vertex AI AcceleratorType name
    short: str
    memory_gib: float  # total device memory as torch reports it
    quota_family: str  # X in CustomModelServing{X}PerProjectPerRegion


ACCELERATORS: dict[str, Accelerator] = {
    a.vertex_type: a
    for a in (
        Accelerator(vertex_type="NVIDIA_L4", short="L4", memory_gib=22.05,
                    quota_family="L4GPUs"),
        Accelerator(vertex_type="NVIDIA_TESLA_A100", short="A100 40GB", memory_gib=39.39,
                    quota_family="A100GPUs"),
        Accelerator(vertex_type="NVIDIA_A100_80GB", short="A100 80GB", memory_gib=79.15,
                    quota_family="A10080GBGPUs"),
        Accelerator(vertex_type="NVIDIA_H100_80GB", short="H100 80GB", memory_gib=79.11,
                    quota_family="H100GPUs"),
        Accelerator(vertex_type="NVIDIA_H200_141GB", short="H200", memory_gib=139.81,
                    quota_family="H200GPUs"),
    )
}

# Machine types with attached GPUs: (accelerator type, GPUs per machine). Fixed by Compute Engine.
MACHINE_TYPES: dict[str, tuple[str, int]] = {
    "g2-standard-8": ("NVIDIA_L4", 1),
    "g2-standard-12": ("NVIDIA_L4", 1),
    "g2-standard-16": ("NVIDIA_L4", 1),
    "g2-standard-24": ("NVIDIA_L4", 2),
    "g2-standard-32": ("NVIDIA_L4", 1),
    "g2-standard-48": ("NVIDIA_L4", 4),
    "g2-standard-96": ("NVIDIA_L4", 8),
    "a2-highgpu-1g": ("NVIDIA_TESLA_A100", 1),
    "a2-highgpu-2g": ("NVIDIA_TESLA_A100", 2),
    "a2-highgpu-4g": ("NVIDIA_TESLA_A100", 4),
    "a2-highgpu-8g": ("NVIDIA_TESLA_A100", 8),
    "a2-ultragpu-1g": ("NVIDIA_A100_80GB", 1),
    "a2-ultragpu-2g": ("NVIDIA_A100_80GB", 2),
    "a2-ultragpu-4g": ("NVIDIA_A100_80GB", 4),
    "a2-ultragpu-8g": ("NVIDIA_A100_80GB", 8),
    "a3-highgpu-1g": ("NVIDIA_H100_80GB", 1),
    "a3-highgpu-2g": ("NVIDIA_H100_80GB", 2),
    "a3-highgpu-4g": ("NVIDIA_H100_80GB", 4),
    "a3-highgpu-8g": ("NVIDIA_H100_80GB", 8),
    "a3-ultragpu-8g": ("NVIDIA_H200_141GB", 8),
}


# vCPUs and memory (GB) of each machine type: fixed by Compute Engine (its machine-family pages);
# the price of a prediction node is its vCPUs and memory plus its GPUs (`prices`).
MACHINE_SHAPES: dict[str, tuple[int, int]] = {
    **{f"g2-standard-{n}": (n, 4 * n) for n in (8, 12, 16, 24, 32, 48, 96)},
    **{f"a2-highgpu-{k}g": (12 * k, 85 * k) for k in (1, 2, 4, 8)},
    **{f"a2-ultragpu-{k}g": (12 * k, 170 * k) for k in (1, 2, 4, 8)},
    **{f"a3-highgpu-{k}g": (26 * k, 234 * k) for k in (1, 2, 4, 8)},
    "a3-ultragpu-8g": (224, 2952),
}


@dataclass(frozen=True)
class Hardware:
    machine_type: str
    accelerator_type: str
    accelerator_count: int

    def __post_init__(self) -> None:
        expected = MACHINE_TYPES.get(self.machine_type)
        if expected is None:
            raise ConfigError(
                f"unknown machine type {self.machine_type!r}; choose one of "
                f"{choices(MACHINE_TYPES)}"
            )
        if expected != (self.accelerator_type, self.accelerator_count):
            raise ConfigError(
                f"machine type {self.machine_type!r} comes with {expected[1]} x {expected[0]}, "
                f"not {self.accelerator_count} x {self.accelerator_type}"
            )

    @classmethod
    def for_machine(cls, machine_type: str) -> Hardware:
        if machine_type not in MACHINE_TYPES:
            raise ConfigError(
                f"unknown machine type {machine_type!r}; choose one of {choices(MACHINE_TYPES)}"
            )
        accelerator, count = MACHINE_TYPES[machine_type]
        return cls(machine_type, accelerator, count)

    def describe(self) -> str:
        short = ACCELERATORS[self.accelerator_type].short
        return f"{self.machine_type} ({self.accelerator_count} x {short})"


def resolve_accelerator(name: str) -> str:
    """A Vertex accelerator type from its name or short name ("L4", "H100 80GB", "h200");
    a bare "A100" is the 40 GB one, as in Vertex's own type names."""
    if name in ACCELERATORS:
        return name
    aliases = {}
    for vertex_type, acc in ACCELERATORS.items():
        aliases[vertex_type.lower()] = aliases[acc.short.lower()] = vertex_type
        aliases.setdefault(acc.short.split()[0].lower(), vertex_type)  # "a100" -> the first
    found = aliases.get(name.strip().lower().replace(" ", "_")) or aliases.get(
        name.strip().lower())
    if found is None:
        raise ConfigError(f"unknown accelerator {name!r}; choose one of "
                          f"{choices(ACCELERATORS)} (or L4, A100, A100 80GB, H100, H200)")
    return found


def machine_for(accelerator: str | None, count: int) -> str:
    """The first machine type with `count` GPUs of this type ('' if none)."""
    machines = [m for m, (acc, n) in MACHINE_TYPES.items() if acc == accelerator and n == count]
    return machines[0] if machines else ""
