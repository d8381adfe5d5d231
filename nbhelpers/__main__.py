"""Command line: `python -m nbhelpers emulator|run|cleanup|plan|tiny-model|check-notebooks`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from nbhelpers.tiny_llama import ENGINES, FAMILIES

ROOT = Path(__file__).resolve().parent.parent


def _emulator(args: argparse.Namespace) -> int:
    from nbhelpers.connection import start_emulator
    from nbhelpers.errors import ConfigError

    try:
        running = start_emulator(host=args.host, port=args.port, state_file=args.state,
                                 deploy_seconds=args.deploy_seconds,
                                 service_seconds=args.service_seconds, engine=args.engine)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    engine = ("replies from the real vLLM server on a tiny random-weight model"
              if running.vertex.deployments.engine == "vllm" else "replies from the rehearsal "
              "engine")
    print(f"nbhelpers emulator (rehearsal only: nothing real is deployed; {engine}) serving "
          f"Vertex AI at {running.url}, Cloud Storage at {running.storage_url}", flush=True)
    print(f"  export NBHELPERS_BACKEND=emulator NBHELPERS_EMULATOR_URL={running.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    running.stop()
    return 0


def _run(args: argparse.Namespace) -> int:
    """Runs the notebooks; exit status 0 when all passed, 1 when not, 130 when stopped by a
    signal, 2 on bad input (refused before anything starts)."""
    from nbhelpers import run_config, runner
    from nbhelpers.errors import ConfigError

    notebooks_dir = Path(args.notebooks)
    try:
        if args.list:
            print(run_config.list_parameters(notebooks_dir))
            return 0
        parameters: dict[str, Any] = {}
        matrix: list[dict[str, Any]] = []
        if args.parameters_file:
            parameters, matrix = run_config.parse_parameter_file(Path(args.parameters_file))
        for name, value in args.parameter or []:
            parameters[name] = run_config.parse_cli_value(notebooks_dir, name, value)
        limits = {} if args.cleanup_timeout is None else {
            "cleanup_timeout_s": args.cleanup_timeout}
        config = run_config.RunConfig(
            notebooks_dir=notebooks_dir, out_dir=Path(args.out), run_id=args.run_id,
            parameters=parameters, matrix=matrix, backend=args.backend,
            only=tuple(args.only or ()), skip=tuple(args.skip or ()), keep=args.keep,
            timeout_s=args.timeout, parallel=args.parallel, progress=not args.no_progress,
            engine=args.engine, **limits)
        report = runner.run(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    passed = sum(r.ok for r in report.runs)
    try:
        print(f"{passed} of {len(report.runs)} notebooks passed; report: "
              f"{report.run_dir / 'report.html'} (and report.md); executed notebooks in "
              f"{report.run_dir}", flush=True)
    except OSError:  # the terminal is gone; the report says it all
        pass
    return report.exit_code


def _cleanup(args: argparse.Namespace) -> int:
    import nbhelpers

    session = nbhelpers.connect(project=args.project, region=args.region, backend=args.backend,
                                run_id=args.run_id, quiet=True)
    if args.expired:
        nbhelpers.cleanup_expired(session, dry_run=args.dry_run)
    else:
        nbhelpers.cleanup(session, dry_run=args.dry_run, whole_owner=args.all_my_runs)
    return 0


def _plan(args: argparse.Namespace) -> int:
    """Prints the plan; exit status 0 when vLLM would start, 1 when not, 2 on bad input."""
    import json

    from nbhelpers import planner
    from nbhelpers.errors import ConfigError

    try:
        config = json.loads(Path(args.config).read_text()) if args.config else None
        result = planner.plan_memory(
            args.model, config=config, accelerator=args.accelerator,
            gpu_memory_gib=args.gpu_memory_gib, accelerator_count=args.count, dtype=args.dtype,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            enforce_eager=args.enforce_eager, vllm_version=args.vllm_version,
            kv_cache_dtype=args.kv_cache_dtype)
    except (ConfigError, OSError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.describe())
    return 0 if result.ok else 1


def _tiny_model(args: argparse.Namespace) -> int:
    """Builds (or finds cached) the tiny random-weight Llama the real engine serves."""
    from nbhelpers import tiny_llama
    from nbhelpers.errors import ConfigError

    try:
        folder = tiny_llama.build(args.family, instruct=not args.base, root=args.root)
    except (ConfigError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(folder)
    return 0


def _check(args: argparse.Namespace) -> int:
    from nbhelpers.notebook_checks import check

    found = check(Path(args.directory))
    print("\n".join(found) or f"notebooks in {args.directory}: ok")
    return 1 if found else 0


# --- workshop: an organiser's shared endpoint for a room (nbhelpers.workshop) ----------------
def _workshop(args: argparse.Namespace) -> int:
    """plan|up|card|grant|down of workshop `--id`; exit status 2 on bad input or a refusal."""
    import json

    import nbhelpers
    from nbhelpers import workshop
    from nbhelpers.errors import ConfigError

    try:
        session = nbhelpers.connect(project=args.project, region=args.region,
                                    bucket_uri=args.bucket, backend=args.backend,
                                    run_id=args.id, quiet=True)
        if args.action in ("plan", "up"):
            plan = workshop.plan_workshop(args.model, attendees=args.attendees,
                                          hours=workshop.DEFAULT_HOURS if args.hours is None
                                          else args.hours, machine_type=args.machine_type,
                                          weights_uri=args.weights_uri,
                                          ask_for_token=args.action == "up",
                                          region=session.settings.region)
            print(plan.describe())
            if args.action == "plan":
                print(f"Serving quota: {workshop.check_quota(session, plan)}.")
            else:
                workshop.up(session, plan)
        elif args.action == "card":
            print(json.dumps(workshop.read_card(session, args.id), indent=2))
        elif args.action == "grant":
            workshop.grant(session, args.attendee or [],
                           role=workshop.ATTENDEE_ROLE if args.role is None else args.role)
        else:
            workshop.down(session)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _add_workshop_commands(commands: Any) -> None:
    shop = commands.add_parser("workshop", help="one shared endpoint for a room of attendees")
    shop.add_argument("action", choices=("plan", "up", "card", "grant", "down"),
                      help="plan (with the quota check), up (deploy, write the card), card "
                      "(print it), grant (attendees may call it), down (delete everything)")
    shop.add_argument("--id", required=True, help="the workshop id (a run id: 1-63 of a-z 0-9 - _)")
    shop.add_argument("--model", default="Llama-3.1-8B-Instruct")
    shop.add_argument("--attendees", type=int, default=30, help="people in the room")
    shop.add_argument("--hours", type=float, default=None,
                      help="how long the endpoint lives (its expiry label; default "
                      "nbhelpers.workshop.DEFAULT_HOURS)")
    shop.add_argument("--machine-type", default="")
    shop.add_argument("--weights-uri", default="", help="gs:// copy of the weights (no token)")
    shop.add_argument("--attendee", action="append",
                      help="grant: an e-mail, or group:ADDRESS (repeat for each)")
    shop.add_argument("--role", default=None, help="grant: the role on the endpoint "
                      "(default nbhelpers.workshop.ATTENDEE_ROLE)")
    shop.add_argument("--backend", default="auto")
    shop.add_argument("--project", default="")
    shop.add_argument("--region", default="")
    shop.add_argument("--bucket", default="")
    shop.set_defaults(func=_workshop)


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
    emu.add_argument("--engine", choices=ENGINES, default=None,
                     help="what replicas answer from: the rehearsal engine, or the real vLLM "
                     "server of .venv-vllm on a tiny model (default: NBHELPERS_ENGINE, else "
                     "rehearsal)")
    emu.set_defaults(func=_emulator)
    run = commands.add_parser("run", help="run the notebooks with papermill and report")
    run.add_argument("-f", "--parameters-file", help="YAML parameters (and an optional matrix)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="a notebook parameter (overrides the file)")
    run.add_argument("--backend", choices=("emulator", "vertex"), default="emulator")
    run.add_argument("--engine", choices=ENGINES, default="rehearsal",
                     help="what the emulator's replicas answer from (vllm: the real vLLM server "
                     "of .venv-vllm on a tiny model; `make engine` installs it)")
    run.add_argument("--run-id", default="")
    run.add_argument("--only", action="append", help="run only these notebooks (name or prefix)")
    run.add_argument("--skip", action="append", help="skip these notebooks (name or prefix)")
    run.add_argument("--keep", action="store_true",
                     help="do not run the cleanup notebook (resources stay and are billed)")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="time limit of each lesson notebook (not of the cleanup notebook)")
    run.add_argument("--cleanup-timeout", type=float, default=None, metavar="SECONDS",
                     help="time limit of the cleanup notebook (default: the container's "
                     "deployment timeout, which cleanup may have to wait out, plus a margin)")
    run.add_argument("--parallel", type=int, default=2, help="matrix entries at once")
    run.add_argument("--list", action="store_true", help="list each notebook's parameters")
    run.add_argument("--no-progress", action="store_true", help="no per-cell progress bars")
    run.add_argument("--notebooks", default=str(ROOT / "notebooks"))
    run.add_argument("--out", default=str(ROOT / "runs"))
    run.set_defaults(func=_run)
    clean = commands.add_parser("cleanup", help="delete the suite's labelled resources")
    clean.add_argument("--expired", action="store_true",
                       help="every owner's resources whose nbh-expires label has passed")
    clean.add_argument("--all-my-runs", action="store_true")
    clean.add_argument("--run-id", default="")
    clean.add_argument("--dry-run", action="store_true")
    clean.add_argument("--backend", default="auto")
    clean.add_argument("--project", default="")
    clean.add_argument("--region", default="")
    clean.set_defaults(func=_cleanup)
    pln = commands.add_parser("plan", help="predict whether vLLM starts a model on given GPUs")
    pln.add_argument("--model", help="catalog model name or Hugging Face id")
    pln.add_argument("--config", help="a config.json file, for a model outside the catalog")
    pln.add_argument("--accelerator", help="Vertex accelerator type or short name (L4, H100)")
    pln.add_argument("--gpu-memory-gib", type=float, help="total GPU memory, overrides the type")
    pln.add_argument("--count", "--accelerator-count", type=int, default=1,
                     help="GPUs (tensor-parallel size)")
    pln.add_argument("--dtype", default="bfloat16", help="bfloat16, float16, float32 or fp8")
    pln.add_argument("--kv-cache-dtype", default="auto")
    pln.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    pln.add_argument("--max-model-len", type=int, default=4096)
    pln.add_argument("--max-num-seqs", type=int, default=256)
    pln.add_argument("--max-num-batched-tokens", type=int, default=None)
    pln.add_argument("--enforce-eager", action="store_true")
    pln.add_argument("--vllm-version", default=None, help="default: the default container's")
    pln.add_argument("--json", action="store_true", help="print the plan as JSON")
    pln.set_defaults(func=_plan)
    tiny = commands.add_parser("tiny-model", help="build the tiny random-weight Llama the real "
                               "vLLM engine serves, and print its folder")
    tiny.add_argument("--family", choices=FAMILIES, default=FAMILIES[0])
    tiny.add_argument("--base", action="store_true", help="a base model (no chat template)")
    tiny.add_argument("--root", default=None, help="cache folder (default: "
                      "NBHELPERS_TINY_MODEL_DIR, else ~/.cache/nbhelpers/tiny-llama)")
    tiny.set_defaults(func=_tiny_model)
    chk = commands.add_parser("check-notebooks", help="lint notebooks for the suite's rules")
    chk.add_argument("directory")
    chk.set_defaults(func=_check)
    _add_workshop_commands(commands)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
