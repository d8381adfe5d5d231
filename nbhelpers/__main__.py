"""Command line: `python -m nbhelpers emulator|demo|check-notebooks`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _emulator(args: argparse.Namespace) -> int:
    from nbhelpers import emulator

    running = emulator.start(args.host, args.port, args.state, deploy_seconds=args.deploy_seconds,
                             service_seconds=args.service_seconds)
    print(f"nbhelpers emulator (rehearsal only: nothing real is deployed) serving Vertex AI at "
          f"{running.url}, Cloud Storage at {running.storage_url}", flush=True)
    print(f"  export NBHELPERS_BACKEND=emulator NBHELPERS_EMULATOR_URL={running.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    running.stop()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from nbhelpers.runner import run_suite

    results = run_suite(ROOT / "notebooks", Path(args.out))
    passed = sum(r.ok for r in results)
    print(f"{passed} of {len(results)} notebooks passed; executed notebooks are in "
          f"{results[0].output.parent if results else args.out}")
    return 0 if results and passed == len(results) else 1


def _check(args: argparse.Namespace) -> int:
    from nbhelpers.notebook_checks import check

    found = check(Path(args.directory))
    print("\n".join(found) or f"notebooks in {args.directory}: ok")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbhelpers")
    commands = parser.add_subparsers(dest="command", required=True)
    emu = commands.add_parser("emulator", help="serve the local Vertex AI emulator until stopped")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8765)
    emu.add_argument("--state", default=None, help="JSON file that keeps resources across runs")
    emu.add_argument("--deploy-seconds", type=float, default=2.0,
                     help="how long a deployment takes to become ready")
    emu.add_argument("--service-seconds", type=float, default=0.0,
                     help="time each request takes in a replica (max_num_seqs run at once)")
    emu.set_defaults(func=_emulator)
    demo = commands.add_parser("demo", help="run setup -> deploy -> predict -> cleanup headless")
    demo.add_argument("--out", default=str(ROOT / "runs"))
    demo.set_defaults(func=_demo)
    chk = commands.add_parser("check-notebooks", help="lint notebooks for the suite's rules")
    chk.add_argument("directory")
    chk.set_defaults(func=_check)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
