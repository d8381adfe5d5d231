"""The batch runner: the notebooks in order under papermill, a report, an exit code, and a
cleanup that runs whatever happens (failure, timeout, SIGINT, SIGTERM or SIGHUP) unless asked
not to.

Bad input is refused with a ConfigError before anything starts (`run_config`): no run folder,
no emulator, no papermill. Each notebook runs in its own papermill process (its own session), so
a timeout or a signal can stop it without stopping the runner, which then runs the cleanup
notebook under a time limit of its own (it may have to wait out a deployment in progress). No
child outlives the runner (`child_processes`): each is stopped when the runner leaves, and on
Linux dies with it even when it is killed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbhelpers import catalog, tokens
from nbhelpers.child_processes import alive, child_setup, descendants, signal_group
from nbhelpers.run_config import (
    CLEANUP,
    DEBUG,
    RunConfig,
    entry_lessons,
    handed_parameters,
    main_lessons,
    notebook_parameters,
    validate_config,
)
from nbhelpers.state import RunState, new_run_id
from nbhelpers.tiny_llama import ENGINE_VARIABLE

REHEARSAL_TOKEN = "hf_rehearsalOnlyNotARealToken"  # the emulator accepts any token
SETUP_KEYS = ("project", "region", "bucket_uri", "owner", "service_account")
STOP_GRACE_S = 15.0  # a stopped notebook's time to end before SIGKILL
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


@dataclass(kw_only=True)
class NotebookRun:
    notebook: str
    run_id: str
    entry: str  # "" for the main run, the model for a matrix entry
    parameters: dict[str, Any]
    output: Path
    status: str = "pending"  # passed, failed, timeout, interrupted, skipped
    seconds: float = 0.0
    error: str = ""
    cell: int | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "passed"


@dataclass(kw_only=True)
class RunReport:
    run_id: str
    run_dir: Path
    backend: str
    runs: list[NotebookRun]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.ok or r.status == "skipped" for r in self.runs) \
            and any(r.ok for r in self.runs)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else (130 if self.interrupted else 1)


class Runner:
    def __init__(self, config: RunConfig):
        self.config = config
        self.run_id = config.run_id or new_run_id()
        self.stop = threading.Event()
        self.interrupted = False
        self._processes: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._output_lock = threading.RLock()  # taken in the signal handler too
        self._detached = False
        self.runs: list[NotebookRun] = []
        self.base_env: dict[str, str] = {}

    @property
    def run_dir(self) -> Path:
        return (Path(self.config.out_dir) / self.run_id).resolve()

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    # --- output that outlives the terminal ---------------------------------------------------
    def _say(self, text: str) -> None:
        """Prints; where the terminal is gone (after a hang-up writes fail), first moves this
        process's stdout and stderr, which later notebooks inherit, to runner.log in the run
        folder, so that neither the runner nor the cleanup notebook dies of a write."""
        try:
            print(text, flush=True)
            return
        except RuntimeError:  # reentrant: a signal handler interrupted a print to stdout
            pass
        except (OSError, ValueError):
            self._detach_output()
        with contextlib.suppress(OSError):
            os.write(1, f"{text}\n".encode())

    def _detach_output(self) -> None:
        with self._output_lock:
            if self._detached:
                return
            self._detached = True
            self.run_dir.mkdir(parents=True, exist_ok=True)
            log = os.open(self.run_dir / "runner.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                          0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
            os.write(1, f"{time.strftime('%H:%M:%S')} the terminal is gone; the run's output "
                        "goes on here\n".encode())

    # --- one notebook ----------------------------------------------------------------------
    def _execute(self, run: NotebookRun, env: dict[str, str], *, cleanup: bool = False) -> None:
        if self.stop.is_set() and not cleanup:
            run.status = "skipped"
            return
        notebooks_dir = Path(self.config.notebooks_dir)
        source = notebooks_dir / run.notebook
        accepted = notebook_parameters(notebooks_dir)[run.notebook]
        # validate_config made sure every name is taken by some notebook of the run
        chosen = handed_parameters(accepted, run.parameters)
        run.output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            json.dump(chosen, handle)  # JSON is YAML
        command = [sys.executable, "-m", "papermill", str(source), str(run.output),
                   "-f", handle.name, "--kernel", "python3",
                   "--cwd", str(notebooks_dir), "--log-level", "WARNING",
                   "--progress-bar" if self.config.progress else "--no-progress-bar"]
        limit_s = self.config.cleanup_timeout_s if cleanup else self.config.timeout_s
        before = RunState(run.run_id, self.state_dir).get("results", {})
        started = time.monotonic()
        label = f"{run.notebook}{' [' + run.entry + ']' if run.entry else ''}"
        self._say(f"-> {label} (run {run.run_id})")
        try:
            process = subprocess.Popen(command, env={**os.environ, **env},
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       preexec_fn=child_setup())
        except BaseException:
            os.unlink(handle.name)
            raise
        with self._lock:
            self._processes.add(process)
        try:
            run.status = self._wait(process, limit_s=limit_s, cleanup=cleanup)
        except BaseException:
            self._terminate(process)
            raise
        finally:
            with self._lock:
                self._processes.discard(process)
            os.unlink(handle.name)
        if run.status == "timeout":
            run.error = (f"stopped after the {limit_s:.0f}s cleanup timeout (--cleanup-timeout)"
                         if cleanup else f"stopped after the {limit_s:.0f}s notebook timeout")
        if self.stop.is_set() and run.status != "passed" and not cleanup:
            run.status = "interrupted"
        run.seconds = time.monotonic() - started
        if run.status != "passed":
            run.cell, error = _failure(run.output)
            run.error = tokens.redact(error or run.error or f"papermill exited "
                                      f"{process.returncode}")
        after = RunState(run.run_id, self.state_dir).get("results", {})
        run.results = {k: v for k, v in after.items() if before.get(k) != v}
        mark = {"passed": "ok  "}.get(run.status, run.status.upper()[:4])
        self._say(f"{mark} {label:<48} {run.seconds:6.1f}s  {run.error}")
        if cleanup and run.status != "passed" and self.config.backend == "vertex":
            self._say(f"!!  run {run.run_id}'s resources may still be billed: "
                      f"{_cleanup_command(run.run_id, self.config.backend)}")

    def _wait(self, process: subprocess.Popen, *, limit_s: float | None, cleanup: bool) -> str:
        """Waits for papermill and says how it ended; stops it when its time limit passes or,
        for a lesson, when a signal stops the run. The thread that started it does this."""
        deadline = math.inf if limit_s is None else time.monotonic() + limit_s
        while True:
            try:
                process.wait(timeout=min(0.25, max(0.0, deadline - time.monotonic())))
                return "passed" if process.returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                pass
            if self.stop.is_set() and not cleanup:
                self._terminate(process)
                return "interrupted"
            if time.monotonic() >= deadline:
                self._terminate(process)
                return "timeout"

    def _terminate(self, process: subprocess.Popen) -> None:
        """Stops papermill, its process group and its kernel: SIGTERM, then SIGKILL after a
        grace period. jupyter_client starts the kernel in a session of its own, which papermill's
        group misses, and a kernel left running could go on to deploy while the cleanup notebook
        runs: it is found first, and waited for too."""
        kernels = descendants(process.pid)
        signal_group(process.pid, signal.SIGTERM)
        for pid in kernels:
            signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
        while any(alive(pid) for pid in kernels) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in kernels:
            if alive(pid):
                signal_group(pid, signal.SIGKILL)

    def _stop_children(self) -> None:
        """Whatever papermill still runs when the runner leaves, for any reason, is stopped."""
        with self._lock:
            running = list(self._processes)
        for process in running:
            self._terminate(process)

    def interrupt(self, signum: int, _frame: Any) -> None:
        """SIGINT, SIGTERM, SIGHUP: the running lessons stop (their threads see `stop`), then
        the cleanup notebook runs. Runs in the main thread, between its bytecodes: it only
        prints and sets flags."""
        if self.stop.is_set():
            self._say("Cleanup is running; it deletes only what this run created.")
            return
        self._say(f"\nReceived {signal.Signals(signum).name}: stopping the running notebook, "
                  "then cleaning up.")
        self.interrupted = True
        self.stop.set()

    # --- the whole run ---------------------------------------------------------------------
    def _new(self, notebook: str, *, run_id: str, entry: str, parameters: dict[str, Any],
             suffix: str = "") -> NotebookRun:
        output = self.run_dir / (f"{Path(notebook).stem}{suffix}.ipynb")
        run = NotebookRun(notebook=notebook, run_id=run_id, entry=entry, parameters=parameters,
                          output=output)
        self.runs.append(run)
        return run

    def _env(self, run_id: str) -> dict[str, str]:
        return {**self.base_env, "NBHELPERS_RUN_ID": run_id}

    def _matrix_entry(self, entry: dict[str, Any]) -> None:
        model = str(entry["MODEL"])
        slug = catalog.get_model(model).slug
        run_id = f"{self.run_id}-{slug}"
        base = RunState(self.run_id, self.state_dir)  # setup's choices carry over
        entry_state = RunState(run_id, self.state_dir)
        entry_state.data.update({k: base.get(k) for k in SETUP_KEYS if base.get(k)})
        entry_state.save()
        parameters = {**self.config.parameters, **entry}
        failed = False
        for notebook in entry_lessons(model, self.config):
            run = self._new(notebook, run_id=run_id, entry=model, parameters=parameters,
                            suffix=f"-{slug}")
            if failed and notebook != DEBUG:
                run.status = "skipped"
                continue
            self._execute(run, self._env(run_id))
            failed = failed or not run.ok
        if not self.config.keep:
            self._execute(self._new(CLEANUP, run_id=run_id, entry=model, parameters=parameters,
                                    suffix=f"-{slug}"),
                          self._env(run_id), cleanup=True)

    def run(self) -> RunReport:
        """Validates the configuration (a ConfigError before anything exists), then runs."""
        config = self.config
        validate_config(config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.base_env = {"NBHELPERS_BACKEND": config.backend,
                         "NBHELPERS_STATE_DIR": str(self.state_dir), **config.environment}
        if config.engine != "rehearsal":  # kernels that start an emulator of their own use it
            self.base_env[ENGINE_VARIABLE] = config.engine
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self.interrupt) for s in STOP_SIGNALS}
        emulator = None
        try:
            if config.backend == "emulator" and not self.base_env.get("NBHELPERS_EMULATOR_URL"):
                from nbhelpers.connection import start_emulator

                emulator = start_emulator(state_file=self.run_dir / "emulator-state.json",
                                          engine=config.engine)
                self.base_env["NBHELPERS_EMULATOR_URL"] = emulator.url
            if config.backend == "emulator":
                self.base_env.setdefault("HF_TOKEN", os.environ.get("HF_TOKEN")
                                         or REHEARSAL_TOKEN)
            self._run_all()
        finally:
            self._stop_children()
            for signum, previous in handlers.items():
                signal.signal(signum, previous)
            if emulator is not None:
                emulator.stop()
        report = RunReport(run_id=self.run_id, run_dir=self.run_dir, backend=config.backend,
                           runs=self.runs, interrupted=self.interrupted)
        write_reports(report)
        return report

    def _run_all(self) -> None:
        config = self.config
        main_failed = False
        try:
            for notebook in main_lessons(config):
                run = self._new(notebook, run_id=self.run_id, entry="",
                                parameters=config.parameters)
                if main_failed and notebook != DEBUG:  # after a failure, diagnose it
                    run.status = "skipped"
                    continue
                self._execute(run, self._env(self.run_id))
                main_failed = main_failed or not run.ok
            if config.matrix and not main_failed:
                with ThreadPoolExecutor(max_workers=config.parallel) as pool:
                    list(pool.map(self._matrix_entry, config.matrix))
        finally:
            if not config.keep:
                self._execute(self._new(CLEANUP, run_id=self.run_id, entry="",
                                        parameters=config.parameters),
                              self._env(self.run_id), cleanup=True)


def run(config: RunConfig) -> RunReport:
    """Runs the notebooks of `config`; a ConfigError, before anything starts, on bad input."""
    return Runner(config).run()


def _cleanup_command(run_id: str, backend: str) -> str:
    return f"python -m nbhelpers cleanup --run-id {run_id} --backend {backend}"


def _failure(output: Path) -> tuple[int | None, str]:
    """The failing cell of an executed notebook and its error, as papermill saved them."""
    try:
        cells = json.loads(output.read_text())["cells"]
    except (OSError, ValueError):
        return None, ""
    for index, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return index, f"{out.get('ename')}: {out.get('evalue')}"
    return None, ""


# --- reports ------------------------------------------------------------------------------
def _results_text(run: NotebookRun) -> str:
    picked = {k: v for k, v in run.results.items() if k in (
        "bucket", "service_account", "hourly_cost", "endpoint_id", "first_reply", "chat_reply",
        "diagnosis", "deleted")}
    return "; ".join(f"{k}={str(v)[:80]}" for k, v in picked.items())


def _rows(report: RunReport) -> list[list[str]]:
    return [[r.notebook + (f" [{r.entry}]" if r.entry else ""), r.status, f"{r.seconds:.1f}s",
             _results_text(r) if r.ok else (f"cell {r.cell}: " if r.cell is not None else "")
             + r.error, r.output.name] for r in report.runs]


def write_reports(report: RunReport) -> tuple[Path, Path]:
    """report.md and a self-contained report.html in the run's folder."""
    import html

    header = ["notebook", "status", "duration", "results / error", "executed notebook"]
    failures = [r for r in report.runs if r.status in ("failed", "timeout", "interrupted")]
    verdict = "PASSED" if report.ok else "INTERRUPTED" if report.interrupted \
        else "TIMEOUT" if any(r.status == "timeout" for r in failures) else "FAILED"
    unclean = [r for r in failures if r.notebook == CLEANUP] if report.backend == "vertex" \
        else []  # the emulator bills nothing
    md = [f"# Run {report.run_id}: {verdict}", "",
          f"backend: {report.backend} · folder: {report.run_dir}", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |"
           for row in _rows(report)]
    for r in failures:
        md += ["", f"**{r.notebook}** {r.status}"
               + (f" at cell {r.cell}" if r.cell is not None else "") + f": {r.error}"]
    for r in unclean:
        md += ["", f"**Resources of run {r.run_id} may still be billed**: its cleanup "
               f"{r.status}; run `{_cleanup_command(r.run_id, report.backend)}`"]
    md_path = report.run_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n")
    colour = {"passed": "#d8f5d8", "skipped": "#eeeeee"}
    body = "".join(
        f"<tr style='background:{colour.get(row[1], '#f9d6d5')}'>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in row[:-1])
        + f"<td><a href='{html.escape(row[-1])}'>{html.escape(row[-1])}</a></td></tr>"
        for row in _rows(report))
    failure_html = "".join(
        f"<p><b>{html.escape(r.notebook)}</b> {r.status}"
        f"{' at cell ' + str(r.cell) if r.cell is not None else ''}: "
        f"<code>{html.escape(r.error)}</code></p>" for r in failures) + "".join(
        f"<p><b>Resources of run {html.escape(r.run_id)} may still be billed</b>: its cleanup "
        f"{r.status}; run <code>{html.escape(_cleanup_command(r.run_id, report.backend))}"
        "</code></p>" for r in unclean)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Run {html.escape(report.run_id)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:left;vertical-align:top}"
        "</style></head><body>"
        f"<h1>Run {html.escape(report.run_id)}: {verdict}</h1>"
        f"<p>backend: {html.escape(report.backend)} · folder: "
        f"{html.escape(str(report.run_dir))}</p><table><tr>"
        + "".join(f"<th>{h}</th>" for h in header) + f"</tr>{body}</table>{failure_html}"
        "</body></html>")
    html_path = report.run_dir / "report.html"
    html_path.write_text(tokens.redact(page))
    return md_path, html_path
