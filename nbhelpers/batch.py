"""Many prompts at once: bounded concurrency, retries of 429/503 with backoff and jitter, input
order kept, a progress bar, and per-request latency and time to first token (measured only where
the endpoint streams: NaN, "not measured", on a shared endpoint)."""

from __future__ import annotations

import math
import random
import re
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

RETRYABLE = (429, 503)
MAX_ATTEMPTS = 20  # of one request, retries included
MAX_DELAY_S = 600.0  # between two attempts
SAMPLING = {"max_tokens": 128, "temperature": 1.0, "top_p": 1.0, "top_k": 1,
            "raw_response": False}  # predict()'s defaults


@dataclass(kw_only=True)
class Result:
    index: int
    prompt: Any
    output: Any = ""
    latency_s: float = 0.0
    ttft_s: float = 0.0
    attempts: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(kw_only=True)
class BatchReport:
    results: list[Result]
    wall_s: float
    concurrency: int
    retries: int = field(default=0)

    def _ok(self) -> list[Result]:
        return [r for r in self.results if r.ok]

    @staticmethod
    def _pct(values: list[float], q: float) -> float:
        values = [v for v in values if not math.isnan(v)]  # NaN: not measured
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def latency(self, q: float) -> float:
        return self._pct([r.latency_s for r in self._ok()], q)

    def ttft(self, q: float) -> float:
        return self._pct([r.ttft_s for r in self._ok()], q)

    @property
    def throughput(self) -> float:
        return len(self._ok()) / self.wall_s if self.wall_s else float("nan")

    @property
    def outputs(self) -> list[str]:
        return [r.output for r in self.results]

    def summary(self) -> str:
        ok = self._ok()
        mean = statistics.fmean(r.latency_s for r in ok) if ok else float("nan")
        ttft = (f"time to first token p50 {self.ttft(0.5):.3f}s p95 {self.ttft(0.95):.3f}s"
                if not math.isnan(self.ttft(0.5)) else
                "time to first token not measured (the endpoint does not stream)")
        return (f"{len(ok)}/{len(self.results)} succeeded in {self.wall_s:.2f}s "
                f"({self.throughput:.1f} req/s, concurrency {self.concurrency}, "
                f"{self.retries} retries); latency p50 {self.latency(0.5):.3f}s "
                f"p95 {self.latency(0.95):.3f}s mean {mean:.3f}s; {ttft}")


# aiplatform's Endpoint.predict on a dedicated endpoint raises a plain ValueError(f"Failed to
# make prediction request. Status code:{status}, response: {text}.") (models.py, since 1.92.0).
_SDK_DEDICATED_ERROR = re.compile(r"Failed to make prediction request\. Status code:\s*(\d{3})")


def status_of(error: BaseException) -> int | None:
    """The HTTP status of an SDK error: google.api_core (`code`), openai (`status_code`), or
    the aiplatform SDK's ValueError for a dedicated endpoint (the status in its message)."""
    for attribute in ("status_code", "code"):
        value = getattr(error, attribute, None)
        if isinstance(value, int):
            return value
    if isinstance(error, ValueError):
        found = _SDK_DEDICATED_ERROR.search(str(error))
        if found:
            return int(found.group(1))
    return None


def run_many(
    items: list[Any],
    send: Callable[[Any], tuple[Any, float | None]],
    *,
    concurrency: int = 8,
    max_attempts: int = 5,
    base_delay_s: float = 0.5,
    max_delay_s: float = 30.0,
    progress: bool = True,
    description: str = "requests",
) -> BatchReport:
    """Calls `send(item) -> (output, seconds to first token or None)` for every item, at most
    `concurrency` at once. Results come back in input order; failures are recorded, not raised."""
    from tqdm.auto import tqdm

    from nbhelpers import checks, request_rules

    checks.sequence("items", items, low=0, high=request_rules.MAX_PROMPTS, of="items")
    request_rules.check_concurrency(concurrency)
    checks.whole("max_attempts", max_attempts, low=1, high=MAX_ATTEMPTS)
    checks.number("base_delay_s", base_delay_s, low=0, high=MAX_DELAY_S)
    checks.number("max_delay_s", max_delay_s, low=0, high=MAX_DELAY_S)
    checks.flag("progress", progress)
    results = [Result(index=i, prompt=item) for i, item in enumerate(items)]
    retries = 0
    lock = threading.Lock()
    bar = tqdm(total=len(items), desc=description, disable=not progress)

    def work(result: Result) -> None:
        nonlocal retries
        for attempt in range(1, max_attempts + 1):
            result.attempts = attempt
            started = time.perf_counter()
            try:
                output, ttft = send(result.prompt)
            except Exception as err:
                status = status_of(err)
                if status in RETRYABLE and attempt < max_attempts:
                    with lock:
                        retries += 1
                    delay = min(max_delay_s, base_delay_s * 2 ** (attempt - 1))
                    time.sleep(delay * random.uniform(0.5, 1.5))  # jitter spreads the herd
                    continue
                result.error = f"{type(err).__name__}: {err}"
                break
            result.latency_s = time.perf_counter() - started
            result.ttft_s = result.latency_s if ttft is None else ttft
            result.output = output
            break
        with lock:
            bar.update(1)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(work, results))
    bar.close()
    return BatchReport(results=results, wall_s=time.perf_counter() - started,
                       concurrency=concurrency, retries=retries)


def predict_many(deployment: Any, prompts: list[str], *, concurrency: int = 8,
                 instances_per_request: int = 1, progress: bool = True,
                 **sampling: Any) -> BatchReport:
    """Prompts through the predict route. With `instances_per_request` > 1, several prompts
    travel in one request (fewer round trips; the server still runs each as its own sequence);
    every prompt gets its own Result, with its request's latency."""
    from nbhelpers import checks, request_rules
    from nbhelpers.errors import ConfigError
    from nbhelpers.images import check_payload
    from nbhelpers.predict_http import PredictSession, is_dedicated
    from nbhelpers.prediction import build_instance, parse_output

    model = request_rules.deployment_model(deployment)
    prompts = request_rules.check_prompts("prompts", prompts)
    request_rules.check_concurrency(concurrency)
    checks.whole("instances_per_request", instances_per_request, low=1,
                 high=request_rules.MAX_PROMPTS, why="prompts sent in one request")
    checks.flag("progress", progress)
    unknown = sorted(set(sampling) - set(SAMPLING))
    if unknown:
        raise ConfigError(f"unknown sampling setting {unknown[0]!r} for predict_many; choose "
                          f"from {', '.join(SAMPLING)}")
    options = {**SAMPLING, **sampling}
    size = instances_per_request
    groups = [prompts[i:i + size] for i in range(0, len(prompts), size)]
    bodies = [[build_instance(p, model=model, **options) for p in group] for group in groups]
    dedicated = is_dedicated(deployment)
    for instances in bodies:  # refuse before sending anything
        check_payload({"instances": instances}, dedicated=dedicated)

    with PredictSession(deployment.endpoint(), pool_size=concurrency) as session:
        def send(instances: list[dict[str, Any]]) -> tuple[list[str], None]:
            return [parse_output(str(p)) for p in session.predict(instances)], None

        grouped = run_many(bodies, send, concurrency=concurrency, progress=progress,
                           description="predict")
    results = [
        Result(index=group.index * size + j, prompt=prompt,
               output=group.output[j] if group.ok else "", latency_s=group.latency_s,
               ttft_s=group.ttft_s, attempts=group.attempts, error=group.error)
        for group, chunk in zip(grouped.results, groups, strict=True)
        for j, prompt in enumerate(chunk)
    ]
    return BatchReport(results=results, wall_s=grouped.wall_s, concurrency=concurrency,
                       retries=grouped.retries)


def chat_many(deployment: Any, prompts: list[str], *, concurrency: int = 8,
              progress: bool = True, max_tokens: int = 256, system: str = "",
              stream: bool = True) -> BatchReport:
    """Prompts through chat completions, streamed so time to first token is measured where the
    endpoint streams (dedicated); a shared endpoint answers whole (said once) and each result's
    ttft_s is NaN: not measured rather than faked. `stream=False` asks for whole replies on
    any endpoint: no time to first token, and less work per reply for client and server."""
    from nbhelpers import checks, request_rules
    from nbhelpers.images import check_payload
    from nbhelpers.openai_chat import (
        build_messages,
        chat_client,
        check_request,
        say_not_streamed,
        streams,
    )
    from nbhelpers.predict_http import ChatSession

    model = request_rules.deployment_model(deployment)
    template = request_rules.deployment_template(deployment)
    check_request(model, [], template=template)  # first: no prompt can fix its absence
    prompts = request_rules.check_prompts("prompts", prompts)
    request_rules.check_concurrency(concurrency)
    checks.flag("progress", progress)
    checks.flag("stream", stream)
    request_rules.check_max_tokens(max_tokens, context=request_rules.context_of(model))
    messages_for = [build_messages(p, system=system) for p in prompts]
    dedicated = streams(deployment)  # only dedicated endpoints stream
    streamed = stream and dedicated
    for messages in messages_for:
        check_request(model, messages, template=template)
        check_payload({"messages": messages}, dedicated=dedicated)
    api = chat_client(deployment, max_retries=0)  # its errors; retries are ours, with jitter
    if stream and not streamed:
        say_not_streamed(deployment)
    with ChatSession(deployment.endpoint(), errors_from=api, pool_size=concurrency) as session:
        def send(messages: list[dict[str, Any]]) -> tuple[str, float]:
            return session.complete(messages, max_tokens=max_tokens, stream=streamed)

        return run_many(messages_for, send, concurrency=concurrency, progress=progress,
                        description="chat")
