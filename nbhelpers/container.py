"""The vLLM serving container of a deployment: server arguments and environment (its images and
releases are in `releases`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nbhelpers import catalog, checks, vllm_args
from nbhelpers.catalog import ModelSpec
from nbhelpers.errors import ConfigError, choices
from nbhelpers.releases import (
    DEFAULT_TAG,
    DEPLOYMENT_TIMEOUT_S,
    GOOGLE_FLAGS_SINCE,
    HEALTH_ROUTE,
    PORT,
    PREDICT_ROUTE,
    SHARED_MEMORY_MB,
    image_uri,
    release_of,
    tool_call_parser,
    tool_calling_tags,
    vllm_release,
)

# Upper bounds of the settings: far above what any of the tutorial's GPUs can hold, low enough
# that the memory planner's arithmetic and the container's command line stay exact.
MAX_NUM_SEQS = 65_536
MAX_LORAS = 1_024
MAX_SWAP_SPACE_GIB = 1_024.0  # CPU memory per GPU; the largest machine here has 1,872 GiB
MAX_EXTRA_ARGS = 200
# The adapter ranks vLLM 0.6-0.9 accepts for --max-lora-rank (LoRAConfig.possible_max_ranks);
# its default is 16.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
MAX_CHAT_TEMPLATE_CHARS = 100_000  # a Jinja template, inline; Llama 3.1's is about 5,000


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
    max_lora_rank: int = 16  # vLLM's default; one of LORA_RANKS
    # A Jinja chat template given inline to --chat-template, replacing the tokenizer's own:
    # the fix for a model whose tokenizer has none or a broken one. Empty: the tokenizer's.
    chat_template: str = ""
    enable_prefix_caching: bool = False
    # Tool calling with tool_choice "auto" (--enable-auto-tool-choice and the image's Llama
    # tool-call parser); a named or "required" tool_choice works without it.
    tool_calling: bool = False
    kv_cache_dtype: str = "auto"
    swap_space_gib: int = 16
    extra_args: tuple[str, ...] = field(default=())

    @property
    def quantization(self) -> str:
        """The --quantization value among extra_args ('' if none), in either spelling."""
        args = ["python", "-m", vllm_args.API_SERVER, *self.extra_args]
        return str(vllm_args.parse(args, strict=False).get("quantization", ""))

    def check(self) -> None:
        """Types and ranges of what is set (None: the catalog's value), with no model needed.
        A setting of 0 or False where a number is asked for is refused, not read as unset."""
        if self.max_model_len is not None:
            longest = max(m.max_positions for m in catalog.models())
            checks.whole("max_model_len", self.max_model_len, low=1, high=longest,
                         why="at most the model's trained context, or None for the catalog's")
        if self.max_num_seqs is not None:
            checks.whole("max_num_seqs", self.max_num_seqs, low=1, high=MAX_NUM_SEQS,
                         why="or None for the catalog's")
        if self.gpu_memory_utilization is not None:
            checks.number("gpu_memory_utilization", self.gpu_memory_utilization, low=0, high=1,
                          low_open=True, why="the share of each GPU's memory vLLM may use")
        if self.enforce_eager is not None:
            checks.flag("enforce_eager", self.enforce_eager)
        if self.tensor_parallel_size is not None:
            checks.whole("tensor_parallel_size", self.tensor_parallel_size, low=1, high=8,
                         why="GPUs of one machine, or None for all of them")
        checks.flag("enable_lora", self.enable_lora)
        checks.whole("max_loras", self.max_loras, low=1, high=MAX_LORAS)
        checks.whole("max_cpu_loras", self.max_cpu_loras, low=self.max_loras, high=MAX_LORAS,
                     why="vLLM needs at least max_loras")
        checks.one_of("max_lora_rank", self.max_lora_rank, LORA_RANKS)
        checks.text("chat_template", self.chat_template, empty_ok=True,
                    max_chars=MAX_CHAT_TEMPLATE_CHARS)
        checks.flag("enable_prefix_caching", self.enable_prefix_caching)
        checks.flag("tool_calling", self.tool_calling)
        checks.one_of("kv_cache_dtype", self.kv_cache_dtype, vllm_args.KV_CACHE_DTYPES)
        checks.number("swap_space_gib", self.swap_space_gib, low=0, high=MAX_SWAP_SPACE_GIB,
                      why="GiB of CPU memory per GPU")
        extra = checks.sequence("extra_args", self.extra_args, low=0, high=MAX_EXTRA_ARGS,
                                of="command-line arguments")
        for index, arg in enumerate(extra):
            checks.text(f"extra_args[{index}]", arg)

    def resolved(self, model: ModelSpec, accelerator_count: int) -> VllmOptions:
        """Fills unset values from the catalog and checks ranges, before any cloud call."""
        self.check()
        util = self.gpu_memory_utilization or model.gpu_memory_utilization
        max_model_len = self.max_model_len or model.max_model_len
        max_num_seqs = self.max_num_seqs or model.max_num_seqs
        tp = self.tensor_parallel_size or accelerator_count
        if max_model_len > model.max_positions:
            raise ConfigError(
                f"max_model_len {max_model_len} exceeds the {model.max_positions} positions "
                f"{model.name} was trained for (max_model_len must be from 1 to "
                f"{model.max_positions:,})"
            )
        if self.tool_calling and not model.instruct and not self.chat_template:
            raise ConfigError(f"tool_calling=True needs a chat template, and {model.name} is a "
                              "base model without one: choose its Instruct model, or give "
                              "chat_template= a template that renders `tools`")
        if self.tool_calling and self.chat_template and "tools" not in self.chat_template:
            raise ConfigError("tool_calling=True with a chat_template that never reads `tools`: "
                              "the model would not see the tool definitions. Give a template "
                              "that renders them (Llama 3.1's does), or leave chat_template "
                              "empty for an Instruct model's own")
        if tp > accelerator_count:
            raise ConfigError(
                f"tensor_parallel_size {tp} needs that many GPUs, but the machine has "
                f"{accelerator_count} (tensor_parallel_size must be from 1 to "
                f"{accelerator_count})"
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
                 f"--max-lora-rank={options.max_lora_rank}",
                 f"--max-cpu-loras={options.max_cpu_loras}"]
    if options.chat_template:
        args.append(f"--chat-template={options.chat_template}")
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
    if weights_uri and hf_token:
        raise ConfigError("weights_uri and hf_token together: weights from Cloud Storage need no "
                          "Hugging Face token, so none is stored in the Model; leave hf_token "
                          "out")
    env = {"MODEL_ID": model.hf_id, "DEPLOY_SOURCE": "notebook"}
    if hf_token:
        env["HF_TOKEN"] = hf_token
    args = server_args(weights_uri or model.hf_id, options)
    if options.tool_calling:
        args += tool_calling_args(tag)
    return ContainerSpec(image_uri=image_uri(tag), args=args, env=env)


def tool_calling_args(tag: str) -> list[str]:
    """The arguments that let the image's vLLM call tools with tool_choice "auto": what Google's
    notebooks pass (their `vertex-llama-3` parser) where the image takes it, else upstream's
    `llama3_json`; refused for images with no Llama tool parser (vLLM 0.6.2)."""
    parser = tool_call_parser(tag)
    if parser is None:
        raise ConfigError(f"tool_calling=True: container tag {tag} (vLLM {vllm_release(tag)}) "
                          "has no Llama 3.1/3.2 tool-call parser (upstream vLLM added "
                          "llama3_json in 0.6.3). Choose one of "
                          f"{choices(tool_calling_tags())}")
    return ["--enable-auto-tool-choice", f"--tool-call-parser={parser}"]


def check_server_args(args: list[str], image: str, *, gpus: int) -> dict[str, Any]:
    """Parses the container's arguments as the image's vLLM does and refuses, with vLLM's own
    argparse lines, what would make the server exit at start-up: an unknown flag, a bad value,
    more GPUs than the machine has. Returns the parsed values."""
    image_release = release_of(image)
    release = vllm_release(image)
    google = image_release.google_flags
    try:
        values = vllm_args.parse(args, google_flags=google)
    except vllm_args.ArgsError as err:
        said = "\n  ".join(err.lines)
        takes = [*vllm_args.OPTIONS, *(f for f in vllm_args.GOOGLE_OPTIONS if f in google)]
        raise ConfigError(
            f"vLLM {release} ({image.rpartition(':')[2]}) would refuse these container arguments "
            f"and exit before serving:\n  {said}\nFix or remove that argument in "
            "VllmOptions.extra_args; the options it takes are "
            + ", ".join(f"--{option}" for option in takes) + _google_hint(err, google)) from None
    target = values.get("host-prefix-kv-cache-utilization-target")
    if target is not None and not 0 <= target < 1:
        raise ConfigError(f"--host-prefix-kv-cache-utilization-target={target}: Google's "
                          "host-memory prefix cache takes a share of idle host memory from 0 "
                          "(off) to below 1")
    needed = values.get("tensor-parallel-size", 1) * values.get("pipeline-parallel-size", 1)
    if needed > gpus:
        raise ConfigError(
            f"the container arguments ask vLLM {release} for {needed} GPUs (tensor x pipeline "
            f"parallel size) but the machine has {gpus}: each must be from 1 to {gpus}")
    return values


def _google_hint(err: vllm_args.ArgsError, google: frozenset[str]) -> str:
    """Which images take a Google-only flag that this image refused."""
    said = " ".join(err.lines)
    for flag, since in GOOGLE_FLAGS_SINCE.items():
        shown = flag.replace("tool-call-parser=", "")
        if flag not in google and shown in said:
            return (f". --{flag} is a Google-only flag of the standard Model Garden images "
                    f"tagged {since} or later; choose such a CONTAINER_TAG")
    return ""


def chat_template_of(args: list[str]) -> str:
    """The chat template a container's arguments pass with --chat-template ('' if none): inline
    Jinja, or a file in the image. vLLM applies it in place of the tokenizer's own, so a base
    model chats with it; the client's chat rules and the emulator's replicas read it here."""
    return str(vllm_args.parse(list(args), strict=False).get("chat-template") or "")


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
