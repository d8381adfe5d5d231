"""The vLLM start-up model: what the serving container does between "deploy" and "healthy".

It parses the container's arguments as vLLM's argparse does, runs the engine's own checks, and
asks the client's memory planner whether the model fits on the machine's GPUs, so a replica
starts, or fails with the lines vLLM prints. This is the one emulator module that reads the
client's catalog, container reading and planner: those are the facts a real container has too
(its model's config.json, its arguments, its GPUs).
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from nbhelpers import catalog, planner, releases, vllm_args
from nbhelpers.container import chat_template_of, memory_inputs
from nbhelpers.emulator.quotas import SERVING_METRICS
from nbhelpers.emulator.replica import Replica, log_line
from nbhelpers.errors import ConfigError
from nbhelpers.hardware import ACCELERATORS
from nbhelpers.releases import release_of

# Failures the emulator can seed for the next deployment (POST /emulator/fail-next-deploy):
# the container's own start-up failures, and the platform's refusals to schedule it at all.
SEEDED_CAUSES = ("oom", "max_model_len", "hf_auth", "licence_pending", "quota",
                 "region_unavailable", "unsupported_model", "container_exited", "permission")
PLATFORM_CAUSES = ("quota", "region_unavailable")
_UNKNOWN_GPU_GIB = 22.05  # seeded OOM text for a GPU the hardware table lacks: an L4's


class StartupFailure(Exception):
    """The container exits during start-up; `lines` are what it printed."""

    def __init__(self, lines: list[str]):
        super().__init__(lines[-1] if lines else "container exited")
        self.lines = lines


class QuotaFailure(Exception):
    """The platform refuses to schedule the replica: no serving quota for its GPUs, or (cause
    region_unavailable) none of them free in the region, in the words Google uses for both."""

    def __init__(self, machine: dict[str, Any], *, cause: str = "quota", region: str = ""):
        gpu = str(machine.get("acceleratorType", ""))
        if cause == "region_unavailable":
            super().__init__(
                f"The region {region or 'of this endpoint'} does not have enough resources "
                "available to fulfill the request. Please try again later. (requested: "
                f"{machine.get('acceleratorCount', 0)} x {gpu} on "
                f"{machine.get('machineType', '')})")
            return
        metric = SERVING_METRICS.get(gpu, f"custom_model_serving_{gpu.lower()}_gpus")
        super().__init__(
            f"The following quota metrics exceed quota limits: aiplatform.googleapis.com/{metric}")


def parse_args(args: list[str], image: str = "") -> dict[str, Any]:
    """The container's arguments as the image's vLLM reads them (with the Google-only flags
    its release takes); raises StartupFailure with argparse's lines for what vLLM refuses."""
    try:
        return vllm_args.parse(args, google_flags=release_of(image).google_flags)
    except vllm_args.ArgsError as err:
        raise StartupFailure(err.lines) from None


def _catalog_entry(model_id: str) -> catalog.ModelSpec | None:
    try:  # the catalog's ids and the older Meta ids Google's notebooks deploy under
        return catalog.get_model(model_id) if "/" in model_id else None
    except ConfigError:
        return None


def check_engine(values: dict[str, Any], env: dict[str, str], *, gpu_count: int,
                 model: catalog.ModelSpec | None, engine: str = "rehearsal",
                 chat_template: str = "") -> list[str]:
    """The engine's own start-up checks; returns the log lines of a good start (with the
    supplied `chat_template`, logged as vLLM's API server logs it)."""
    served = values.get("model") or "facebook/opt-125m"
    lines = [
        log_line("INFO", "api_server.py", "vLLM API server (nbhelpers emulator stand-in)"),
        log_line("INFO", "api_server.py", f"args: {values}"),
    ]

    def fail(message: str) -> None:
        raise StartupFailure([*lines, "Traceback (most recent call last):",
                              '  File "vllm/engine/arg_utils.py", in create_engine_config',
                              message])

    util = values.get("gpu-memory-utilization", 0.9)
    if not 0 < util <= 1:
        fail(f"ValueError: GPU memory utilization must be less than 1.0. Got {util}.")
    tp = values.get("tensor-parallel-size", 1)
    config = model.config if model else {}
    heads = config.get("text_config", config).get("num_attention_heads")
    if heads and heads % tp:
        fail(f"ValueError: Total number of attention heads ({heads}) must be divisible by "
             f"tensor parallel size ({tp}).")
    if tp * values.get("pipeline-parallel-size", 1) > gpu_count:
        fail("ValueError: The number of required GPUs exceeds the total number of available "
             f"GPUs in the placement group. (needed {tp}, machine has {gpu_count})")
    max_len = values.get("max-model-len")
    if model is not None and max_len is not None and max_len > model.max_positions:
        fail(f"ValueError: User-specified max_model_len ({max_len}) is greater than the derived "
             f"max_model_len (max_position_embeddings={model.max_positions} or "
             "model_max_length=None in model's config.json). This may lead to incorrect model "
             "outputs or CUDA errors.")
    if served.startswith("gs://"):
        lines.append(log_line("INFO", "launcher", f"Downloading model weights from {served}"))
    elif (served in {m.hf_id for m in catalog.MODELS.values() if m.gated}
          or served in catalog.ALIASES) and not env.get("HF_TOKEN"):
        fail("huggingface_hub.errors.GatedRepoError: 401 Client Error. "
             f"Cannot access gated repo for url https://huggingface.co/{served}/resolve/main/"
             f"config.json. Access to model {served} is restricted. You must have access to it "
             "and be authenticated to access it. Please log in.")
    if chat_template:  # vLLM prints the template on the lines after its message
        lines += [log_line("INFO", "api_server.py", "Using supplied chat template:"),
                  *chat_template.splitlines()]
    lines += [
        log_line("INFO", "emulator",
                 "no weights are loaded: replies come from the rehearsal engine"
                 if engine == "rehearsal" else
                 "replies come from the real vLLM engine on a tiny random-weight model of this "
                 "architecture, not from the deployed weights"),
        log_line("INFO", "api_server.py", "Started server process"),
        log_line("INFO", "api_server.py",
                 f"Uvicorn running on http://0.0.0.0:{values.get('port')}"),
    ]
    return lines


def check_memory(lines: list[str], *, model: catalog.ModelSpec | None, args: list[str],
                 machine: dict[str, Any], image: str) -> list[str]:
    """vLLM's memory profiling, predicted by the planner from the container's own arguments:
    returns the start-up lines with the memory report, or raises StartupFailure with vLLM's
    wording of the failure (CUDA out of memory, no cache blocks, max seq len too long)."""
    if model is None:
        return [*lines, log_line("WARNING", "emulator", "memory not simulated: the model is "
                                 "not in the nbhelpers catalog, so its size is unknown")]
    try:
        plan = planner.plan_memory(accelerator=machine.get("acceleratorType", ""),
                                   suggest_fixes=False, **memory_inputs(model, args, image))
    except ConfigError as err:  # what the planner cannot size starts as before
        return [*lines, log_line("WARNING", "emulator", f"memory not simulated: {err}")]
    where = "worker.py" if plan.engine == "V0" else "gpu_worker.py"
    report = [log_line("INFO", where, line) for line in plan.log_lines()]
    if not plan.ok:
        raise StartupFailure([*lines[:2], *report, "Traceback (most recent call last):",
                              *plan.failure_lines(),
                              log_line("ERROR", "launcher", "Model server exited unexpectedly")])
    return [*lines[:2], *report, *lines[2:]]


def _image_limit(values: dict[str, Any], vision: bool) -> int:
    """vLLM's --limit-mm-per-prompt (`image=N` or JSON); Llama 3.2 Vision defaults to 1."""
    text = str(values.get("limit-mm-per-prompt") or "")
    match = re.search(r'image"?\s*[=:]\s*(\d+)', text)
    return int(match.group(1)) if match else (1 if vision else 0)


def _healthy(url: str, attempts: int = 20) -> bool:
    """Vertex AI sends traffic only once the container's health route answers 200."""
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def start_replica(container: dict[str, Any], machine: dict[str, Any], *,
                  service_seconds: float, engine: str = "rehearsal",
                  on_log: Callable[[list[str]], None]) -> tuple[Replica, list[str]]:
    """Starts a replica of an uploaded model's container (its REST `containerSpec`) on a
    machine (`machineSpec`): returns it with its start-up log lines, or raises StartupFailure
    with the lines of a failed start."""
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    args = list(container.get("args") or container.get("command") or [])
    values = parse_args(args, container.get("imageUri", ""))
    model_id = env.get("MODEL_ID") or values.get("model", "")
    model = _catalog_entry(model_id)
    vision = model is not None and model.modality == "vision"  # the real engine serves text only
    # vLLM applies a supplied template in place of the tokenizer's: a base model chats with one.
    template = chat_template_of(args)
    lines = check_engine(values, env, gpu_count=machine.get("acceleratorCount", 0), model=model,
                         engine="rehearsal" if vision else engine, chat_template=template)
    lines = check_memory(lines, model=model, args=args, machine=machine,
                         image=container.get("imageUri", ""))
    replica = Replica(model_id=values.get("model", model_id),
                      predict_route=container.get("predictRoute", "/predict"),
                      health_route=container.get("healthRoute", "/health"),
                      chat_template=(model.has_chat_template if model else True)
                      or bool(template),
                      images_per_prompt=_image_limit(values, model is not None
                                                     and model.modality == "vision"),
                      max_num_seqs=values.get("max-num-seqs", 256),
                      service_seconds=service_seconds, on_log=on_log, engine=engine,
                      container_args=args,
                      image_release=releases.vllm_release(container.get("imageUri", "")))
    replica.start()
    if not _healthy(replica.url + replica.health_route):
        replica.stop()
        raise StartupFailure([*lines, f"health check {replica.health_route} never passed"])
    return replica, lines


def seeded_failure_lines(cause: str, container: dict[str, Any],
                         machine: dict[str, Any]) -> list[str]:
    """A start-up that fails the way vLLM (0.6-0.9, V0 engine) reports it, for rehearsing the
    debugging notebook. Numbers follow the deployment's own settings."""
    values = vllm_args.parse(list(container.get("args") or []), strict=False)
    name = values.get("model", "model")
    gpu = ACCELERATORS.get(machine.get("acceleratorType", ""))
    capacity = gpu.memory_gib if gpu else _UNKNOWN_GPU_GIB
    start = [log_line("INFO", "api_server.py", f"vLLM API server (nbhelpers emulator "
                      f"stand-in), seeded failure: {cause}"),
             log_line("INFO", "model_runner.py", f"Starting to load model {name}...")]
    if cause == "oom":
        return [*start, log_line("INFO", "enc_dec_model_runner.py", "Starting profile run for "
                                 "multi-modal models."),
                "Traceback (most recent call last):",
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 6.20 GiB. GPU 0 "
                f"has a total capacity of {capacity:.2f} GiB of which 1.41 GiB is free. "
                "Including non-PyTorch memory, this process has "
                f"{capacity - 1.41:.2f} GiB memory in use.",
                log_line("ERROR", "launcher", "Model server exited unexpectedly")]
    if cause == "max_model_len":
        wanted = int(values.get("max-model-len", 4096))
        room = max(16, int(wanted * 0.55) // 16 * 16)
        return [*start, log_line("INFO", "worker.py", f"# GPU blocks: {room // 16}, "
                                 "# CPU blocks: 2048"),
                "Traceback (most recent call last):",
                f"ValueError: The model's max seq len ({wanted}) is larger than the maximum "
                f"number of tokens that can be stored in KV cache ({room}). Try increasing "
                "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the "
                "engine."]
    if cause == "hf_auth":
        return [*start, "Traceback (most recent call last):",
                "huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated "
                f"repo for url https://huggingface.co/{name}/resolve/main/config.json. Access "
                f"to model {name} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."]
    exited = log_line("ERROR", "launcher", "Model server exited unexpectedly")
    if cause == "licence_pending":  # Hugging Face's 403 while Meta has not approved the request
        return [*start, "Traceback (most recent call last):",
                "huggingface_hub.errors.GatedRepoError: 403 Client Error. Cannot access gated "
                f"repo for url https://huggingface.co/{name}/resolve/main/config.json. Your "
                f"request to access model {name} is awaiting a review from the repo authors.",
                exited]
    if cause == "permission":  # the launcher's copy of gs:// weights, refused by IAM
        bucket = name[5:].split("/")[0] if name.startswith("gs://") else "the weights bucket"
        return [start[0], log_line("INFO", "launcher", f"Downloading model weights from {name}"),
                "AccessDeniedException: 403 service-000000000000@gcp-sa-aiplatform.iam."
                "gserviceaccount.com does not have storage.objects.list access to the Google "
                f"Cloud Storage bucket. Permission 'storage.objects.list' denied on resource "
                f"(or it may not exist). ({bucket})", exited]
    if cause == "container_exited":
        if name.startswith("gs://"):  # a `command` override skipped the launcher's download
            return [*start, "Traceback (most recent call last):",
                    f"OSError: Incorrect path_or_model_id: '{name}'. Please provide either the "
                    "path to a local folder or the repo_id of a model on the Hub.",
                    "huggingface_hub.errors.HFValidationError: Repo id must be in the form "
                    f"'repo_name' or 'namespace/repo_name': '{name}'. Use `repo_type` argument "
                    "if needed.", exited]
        return [*start, exited]  # exited with little in the logs
    return [*start, "Traceback (most recent call last):",
            "ValueError: Model architectures ['MllamaForConditionalGeneration'] are not "
            "supported for now. Supported architectures: ['LlamaForCausalLM', ...]"]
