"""Benchmark: many prompts through the predict route, the helper against a plain loop.

The emulator runs in its own process with a service time per request and vLLM's max_num_seqs cap
per replica, so the server's limit is cap / service time requests per second. Prints throughput,
the ratio to that limit, and p50/p95 latency; exits non-zero when a target is missed.

    python benchmarks/batch_inference.py --n 200 --cap 16 --service-ms 50
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator(service_s: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nbhelpers", "emulator", "--port", str(port),
         "--deploy-seconds", "0.2", "--service-seconds", str(service_s)],
        stdout=subprocess.DEVNULL)
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
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="requests per method")
    parser.add_argument("--cap", type=int, default=16, help="max_num_seqs of the replica")
    parser.add_argument("--service-ms", type=float, default=50.0, help="time per request")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="helper's requests in flight (default: 2 x cap)")
    parser.add_argument("--instances-per-request", type=int, default=4,
                        help="prompts per predict request in the second helper run")
    args = parser.parse_args()
    concurrency = args.concurrency or 2 * args.cap
    limit = args.cap / (args.service_ms / 1000)

    process, url = start_emulator(args.service_ms / 1000)
    os.environ.update(NBHELPERS_BACKEND="emulator", NBHELPERS_EMULATOR_URL=url,
                      NBHELPERS_STATE_DIR=tempfile.mkdtemp(prefix="nbh-bench-"),
                      HF_TOKEN="hf_benchmarkOnlyNotARealToken")
    try:
        import nbhelpers

        session = nbhelpers.connect(run_id="benchmark", quiet=True)
        plan = nbhelpers.plan_deployment(
            "Llama-3.1-8B-Instruct", options=nbhelpers.VllmOptions(max_num_seqs=args.cap))
        deployment = nbhelpers.deploy(session, plan)
        endpoint = deployment.endpoint()
        prompts = [f"Benchmark prompt {i}: what is {i} + {i}?" for i in range(args.n)]
        endpoint.predict(instances=[{"prompt": "warm-up", "max_tokens": 8}])

        latencies = []
        started = time.perf_counter()
        for prompt in prompts:  # the tutorial's way: one request after another
            t0 = time.perf_counter()
            endpoint.predict(instances=[{"prompt": prompt, "max_tokens": 32}])
            latencies.append(time.perf_counter() - t0)
        loop_s = time.perf_counter() - started
        loop_rps = args.n / loop_s

        print(f"server limit: cap {args.cap} / service {args.service_ms:.0f} ms = "
              f"{limit:.0f} req/s; N={args.n}")
        print(f"sequential loop:              {loop_rps:7.1f} prompts/s ({loop_rps / limit:6.1%} "
              f"of limit)  p50 {percentile(latencies, 0.5) * 1000:6.1f} ms  "
              f"p95 {percentile(latencies, 0.95) * 1000:6.1f} ms")
        met = True
        for per_request in (1, args.instances_per_request):
            in_flight = max(1, concurrency // per_request)  # about 2 x cap sequences either way
            report = nbhelpers.predict_many(deployment, prompts, concurrency=in_flight,
                                            instances_per_request=per_request,
                                            progress=False, max_tokens=32)
            failed = sum(not r.ok for r in report.results)
            ordered = [r.prompt for r in report.results] == prompts
            rate = report.throughput
            print(f"predict_many({in_flight:2d} in flight, {per_request} per request): "
                  f"{rate:7.1f} prompts/s ({rate / limit:6.1%} of limit)  "
                  f"p50 {report.latency(0.5) * 1000:6.1f} ms  "
                  f"p95 {report.latency(0.95) * 1000:6.1f} ms  {rate / loop_rps:5.1f}x the loop"
                  f"  failures {failed}, retries {report.retries}, order kept {ordered}")
            met = rate >= 0.9 * limit and rate / loop_rps >= 10 and not failed and ordered
        nbhelpers.cleanup(session, dry_run=False)
        print(f"targets for {args.instances_per_request} per request (>= 90% of limit, >= 10x "
              "the loop, no failures, order kept):", "met" if met else "MISSED")
        return 0 if met else 1
    finally:
        process.terminate()
        process.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
