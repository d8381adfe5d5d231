"""Benchmark: many prompts, one per request, through the helpers, a plain loop and a lean client.

The emulator runs in its own process with a service time per request and vLLM's max_num_seqs cap
per replica, so the server's limit is cap / service time requests per second. For each engine
(`--engine`, passed to the emulator as NBHELPERS_ENGINE: `rehearsal` by default; another engine
adds its own column of rows) and endpoint type (`--endpoint`), it prints throughput, the ratio to
that limit and p50/p95 latency, side by side, for:
  - loop:           the tutorial's way, aiplatform's Endpoint.predict one request after another;
  - predict_many:   the helper, one prompt per request (and `--instances-per-request` per request);
  - chat_many:      the helper through chat completions (streamed where the endpoint streams);
  - lean reference: a thread pool over one pool of kept-alive connections (urllib3) posting
                    `:predict` with a bearer token, nothing else: what the server gives a client
                    with no per-call cost.
Exits non-zero when a helper with one prompt per request is under `--target` of the limit.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

ENGINES = ("rehearsal", "vllm")
ENDPOINTS = ("shared", "dedicated")


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


def run_engine(args: argparse.Namespace, engine: str, limit: float) -> list[Row]:
    concurrency = args.concurrency or 2 * args.cap
    process, url = start_emulator(args.service_ms / 1000, engine)
    os.environ.update(NBHELPERS_BACKEND="emulator", NBHELPERS_EMULATOR_URL=url,
                      NBHELPERS_STATE_DIR=tempfile.mkdtemp(prefix="nbh-bench-"),
                      HF_TOKEN="hf_benchmarkOnlyNotARealToken")
    rows: list[Row] = []
    try:
        import nbhelpers

        session = nbhelpers.connect(run_id=f"benchmark-{engine}", quiet=True)
        prompts = [f"Benchmark prompt {i}: what is {i} + {i}?" for i in range(args.n)]
        endpoints = ENDPOINTS if args.endpoint == "both" else (args.endpoint,)
        models = {"shared": "Llama-3.1-8B-Instruct", "dedicated": "Llama-3.2-1B-Instruct"}
        for kind in endpoints:  # one deployment per run and model: a model per endpoint type
            plan = nbhelpers.plan_deployment(
                models[kind], dedicated_endpoint=kind == "dedicated",
                options=nbhelpers.VllmOptions(max_num_seqs=args.cap))
            deployment = nbhelpers.deploy(session, plan)
            endpoint = deployment.endpoint()
            endpoint.predict(instances=[{"prompt": "warm-up", "max_tokens": 8}])

            latencies = []
            started = time.perf_counter()
            for prompt in prompts:
                t0 = time.perf_counter()
                endpoint.predict(instances=[{"prompt": prompt, "max_tokens": 32}])
                latencies.append(time.perf_counter() - t0)
            rows.append(Row(engine, kind, "loop (Endpoint.predict)",
                            args.n / (time.perf_counter() - started),
                            percentile(latencies, 0.5), percentile(latencies, 0.95)))

            for per_request in (1, args.instances_per_request):
                in_flight = max(1, concurrency // per_request)  # ~2 x cap sequences either way
                report = nbhelpers.predict_many(deployment, prompts, concurrency=in_flight,
                                                instances_per_request=per_request,
                                                progress=False, max_tokens=32)
                failed = sum(not r.ok for r in report.results)
                ordered = [r.prompt for r in report.results] == prompts
                rows.append(Row(engine, kind, f"predict_many ({per_request}/request, "
                                f"{in_flight} in flight)", report.throughput,
                                report.latency(0.5), report.latency(0.95),
                                f"failures {failed}, retries {report.retries}, order kept "
                                f"{ordered}", helper=per_request == 1))
            chats = nbhelpers.chat_many(deployment, prompts, concurrency=concurrency,
                                        progress=False, max_tokens=32)
            failed = sum(not r.ok for r in chats.results)
            streamed = "streamed, ttft p50 " \
                f"{chats.ttft(0.5) * 1000:.1f} ms" if chats.ttft(0.5) == chats.ttft(0.5) \
                else "not streamed (shared endpoint), ttft not measured"
            rows.append(Row(engine, kind, f"chat_many (1/request, {concurrency} in flight)",
                            chats.throughput, chats.latency(0.5), chats.latency(0.95),
                            f"failures {failed}, {streamed}", helper=True))

            host = (f"https://{endpoint.gca_resource.dedicated_endpoint_dns}"
                    if kind == "dedicated" else url)
            rate, latencies = lean_reference(
                f"{host}/v1/{endpoint.resource_name}:predict", session.credentials.token,
                [{"instances": [{"prompt": p, "max_tokens": 32}]} for p in prompts],
                concurrency=concurrency, ca_bundle=os.environ.get("REQUESTS_CA_BUNDLE"))
            rows.append(Row(engine, kind, f"lean reference (1/request, {concurrency} in "
                            "flight)", rate, percentile(latencies, 0.5),
                            percentile(latencies, 0.95)))
            streams = kind == "dedicated"  # shared endpoints do not stream
            rate, latencies = lean_reference(
                f"{host}/v1beta1/{endpoint.resource_name}/chat/completions",
                session.credentials.token,
                [{"model": "", "messages": [{"role": "user", "content": p}], "max_tokens": 32,
                  **({"stream": True} if streams else {})} for p in prompts],
                concurrency=concurrency, ca_bundle=os.environ.get("REQUESTS_CA_BUNDLE"))
            rows.append(Row(engine, kind, f"lean reference, chat ({concurrency} in flight)",
                            rate, percentile(latencies, 0.5), percentile(latencies, 0.95),
                            "streamed" if streams else "whole"))
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
    parser.add_argument("--target", type=float, default=0.95,
                        help="share of the limit the helpers must reach, one prompt per request")
    args = parser.parse_args()
    limit = args.cap / (args.service_ms / 1000)
    rows = [row for engine in (args.engine or ["rehearsal"])
            for row in run_engine(args, engine, limit)]

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
    missed = [r for r in rows if r.helper and (r.rate < args.target * limit or
                                               "failures 0" not in r.note)]
    for engine in sorted({r.engine for r in rows}):
        for kind in sorted({r.endpoint for r in rows if r.engine == engine}):
            for r in rows:
                if r.engine == engine and r.endpoint == kind and r.helper:
                    chat = r.method.startswith("chat")
                    lean = next(x for x in rows if x.engine == engine and x.endpoint == kind
                                and x.method.startswith("lean") and ("chat" in x.method) == chat)
                    print(f"{engine}/{kind}: {r.method.split(' (')[0]} at "
                          f"{r.rate / lean.rate:.0%} of the lean reference client")
    print(f"target (helpers, one prompt per request, >= {args.target:.0%} of the limit, no "
          "failures):", "MISSED by " + ", ".join(f"{r.endpoint} {r.method}" for r in missed)
          if missed else "met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
