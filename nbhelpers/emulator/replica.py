"""One serving replica of the vLLM container: a real HTTP server on 127.0.0.1 with the
container's health, predict and chat routes, answered by the rehearsal engine (with vLLM's own
400s for what it refuses), or with engine "vllm" by the real vLLM server on a tiny model
(`vllm_engine`), started here for the replica and stopped with it."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbhelpers.emulator import container_protocol, rehearsal
from nbhelpers.emulator.httpbase import JsonHandler, Server

# A stream's tokens after the first leave in writes at most this far apart, each still its own
# server-sent event, never before it is due. One write per token costs the emulator's one
# process a wake-up and a write per token of every sequence (10,000 a second at 16 sequences,
# 32 tokens, 50 ms), which a 2-core machine cannot carry; vLLM's --stream-interval trades the
# same host overhead for smoothness. 5 ms is finer than anything a notebook shows.
STREAM_WRITE_WINDOW_S = 0.005

if TYPE_CHECKING:
    from nbhelpers.emulator.vllm_engine import VllmServer


def log_line(level: str, where: str, message: str) -> str:
    """A line in vLLM's log format."""
    return f"{level} {time.strftime('%m-%d %H:%M:%S')} [{where}] {message}"


@dataclass(kw_only=True)
class Replica:
    """One serving replica: a real HTTP server on 127.0.0.1 with the container's routes.

    Like vLLM it runs at most `max_num_seqs` requests at once (others wait their turn), each
    taking `service_seconds`, so load behaves like a real server's.
    """

    model_id: str  # what the container serves (the --model value)
    predict_route: str
    health_route: str
    chat_template: bool  # the tokenizer's own (Instruct) or one the container supplies
    images_per_prompt: int = 0  # vLLM's limit_mm_per_prompt for images (mllama: 1)
    max_num_seqs: int = 256
    service_seconds: float = 0.0
    on_log: Callable[[list[str]], None] | None = None  # lines for the endpoint's log
    engine: str = "rehearsal"  # or "vllm": the real vLLM server on a tiny model (text only)
    container_args: list[str] = field(default_factory=list)  # for the real engine
    image_release: str = ""  # the image's vLLM release, which the arguments are written for
    _server: Server | None = None
    real_engine_failed: bool = False  # the vLLM server could not start: health answers 503
    requests_received: int = 0  # calls to its predict and chat routes (tests see the spread)
    _real: VllmServer | None = None
    _slot_free_at: list[float] = field(default_factory=list)
    _schedule_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    def start(self) -> Replica:
        replica = self

        class Handler(_ReplicaHandler):
            owner = replica

        self._slot_free_at = [0.0] * self.max_num_seqs
        if self.engine == "vllm":
            self._start_real_engine()
        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _start_real_engine(self) -> None:
        """Starts the real vLLM server (blocking until it serves or fails; its lines go to the
        endpoint's log). A server that fails leaves `_real` unset and the health route
        answering 503, so the deployment fails as a real container's would."""
        from nbhelpers.emulator.vllm_engine import VllmServer

        if self.images_per_prompt > 0:  # Llama 3.2 Vision
            if self.on_log:
                self.on_log([log_line(
                    "WARNING", "nbhelpers.vllm_engine", "vision is not run for real: vLLM "
                    "dropped Llama 3.2 Vision (mllama) after 0.10, and the installed CPU build "
                    "is newer; this replica answers from the rehearsal engine")])
            return
        # A base model with a supplied template chats through the tiny Instruct model, whose
        # template stands in for a file in the image (an inline one is passed on to vLLM).
        self._real = VllmServer.launch(
            container_args=self.container_args, image_release=self.image_release,
            served_name=self.model_id, instruct=self.chat_template, log=self.on_log)
        self.real_engine_failed = self._real is None

    def stop(self) -> None:
        if self._real is not None:
            self._real.stop()
            self._real = None
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
        try:
            instances = container_protocol.instances_of(body)
        except container_protocol.BadPredictBody as refused:
            return 400, {"error": str(refused)}
        predictions = []
        for instance in instances:
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
            predictions.append(container_protocol.prediction(instance, generation.text))
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
                self.on_log([log_line("ERROR", "serving_chat.py:222", "Error in preprocessing "
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
        return 200, rehearsal.structured(generation, body)


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
            if self.owner.real_engine_failed:
                return self.send_json(503, {"error": "the vLLM server exited"})
            real = self.owner._real
            self.send_json(200 if real is None or real.healthy() else 503, {})
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
        with self.owner._schedule_lock:
            self.owner.requests_received += 1
        real = self.owner._real
        if real is not None:  # the real engine: vLLM schedules and answers
            if self.path == self.owner.predict_route:
                return self.send_json(*real.predict(body))
            return real.forward_chat(self, body)
        result: Any
        if self.path == self.owner.predict_route:
            status, result = self.owner.predict(body)
            instances = body.get("instances")
            sequences = len(instances) if isinstance(instances, list) else 1
        else:
            status, result = self.owner.chat(body)
            sequences = 1
        if status != 200:  # refused before it reaches the engine: no slot, no service time
            return self.send_json(status, result)
        start = self.owner.schedule(sequences)
        if isinstance(result, rehearsal.Generation):  # a chat completion
            if body.get("stream"):
                return self._stream(result, body, start)
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

        pending: list[bytes] = []  # events due but not yet written

        def event(delta: dict[str, Any], finish: str | None, usage: Any = None) -> None:
            payload = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                       "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                payload["usage"] = usage
            pending.append(f"data: {json.dumps(payload)}\n\n".encode())

        def send_due(at: float) -> None:
            """Writes the events waiting, in one write, then waits until `at`, a time of the
            schedule fixed at the start (a late wake-up does not push back later tokens)."""
            if pending:
                self.wfile.write(b"".join(pending))
                self.wfile.flush()
                pending.clear()
            time.sleep(max(0.0, at - time.monotonic()))

        begin = time.monotonic()
        event({"role": "assistant", "content": ""}, None)
        if generation.tool_calls or generation.json_text is not None:  # one structured piece
            send_due(begin + self.owner.service_seconds)
            if generation.tool_calls:
                event({"tool_calls": [{"index": i, **call} for i, call in
                                      enumerate(generation.tool_calls)]}, None)
            else:
                event({"content": generation.text}, None)
            event({}, generation.finish_reason)
        else:
            pause = self.owner.service_seconds / max(1, len(generation.tokens))
            written = -1  # the write window last waited for
            for i, token in enumerate(generation.tokens):
                # The first token leaves when due; later ones in writes of at most
                # STREAM_WRITE_WINDOW_S, each as its own event (see the constant).
                window = math.ceil(i * pause / STREAM_WRITE_WINDOW_S - 1e-9)
                if window != written:
                    send_due(begin + pause + window * STREAM_WRITE_WINDOW_S)
                    written = window
                event({"content": (" " if i else "") + token}, None)
            usage = _usage(generation) if (body.get("stream_options") or {}).get(
                "include_usage") else None
            event({}, generation.finish_reason, usage)
        pending.append(b"data: [DONE]\n\n")
        send_due(0.0)
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
                     "message": {"role": "assistant",
                                 "content": None if generation.tool_calls else generation.text,
                                 **({"tool_calls": generation.tool_calls}
                                    if generation.tool_calls else {})}}],
        "usage": _usage(generation),
    }
