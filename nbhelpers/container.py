"""The vLLM serving container of a deployment: server arguments and environment (its images and
releases are in `releases`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nbhelpers import vllm_args
from nbhelpers.catalog import ModelSpec
from nbhelpers.errors import ConfigError, choices
from nbhelpers.releases import (
    DEFAULT_TAG,
    DEPLOYMENT_TIMEOUT_S,
    HEALTH_ROUTE,
    PORT,
    PREDICT_ROUTE,
    SHARED_MEMORY_MB,
    image_uri,
    vllm_release,
)


@dataclass(frozen=True, kw_only=True)
class VllmOptions:
    """vLLM server settings; None means the model's catalog default."""

    max_model_len: int | None = None
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    enforce_eager: bool | None = None
    tensor_parallel_size: int | None = None
    enable_lora: bool = False
    max_loras: int = 1
    max_cpu_loras: int = 8
    enable_prefix_caching: bool = False
    kv_cache_dtype: str = "auto"
    swap_space_gib: int = 16
    extra_args: tuple[str, ...] = field(default=())

    @property
    def quantization(self) -> str:
        """The --quantization value among extra_args ('' if none), in either spelling."""
        args = ["python", "-m", vllm_args.API_SERVER, *self.extra_args]
        return str(vllm_args.parse(args, strict=False).get("quantization", ""))

    def resolved(self, model: ModelSpec, accelerator_count: int) -> VllmOptions:
        """Fills unset values from the catalog and checks ranges, before any cloud call."""
        util = self.gpu_memory_utilization or model.gpu_memory_utilization
        max_model_len = self.max_model_len or model.max_model_len
        max_num_seqs = self.max_num_seqs or model.max_num_seqs
        tp = self.tensor_parallel_size or accelerator_count
        if not 0 < util <= 1:
            raise ConfigError(f"gpu_memory_utilization {util} must be in (0, 1]")
        for name, value in (("max_model_len", max_model_len), ("max_num_seqs", max_num_seqs),
                            ("tensor_parallel_size", tp)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive whole number, got {value!r}")
        if max_model_len > model.max_positions:
            raise ConfigError(
                f"max_model_len {max_model_len} exceeds the {model.max_positions} positions "
                f"{model.name} was trained for"
            )
        if tp > accelerator_count:
            raise ConfigError(
                f"tensor_parallel_size {tp} needs that many GPUs, but the machine has "
                f"{accelerator_count}"
            )
        if self.kv_cache_dtype not in vllm_args.KV_CACHE_DTYPES:
            raise ConfigError(
                f"unknown kv_cache_dtype {self.kv_cache_dtype!r}; choose one of "
                f"{choices(vllm_args.KV_CACHE_DTYPES)}"
            )
        return replace(
            self, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
            gpu_memory_utilization=util, tensor_parallel_size=tp,
            enforce_eager=model.enforce_eager if self.enforce_eager is None else self.enforce_eager,
            extra_args=tuple(self.extra_args),
        )


def server_args(model_source: str, options: VllmOptions) -> list[str]:
    """The container args: the vLLM module goes here, not in `command`, so the image's
    launcher (which copies gs:// weights before starting the server) still runs."""
    args = [
        "python", "-m", vllm_args.API_SERVER,
        "--host=0.0.0.0",
        f"--port={PORT}",
        f"--model={model_source}",
        f"--tensor-parallel-size={options.tensor_parallel_size}",
        f"--swap-space={options.swap_space_gib}",
        f"--gpu-memory-utilization={options.gpu_memory_utilization}",
        f"--max-model-len={options.max_model_len}",
        f"--max-num-seqs={options.max_num_seqs}",
        f"--kv-cache-dtype={options.kv_cache_dtype}",
        "--disable-log-stats",
    ]  # fmt: skip
    if options.enforce_eager:
        args.append("--enforce-eager")
    if options.enable_prefix_caching:
        args.append("--enable-prefix-caching")
    if options.enable_lora:
        args += ["--enable-lora", f"--max-loras={options.max_loras}",
                 f"--max-cpu-loras={options.max_cpu_loras}"]
    args += list(options.extra_args)
    return args


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    image_uri: str
    args: list[str]
    env: dict[str, str]
    port: int = PORT
    predict_route: str = PREDICT_ROUTE
    health_route: str = HEALTH_ROUTE
    shared_memory_mb: int = SHARED_MEMORY_MB
    deployment_timeout_s: int = DEPLOYMENT_TIMEOUT_S

    def public_env(self) -> dict[str, str]:
        """The environment with secrets hidden, for display."""
        return {k: ("<hidden>" if k == "HF_TOKEN" else v) for k, v in self.env.items()}

    def __repr__(self) -> str:  # never print a token
        return (
            f"ContainerSpec(image_uri={self.image_uri!r}, args={self.args!r}, "
            f"env={self.public_env()!r})"
        )


def container_spec(
    model: ModelSpec,
    options: VllmOptions,
    *,
    weights_uri: str | None = None,
    hf_token: str | None = None,
    tag: str = DEFAULT_TAG,
) -> ContainerSpec:
    """Builds the serving container for a model whose options are already resolved."""
    env = {"MODEL_ID": model.hf_id, "DEPLOY_SOURCE": "notebook"}
    if hf_token:
        env["HF_TOKEN"] = hf_token
    return ContainerSpec(image_uri=image_uri(tag),
                         args=server_args(weights_uri or model.hf_id, options), env=env)


def memory_inputs(model: ModelSpec, args: list[str], image: str) -> dict[str, Any]:
    """The memory planner's inputs for a container, read from its own arguments as the server
    reads them, with vLLM's defaults for what they leave out. `deploy` plans from this before
    creating anything, and the emulator's start-up model from the deployed container's."""
    values = vllm_args.parse(args, strict=False)
    return {
        "model": model.name,
        "accelerator_count": int(values.get("tensor-parallel-size", 1)),
        "dtype": "fp8" if values.get("quantization") == "fp8" else "bfloat16",
        "gpu_memory_utilization": float(values.get("gpu-memory-utilization", 0.9)),
        "max_model_len": int(values.get("max-model-len", model.max_positions)),
        "max_num_seqs": int(values.get("max-num-seqs", 256)),
        "max_num_batched_tokens": values.get("max-num-batched-tokens"),
        "enforce_eager": bool(values.get("enforce-eager")),
        "vllm_version": vllm_release(image),
        "kv_cache_dtype": str(values.get("kv-cache-dtype", "auto")),
        "swap_space_gib": float(values.get("swap-space", vllm_args.DEFAULT_SWAP_SPACE_GIB)),
    }
