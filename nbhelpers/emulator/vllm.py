"""A stand-in for the vLLM serving container: checks its arguments as vLLM's argument parser
and engine would, then serves the container's routes over HTTP with the rehearsal engine."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbhelpers.emulator import rehearsal
from nbhelpers.emulator.httpbase import JsonHandler, Server

VLLM_MODULES = ("vllm.entrypoints.api_server", "vllm.entrypoints.openai.api_server")
PROG = "api_server.py"
_FLAG = object()  # takes no value
_OPTIONAL_BOOL = object()  # `--flag` or `--flag=true/false`
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")

# The server options of vLLM 0.6-0.9 that the Model Garden notebooks use, with their types.
OPTIONS: dict[str, Any] = {
    "host": str, "port": int, "model": str, "tokenizer": str, "revision": str,
    "served-model-name": str, "download-dir": str, "load-format": str, "seed": int,
    "tensor-parallel-size": int, "pipeline-parallel-size": int, "swap-space": float,
    "gpu-memory-utilization": float, "max-model-len": int, "max-num-seqs": int,
    "max-num-batched-tokens": int, "max-seq-len-to-capture": int, "block-size": int,
    "kv-cache-dtype": KV_CACHE_DTYPES, "dtype": DTYPES, "quantization": str,
    "cpu-offload-gb": float, "max-logprobs": int, "limit-mm-per-prompt": str,
    "chat-template": str, "tool-call-parser": str, "distributed-executor-backend": str,
    "max-loras": int, "max-lora-rank": int, "max-cpu-loras": int,
    "enforce-eager": _FLAG, "disable-log-stats": _FLAG, "disable-log-requests": _FLAG,
    "enable-prefix-caching": _FLAG, "enable-lora": _FLAG, "trust-remote-code": _FLAG,
    "enable-auto-tool-choice": _FLAG, "disable-custom-all-reduce": _FLAG,
    "enable-chunked-prefill": _OPTIONAL_BOOL,
}  # fmt: skip

# Attention heads and trained context of the models the catalog knows (config.json).
KNOWN_HEADS = {"1B": 32, "3B": 24, "8B": 32, "11B": 32, "70B": 64, "90B": 64, "405B": 128}
MAX_POSITIONS = 131072


class StartupFailure(Exception):
    """The container exits during start-up; `lines` are what it printed."""

    def __init__(self, lines: list[str]):
        super().__init__(lines[-1] if lines else "container exited")
        self.lines = lines


def _log(level: str, where: str, message: str) -> str:
    return f"{level} {time.strftime('%m-%d %H:%M:%S')} [{where}] {message}"


def parse_args(args: list[str]) -> dict[str, Any]:
    """Parses container args the way vLLM's argparse does; raises StartupFailure."""
    usage = f"usage: {PROG} [-h] [--host HOST] [--port PORT] [--model MODEL] ..."
    if len(args) < 3 or args[:2] != ["python", "-m"]:
        _fail([f"container args must start with 'python -m {VLLM_MODULES[0]}', "
               f"got {args[:3]!r}"])
    if args[2] not in VLLM_MODULES:
        _fail([f"/usr/bin/python: No module named {args[2]}"])
    values: dict[str, Any] = {}
    unknown: list[str] = []
    rest = list(args[3:])
    while rest:
        token = rest.pop(0)
        if not token.startswith("--"):
            unknown.append(token)
            continue
        name, has_value, value = token[2:].partition("=")
        name = name.replace("_", "-")
        kind = OPTIONS.get(name)
        if kind is None:
            unknown.append(token)
            continue
        if kind is _FLAG:
            if has_value:
                return _fail([usage, f"{PROG}: error: argument --{name}: ignored explicit "
                              f"argument {value!r}"])
            values[name] = True
            continue
        if kind is _OPTIONAL_BOOL:
            values[name] = (value.lower() in ("1", "true", "yes")) if has_value else True
            continue
        if not has_value:
            if not rest or rest[0].startswith("--"):
                return _fail([usage, f"{PROG}: error: argument --{name}: expected one argument"])
            value = rest.pop(0)
        if isinstance(kind, tuple):
            if value not in kind:
                allowed = ", ".join(repr(c) for c in kind)
                return _fail([usage, f"{PROG}: error: argument --{name}: invalid choice: "
                              f"{value!r} (choose from {allowed})"])
            values[name] = value
            continue
        try:
            values[name] = kind(value)
        except ValueError:
            return _fail([usage, f"{PROG}: error: argument --{name}: invalid "
                          f"{kind.__name__} value: {value!r}"])
    if unknown:
        return _fail([usage, f"{PROG}: error: unrecognized arguments: {' '.join(unknown)}"])
    return values


def _fail(lines: list[str]) -> Any:
    raise StartupFailure(lines)


def _model_size(model: str) -> str | None:
    for size in KNOWN_HEADS:
        if f"-{size}" in model or f"_{size}" in model:
            return size
    return None


def check_engine(values: dict[str, Any], env: dict[str, str], gpu_count: int,
                 gated_ids: set[str]) -> list[str]:
    """The engine's own start-up checks; returns the log lines of a good start."""
    model = values.get("model") or "facebook/opt-125m"
    lines = [
        _log("INFO", "api_server.py", "vLLM API server (nbhelpers emulator stand-in)"),
        _log("INFO", "api_server.py", f"args: {values}"),
    ]

    def fail(message: str) -> None:
        raise StartupFailure([*lines, "Traceback (most recent call last):",
                              '  File "vllm/engine/arg_utils.py", in create_engine_config',
                              message])

    util = values.get("gpu-memory-utilization", 0.9)
    if not 0 < util <= 1:
        fail(f"ValueError: GPU memory utilization must be less than 1.0. Got {util}.")
    tp = values.get("tensor-parallel-size", 1)
    size = _model_size(model) or _model_size(env.get("MODEL_ID", ""))
    heads = KNOWN_HEADS.get(size or "")
    if heads and heads % tp:
        fail(f"ValueError: Total number of attention heads ({heads}) must be divisible by "
             f"tensor parallel size ({tp}).")
    if tp * values.get("pipeline-parallel-size", 1) > gpu_count:
        fail("ValueError: The number of required GPUs exceeds the total number of available "
             f"GPUs in the placement group. (needed {tp}, machine has {gpu_count})")
    max_len = values.get("max-model-len")
    if max_len is not None and max_len > MAX_POSITIONS:
        fail(f"ValueError: User-specified max_model_len ({max_len}) is greater than the derived "
             f"max_model_len (max_position_embeddings={MAX_POSITIONS} or model_max_length=None "
             "in model's config.json). This may lead to incorrect model outputs or CUDA errors.")
    if model.startswith("gs://"):
        lines.append(_log("INFO", "launcher", f"Downloading model weights from {model}"))
    elif model in gated_ids and not env.get("HF_TOKEN"):
        fail("huggingface_hub.errors.GatedRepoError: 401 Client Error. "
             f"Cannot access gated repo for url https://huggingface.co/{model}/resolve/main/"
             f"config.json. Access to model {model} is restricted. You must have access to it "
             "and be authenticated to access it. Please log in.")
    lines += [
        _log("INFO", "emulator", "no weights are loaded: replies come from the rehearsal engine"),
        _log("INFO", "api_server.py", "Started server process"),
        _log("INFO", "api_server.py", f"Uvicorn running on http://0.0.0.0:{values.get('port')}"),
    ]
    return lines


def check_memory(lines: list[str], values: dict[str, Any], model_name: str,
                 machine: dict[str, Any], image_uri: str) -> list[str]:
    """vLLM's memory profiling, predicted by the planner from the container's own arguments:
    returns the start-up lines with the memory report, or raises StartupFailure with vLLM's
    wording of the failure (CUDA out of memory, no cache blocks, max seq len too long)."""
    from nbhelpers import planner
    from nbhelpers.container import DEFAULT_TAG, RELEASES
    from nbhelpers.errors import ConfigError

    accelerator = machine.get("acceleratorType", "")
    version = RELEASES.get(image_uri.rpartition(":")[2], RELEASES[DEFAULT_TAG])
    try:
        plan = planner.plan(
            model_name, accelerator=accelerator,
            accelerator_count=int(values.get("tensor-parallel-size", 1)),
            dtype="fp8" if values.get("quantization") == "fp8" else "bfloat16",
            gpu_memory_utilization=float(values.get("gpu-memory-utilization", 0.9)),
            max_model_len=int(values.get("max-model-len", MAX_POSITIONS)),
            max_num_seqs=int(values.get("max-num-seqs", 256)),
            max_num_batched_tokens=values.get("max-num-batched-tokens"),
            enforce_eager=bool(values.get("enforce-eager")), vllm_version=version,
            kv_cache_dtype=values.get("kv-cache-dtype", "auto"),
            swap_space_gib=float(values.get("swap-space", 4)), suggest_fixes=False)
    except ConfigError as err:  # what the planner cannot size starts as before
        return [*lines, _log("WARNING", "emulator", f"memory not simulated: {err}")]
    where = "worker.py" if plan.engine == "V0" else "gpu_worker.py"
    report = [_log("INFO", where, line) for line in plan.log_lines()]
    if not plan.ok:
        raise StartupFailure([*lines[:2], *report, "Traceback (most recent call last):",
                              *plan.failure_lines(),
                              _log("ERROR", "launcher", "Model server exited unexpectedly")])
    return [*lines[:2], *report, *lines[2:]]


SEEDED_CAUSES = {"oom", "max_model_len", "hf_auth", "quota", "unsupported_model"}


class QuotaFailure(Exception):
    """The platform refuses to schedule the replica: no serving quota for its GPUs."""

    def __init__(self, machine: dict[str, Any]):
        gpu = str(machine.get("acceleratorType", "")).lower()
        super().__init__(
            "The following quota metrics exceed quota limits: aiplatform.googleapis.com/"
            f"custom_model_serving_{gpu}_gpus")


def seeded_failure_lines(cause: str, model: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    """A start-up that fails the way vLLM (0.6-0.9, V0 engine) reports it, for rehearsing the
    debugging notebook. Numbers follow the deployment's own settings."""
    from nbhelpers.catalog import ACCELERATORS

    values = parse_args(list(model["containerSpec"].get("args") or []))
    name = values.get("model", "model")
    gib = ACCELERATORS.get(machine.get("acceleratorType", ""))
    capacity = gib.memory_gib if gib else 22.05
    start = [_log("INFO", "api_server.py", f"vLLM API server (nbhelpers emulator stand-in), "
                  f"seeded failure: {cause}"),
             _log("INFO", "model_runner.py", f"Starting to load model {name}...")]
    if cause == "oom":
        return [*start, _log("INFO", "enc_dec_model_runner.py", "Starting profile run for "
                             "multi-modal models."),
                "Traceback (most recent call last):",
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 6.20 GiB. GPU 0 "
                f"has a total capacity of {capacity:.2f} GiB of which 1.41 GiB is free. "
                "Including non-PyTorch memory, this process has "
                f"{capacity - 1.41:.2f} GiB memory in use.",
                _log("ERROR", "launcher", "Model server exited unexpectedly")]
    if cause == "max_model_len":
        wanted = int(values.get("max-model-len", 4096))
        room = max(16, int(wanted * 0.55) // 16 * 16)
        return [*start, _log("INFO", "worker.py", f"# GPU blocks: {room // 16}, "
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
    return [*start, "Traceback (most recent call last):",
            "ValueError: Model architectures ['MllamaForConditionalGeneration'] are not "
            "supported for now. Supported architectures: ['LlamaForCausalLM', ...]"]


@dataclass
class Replica:
    """One serving replica: a real HTTP server on 127.0.0.1 with the container's routes.

    Like vLLM it runs at most `max_num_seqs` requests at once (others wait their turn), each
    taking `service_seconds`, so load behaves like a real server's.
    """

    model_id: str  # what the container serves (the --model value)
    predict_route: str
    health_route: str
    chat_template: bool
    images_per_prompt: int = 0  # vLLM's limit_mm_per_prompt for images (mllama: 1)
    max_num_seqs: int = 256
    service_seconds: float = 0.0
    on_log: Callable[[list[str]], None] | None = None  # lines for the endpoint's log
    _server: Server | None = None
    _slot_free_at: list[float] = field(default_factory=list)
    _schedule_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Replica:
        replica = self

        class Handler(_ReplicaHandler):
            owner = replica

        self._slot_free_at = [0.0] * self.max_num_seqs
        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def schedule(self, sequences: int) -> float:
        """Books `sequences` of the max_num_seqs slots for one service time, first come first
        served, and returns when they start (a monotonic time). The schedule is computed, not
        left to thread wake-ups, so the replica serves exactly max_num_seqs / service time
        sequences per second at most, like a GPU batch, whatever Python's threads do."""
        wanted = max(1, min(sequences, self.max_num_seqs))
        with self._schedule_lock:
            slots = sorted(self._slot_free_at)
            start = max(time.monotonic(), slots[wanted - 1])
            self._slot_free_at = [start + self.service_seconds] * wanted + slots[wanted:]
        return start

    # --- the container's protocol -------------------------------------------------------
    def predict(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            return 400, {"error": "request must be {\"instances\": [...]} with one or more"}
        predictions = []
        for instance in instances:
            if not isinstance(instance, dict) or not isinstance(instance.get("prompt"), str):
                return 400, {"error": "each instance needs a string 'prompt'"}
            extra = ""
            if instance.get("dynamic-lora"):
                extra = f" with LoRA adapter {instance['dynamic-lora']}"
            image = (instance.get("multi_modal_data") or {}).get("image")
            if image is not None:
                if self.images_per_prompt < 1:
                    return 400, {"error": f"{self.model_id} is not a multimodal model: "
                                 "multi_modal_data is not accepted"}
                described = describe_image(image)
                if described.startswith("error:"):
                    return 400, {"error": described[len("error:"):].strip()}
                extra += f" and {described}"
            generation = rehearsal.generate(
                self.model_id, instance["prompt"], max_tokens=_int(instance.get("max_tokens")),
                temperature=instance.get("temperature"), top_p=instance.get("top_p"),
                top_k=_int(instance.get("top_k")), extra=extra,
            )
            if instance.get("raw_response"):
                predictions.append(generation.text)
            else:
                predictions.append(f"Prompt:\n{instance['prompt']}\nOutput:\n{generation.text}")
        return 200, {"predictions": predictions}

    def chat(self, body: dict[str, Any]) -> tuple[int, Any]:
        def error(message: str) -> tuple[int, Any]:
            return 400, {"object": "error", "type": "BadRequestError", "code": 400,
                         "message": message}

        if not self.chat_template:
            message = ("As of transformers v4.44, default chat template is no longer allowed, "
                       "so you must provide a chat template if the tokenizer does not define "
                       "one.")
            if self.on_log:  # vLLM logs the refusal too, so the debugging notebook can see it
                self.on_log([_log("ERROR", "serving_chat.py:222", "Error in preprocessing "
                                  "prompt inputs"), f"ValueError: {message}"])
            return error(message)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error("messages must be a non-empty list")
        images = [part["image_url"].get("url", "") for m in messages if isinstance(m, dict)
                  and isinstance(m.get("content"), list) for part in m["content"]
                  if isinstance(part, dict) and part.get("type") == "image_url"]
        if len(images) > self.images_per_prompt:
            return error(f"At most {self.images_per_prompt} image(s) may be provided in one "
                         "request.")
        described = [describe_image(url) for url in images]
        failed = [d for d in described if d.startswith("error:")]
        if failed:
            return error(failed[0][len("error:"):].strip())
        prompt = "\n".join(_message_text(m) for m in messages)
        roles = ",".join(str(m.get("role")) for m in messages if isinstance(m, dict))
        extra = f" in {len(messages)} messages ({roles})" + "".join(
            f" with {d}" for d in described)
        generation = rehearsal.generate(
            self.model_id, prompt,
            max_tokens=_int(body.get("max_tokens", body.get("max_completion_tokens"))),
            temperature=body.get("temperature"), top_p=body.get("top_p"),
            top_k=_int(body.get("top_k")), extra=extra,
        )
        return 200, generation


def describe_image(reference: str) -> str:
    """"an image of WxH pixels" for a data URL or a loopback URL; "error: ..." when unreadable.
    Other URLs are not fetched: the rehearsal has no network, and says so."""
    import base64
    import io
    import urllib.request

    try:
        from PIL import Image

        if reference.startswith("data:"):
            data = base64.b64decode(reference.partition(",")[2])
        elif reference.startswith(("http://127.0.0.1", "http://localhost")):
            with urllib.request.urlopen(reference, timeout=10) as response:
                data = response.read()
        elif reference.startswith(("http://", "https://")):
            return "an image URL the rehearsal cannot fetch (no network)"
        else:
            return f"error: Invalid image URL {reference[:60]!r}: expected http(s) or data URL"
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        return f"an image of {width}x{height} pixels"
    except Exception as err:  # vLLM answers 400 for images it cannot decode
        return f"error: Failed to load image: {err}"


def _int(value: Any) -> int | None:
    return None if value is None else int(value)  # JSON numbers arrive as floats


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


class _ReplicaHandler(JsonHandler):
    owner: Replica

    def do_GET(self) -> None:
        if self.path == self.owner.health_route:
            self.send_json(200, {})
        else:
            self.send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as exc:
            return self.send_json(400, {"error": f"invalid JSON: {exc}"})
        if self.path not in (self.owner.predict_route, "/v1/chat/completions"):
            return self.send_json(404, {"detail": "Not Found"})
        instances = body.get("instances") if self.path == self.owner.predict_route else None
        if self.path == self.owner.predict_route:
            status, result = self.owner.predict(body)
        else:
            status, result = self.owner.chat(body)
        if status != 200:  # refused before it reaches the engine: no slot, no service time
            return self.send_json(status, result)
        start = self.owner.schedule(len(instances) if isinstance(instances, list) else 1)
        if body.get("stream") and self.path != self.owner.predict_route:
            return self._stream(result, body, start)
        if self.path != self.owner.predict_route:
            result = _completion(result, self.owner.model_id)
        time.sleep(max(0.0, start + self.owner.service_seconds - time.monotonic()))
        self.send_json(200, result)

    def _stream(self, generation: rehearsal.Generation, body: dict[str, Any],
                start: float) -> None:
        time.sleep(max(0.0, start - time.monotonic()))  # wait for a free sequence slot
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        model = self.owner.model_id

        def event(delta: dict[str, Any], finish: str | None, usage: Any = None) -> None:
            payload = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                       "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                payload["usage"] = usage
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        event({"role": "assistant", "content": ""}, None)
        pause = self.owner.service_seconds / max(1, len(generation.tokens))
        for i, token in enumerate(generation.tokens):
            time.sleep(pause)
            event({"content": (" " if i else "") + token}, None)
        usage = _usage(generation) if (body.get("stream_options") or {}).get(
            "include_usage") else None
        event({}, generation.finish_reason, usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def _usage(generation: rehearsal.Generation) -> dict[str, int]:
    completion = len(generation.tokens)
    return {"prompt_tokens": generation.prompt_tokens, "completion_tokens": completion,
            "total_tokens": generation.prompt_tokens + completion}


def _completion(generation: rehearsal.Generation, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": generation.finish_reason,
                     "message": {"role": "assistant", "content": generation.text}}],
        "usage": _usage(generation),
    }
