"""Benchmark: many prompts, one per request, through the helpers, a plain loop and a lean client.

The emulator runs in its own process with a service time per request and vLLM's max_num_seqs cap
per replica, so the server's limit is cap / service time requests per second. For each engine
(`--engine`, passed to the emulator as NBHELPERS_ENGINE: `rehearsal` by default; another engine
adds its own rows) and endpoint type (`--endpoint`), it prints throughput, the ratio to that
limit and p50/p95 latency, side by side, for:
  - loop:           the tutorial's way, aiplatform's Endpoint.predict one request after another;
  - predict_many:   the helper, one prompt per request (and `--instances-per-request` per request);
  - chat_many:      the helper through chat completions, whole replies, and streamed where the
                    endpoint streams (dedicated);
  - lean reference: a thread pool over one pool of kept-alive connections (urllib3) posting the
                    helpers' own request bodies with a bearer token, nothing else: what the server
                    gives a client with no per-call cost.
Helpers and reference alternate `--repeat` times; each row is the median run.
Exits non-zero when, on the rehearsal engine, a helper with one prompt per request is under
`--target` of the limit (whole replies) or of the lean reference (streamed: there every token is
an event that the emulator and the client each handle, and this machine's CPU sets the pace).
On the real engine only the ratio to the reference is printed: vLLM's pace is its own.

    python benchmarks/batch_inference.py --n 200 --cap 16 --service-ms 50
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

ENGINES = ("rehearsal", "vllm")
ENDPOINTS = ("shared", "dedicated")
# One deployment per run and model: a model per endpoint type.
MODELS = {"shared": "Llama-3.1-8B-Instruct", "dedicated": "Llama-3.2-1B-Instruct"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator(service_s: float, engine: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nbhelpers", "emulator", "--port", str(port),
         "--deploy-seconds", "0.2", "--service-seconds", str(service_s)],
        stdout=subprocess.DEVNULL, env={**os.environ, "NBHELPERS_ENGINE": engine})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/emulator/info").close()
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered \
        else float("nan")


@dataclass
class Row:
    engine: str
    endpoint: str
    method: str
    rate: float  # prompts per second
    p50_s: float
    p95_s: float
    note: str = ""
    helper: bool = False  # a helper with one prompt per request: held to the target


def lean_reference(url: str, token: str, bodies: list[dict[str, Any]], *, concurrency: int,
                   ca_bundle: str | None) -> tuple[float, list[float]]:
    """A thread pool over one urllib3 pool of kept-alive connections (the CA bundle loaded
    once), a bearer token, nothing else: the floor of what any client pays per request."""
    import ssl

    import urllib3

    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
    pool = urllib3.PoolManager(maxsize=concurrency, ssl_context=context)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(body: dict[str, Any]) -> float:
        started = time.perf_counter()
        response = pool.request("POST", url, body=json.dumps(body).encode(), headers=headers,
                                timeout=120, preload_content=False)
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {response.data[:200]!r}")
        while response.read1(65536):  # a stream as it arrives (the reply is not used)
            pass
        response.release_conn()
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as workers:
        latencies = list(workers.map(send, bodies))
    return len(bodies) / (time.perf_counter() - started), latencies


def median_row(rows: list[Row]) -> Row:
    """The run of median throughput among repeats of one method (its latencies with it)."""
    ordered = sorted(rows, key=lambda row: row.rate)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(rows) > 1:
        chosen.note = (f"{chosen.note}; " if chosen.note else "") + \
            f"median of {len(rows)}: " + ", ".join(f"{r.rate:.0f}" for r in rows)
    return chosen


def measure_endpoint(args: argparse.Namespace, *, engine: str, kind: str, session: Any,
                     url: str, prompts: list[str]) -> list[Row]:
    """One deployment of the endpoint type `kind`, and every method's row against it."""
    import nbhelpers
    from nbhelpers.batch import SAMPLING
    from nbhelpers.prediction import build_instance

    concurrency = args.concurrency or 2 * args.cap
    plan = nbhelpers.plan_deployment(
        MODELS[kind], dedicated_endpoint=kind == "dedicated",
        options=nbhelpers.VllmOptions(max_num_seqs=args.cap))
    deployment = nbhelpers.deploy(session, plan)
    endpoint = deployment.endpoint()
    streams = kind == "dedicated"  # shared endpoints do not stream
    # Each route once before timing, so the server's one-time costs fall outside every figure.
    endpoint.predict(instances=[{"prompt": "warm-up", "max_tokens": 8}])
    nbhelpers.chat_many(deployment, ["warm-up"], progress=False, max_tokens=8)

    def loop() -> Row:
        latencies = []
        started = time.perf_counter()
        for prompt in prompts:
            t0 = time.perf_counter()
            endpoint.predict(instances=[{"prompt": prompt, "max_tokens": 32}])
            latencies.append(time.perf_counter() - t0)
        return Row(engine, kind, "loop (Endpoint.predict)",
                   args.n / (time.perf_counter() - started),
                   percentile(latencies, 0.5), percentile(latencies, 0.95))

    def helper_predict(per_request: int) -> Row:
        in_flight = max(1, concurrency // per_request)  # ~2 x cap sequences either way
        report = nbhelpers.predict_many(deployment, prompts, concurrency=in_flight,
                                        instances_per_request=per_request,
                                        progress=False, max_tokens=32)
        failed = sum(not r.ok for r in report.results)
        ordered = [r.prompt for r in report.results] == prompts
        return Row(engine, kind, f"predict_many ({per_request}/request, "
                   f"{in_flight} in flight)", report.throughput,
                   report.latency(0.5), report.latency(0.95),
                   f"failures {failed}, retries {report.retries}, order kept "
                   f"{ordered}", helper=per_request == 1)

    def helper_chat(stream: bool) -> Row:
        chats = nbhelpers.chat_many(deployment, prompts, concurrency=concurrency,
                                    progress=False, max_tokens=32, stream=stream)
        failed = sum(not r.ok for r in chats.results)
        ttft = chats.ttft(0.5)
        how = f"streamed, ttft p50 {ttft * 1000:.1f} ms" if ttft == ttft else \
            "whole replies, ttft not measured"
        shape = "streamed" if stream and streams else "whole"
        return Row(engine, kind, f"chat_many ({shape}, {concurrency} in flight)",
                   chats.throughput, chats.latency(0.5), chats.latency(0.95),
                   f"failures {failed}, {how}", helper=True)

    host = (f"https://{endpoint.gca_resource.dedicated_endpoint_dns}"
            if kind == "dedicated" else url)
    # The reference sends what the helpers send (the same instances and sampling), so
    # the two differ only in what the client does around each request.
    predict_bodies = [{"instances": [build_instance(
        p, **{**SAMPLING, "max_tokens": 32})]} for p in prompts]

    def reference(path: str, bodies: list[dict[str, Any]], name: str,
                  note: str = "") -> Row:
        rate, latencies = lean_reference(
            f"{host}/{path}", session.credentials.token, bodies,
            concurrency=concurrency, ca_bundle=os.environ.get("REQUESTS_CA_BUNDLE"))
        return Row(engine, kind, name, rate, percentile(latencies, 0.5),
                   percentile(latencies, 0.95), note)

    def chat_bodies(stream: bool) -> list[dict[str, Any]]:
        return [{"model": "", "messages": [{"role": "user", "content": p}],
                 "max_tokens": 32, **({"stream": True} if stream else {})}
                for p in prompts]

    chat_path = f"v1beta1/{endpoint.resource_name}/chat/completions"
    measures: list[Callable[[], Row]] = [
        lambda: helper_predict(1),
        lambda: reference(f"v1/{endpoint.resource_name}:predict", predict_bodies,
                          f"lean reference (1/request, {concurrency} in flight)"),
        lambda: helper_chat(False),
        lambda: reference(chat_path, chat_bodies(False),
                          f"lean reference, chat ({concurrency} in flight)", "whole"),
    ]
    if streams:
        measures += [
            lambda: helper_chat(True),
            lambda: reference(chat_path, chat_bodies(True), "lean reference, chat "
                              f"({concurrency} in flight, streamed)", "streamed"),
        ]
    if args.instances_per_request > 1:
        measures.append(lambda: helper_predict(args.instances_per_request))
    # Helper and reference runs alternate, so a change in the machine's load between
    # them shows as spread among the repeats, not as a difference between clients.
    runs: dict[int, list[Row]] = {}
    for _ in range(args.repeat):
        for position, measure in enumerate(measures):
            runs.setdefault(position, []).append(measure())
    return [loop()] + [median_row(runs[position]) for position in range(len(measures))]


def run_engine(args: argparse.Namespace, engine: str) -> list[Row]:
    process, url = start_emulator(args.service_ms / 1000, engine)
    os.environ.update(NBHELPERS_BACKEND="emulator", NBHELPERS_EMULATOR_URL=url,
                      NBHELPERS_STATE_DIR=tempfile.mkdtemp(prefix="nbh-bench-"),
                      HF_TOKEN="hf_benchmarkOnlyNotARealToken")
    rows: list[Row] = []
    try:
        import nbhelpers

        session = nbhelpers.connect(run_id=f"benchmark-{engine}", quiet=True)
        prompts = [f"Benchmark prompt {i}: what is {i} + {i}?" for i in range(args.n)]
        for kind in ENDPOINTS if args.endpoint == "both" else (args.endpoint,):
            rows += measure_endpoint(args, engine=engine, kind=kind, session=session, url=url,
                                     prompts=prompts)
        try:  # the emulator and its resources end with this process anyway
            nbhelpers.cleanup(session, dry_run=False)
        except Exception as err:  # a figure is not lost for a cleanup that fails
            print(f"cleanup failed ({type(err).__name__}: {err}); the emulator stops anyway")
    finally:
        process.terminate()
        process.wait(timeout=20)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="prompts per method")
    parser.add_argument("--cap", type=int, default=16, help="max_num_seqs of the replica")
    parser.add_argument("--service-ms", type=float, default=50.0, help="time per request")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="requests in flight (default: 2 x cap)")
    parser.add_argument("--instances-per-request", type=int, default=4,
                        help="prompts per predict request in the second predict_many run")
    parser.add_argument("--engine", action="append", choices=ENGINES,
                        help="what replicas answer from (repeat for several columns; default "
                             "rehearsal)")
    parser.add_argument("--endpoint", choices=(*ENDPOINTS, "both"), default="both",
                        help="endpoint type(s) to measure")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each method, helpers and reference alternating; the "
                             "median is printed (3 or more on the real engine, whose pace "
                             "varies)")
    parser.add_argument("--target", type=float, default=0.95,
                        help="share of the limit the helpers must reach, one prompt per request")
    args = parser.parse_args()
    limit = args.cap / (args.service_ms / 1000)
    rows = [row for engine in (args.engine or ["rehearsal"])
            for row in run_engine(args, engine)]

    rounds = math.ceil(args.n / args.cap)  # the last round runs part-full
    print(f"server limit: cap {args.cap} / service {args.service_ms:.0f} ms = {limit:.0f} "
          f"req/s; N={args.n} prompts per method, which take at least {rounds} service times: "
          f"{args.n / (rounds * args.service_ms / 1000):.0f} prompts/s at most "
          f"({args.n / (rounds * args.cap):.1%} of the limit) for any client")
    print(f"{'engine':10s} {'endpoint':9s} {'method':44s} {'prompts/s':>9s} {'of limit':>8s} "
          f"{'p50 ms':>7s} {'p95 ms':>7s}  notes")
    for row in rows:
        print(f"{row.engine:10s} {row.endpoint:9s} {row.method:44s} {row.rate:9.1f} "
              f"{row.rate / limit:8.1%} {row.p50_s * 1000:7.1f} {row.p95_s * 1000:7.1f}  "
              f"{row.note}")
    missed = []
    for row in (r for r in rows if r.helper):
        lean = reference_of(row, rows)
        ratio = row.rate / lean.rate
        print(f"{row.engine}/{row.endpoint}: {row.method.split(' (')[0]} "
              f"({'streamed' if streamed(row) else 'whole'}) at {ratio:.0%} of the lean "
              f"reference client")
        if "failures 0" not in row.note:
            missed.append(f"{row.engine} {row.endpoint} {row.method}: failures")
        elif row.engine != "rehearsal":
            continue  # the real engine's own pace is not the emulator's limit: ratio only
        elif streamed(row) and ratio < args.target:
            missed.append(f"{row.endpoint} {row.method}: {ratio:.0%} of the streamed reference")
        elif not streamed(row) and row.rate < args.target * limit:
            missed.append(f"{row.endpoint} {row.method}: {row.rate / limit:.1%} of the limit")
    print(f"target (rehearsal engine, one prompt per request, no failures: whole replies >= "
          f"{args.target:.0%} of the limit; streamed chat >= {args.target:.0%} of the lean "
          "reference's streamed rate, which this machine's CPU bounds: every token is an event "
          "the emulator writes and the client reads):",
          "MISSED by " + "; ".join(missed) if missed else "met")
    return 1 if missed else 0


def streamed(row: Row) -> bool:
    return "streamed" in row.method


def reference_of(row: Row, rows: list[Row]) -> Row:
    """The lean client's row that a helper's row is compared with: same engine, endpoint,
    route (predict or chat) and, for chat, the same streaming."""
    chat = row.method.startswith("chat")
    return next(r for r in rows if r.engine == row.engine and r.endpoint == row.endpoint
                and r.method.startswith("lean") and ("chat" in r.method) == chat
                and streamed(r) == streamed(row))


if __name__ == "__main__":
    sys.exit(main())
