"""The batch runner: the notebooks in order under papermill, a report, an exit code, and a
cleanup that runs whatever happens (failure, timeout, SIGINT or SIGTERM) unless asked not to.

Each notebook runs in its own papermill process (its own process group), so a timeout or a
signal can stop it without stopping the runner, which then runs the cleanup notebook.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from nbhelpers import catalog, tokens
from nbhelpers.errors import ConfigError
from nbhelpers.state import RunState, new_run_id

SETUP, CLEANUP = "00_setup.ipynb", "05_cleanup.ipynb"
NOTEBOOKS = (SETUP, "01_deploy_llama31_text.ipynb", "02_deploy_llama32_multimodal.ipynb",
             "03_openai_chat_inference.ipynb", "04_debugging.ipynb", CLEANUP)
TEXT, VISION, CHAT, DEBUG = NOTEBOOKS[1], NOTEBOOKS[2], NOTEBOOKS[3], NOTEBOOKS[4]
REHEARSAL_TOKEN = "hf_rehearsalOnlyNotARealToken"  # the emulator accepts any token
SETUP_KEYS = ("project", "region", "bucket_uri", "owner", "service_account")


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


@dataclass
class RunConfig:
    notebooks_dir: Path
    out_dir: Path
    _: KW_ONLY
    run_id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    matrix: list[dict[str, Any]] = field(default_factory=list)
    backend: str = "emulator"
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    keep: bool = False
    timeout_s: float | None = None
    parallel: int = 2
    progress: bool = True
    environment: dict[str, str] = field(default_factory=dict)


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


def parse_parameter_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A YAML mapping of notebook parameters; a `matrix` key lists per-model parameters."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of parameter names to values")
    matrix = data.pop("matrix", []) or []
    if not isinstance(matrix, list) or not all(isinstance(e, dict) and "MODEL" in e
                                               for e in matrix):
        raise ConfigError(f"{path}: matrix must be a list of mappings, each with a MODEL")
    return data, matrix


def check_parameters(parameters: dict[str, Any]) -> None:
    for name, value in parameters.items():
        if tokens.looks_like_secret(value):
            raise ConfigError(f"parameter {name} looks like a Hugging Face token; pass secrets "
                              "through the HF_TOKEN environment variable, never as a parameter")


def list_parameters(notebooks_dir: Path) -> str:
    """Each notebook's parameters with their types, defaults and help (papermill's reading)."""
    import papermill

    lines = []
    for name in NOTEBOOKS:
        lines.append(name)
        for param in papermill.inspect_notebook(str(notebooks_dir / name)).values():
            kind = param["inferred_type_name"]
            if kind in (None, "None"):
                try:
                    kind = type(ast.literal_eval(param["default"])).__name__
                except (ValueError, SyntaxError):
                    kind = "?"
            lines.append(f"  {param['name']}: {kind} (default {param['default']})  "
                         f"{param['help']}".rstrip())
    return "\n".join(lines)


def _selected(name: str, config: RunConfig) -> bool:
    def matches(patterns: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p) for p in patterns)

    if name == CLEANUP:
        return True  # cleanup is never skipped; --keep is how to keep resources
    return (not config.only or matches(config.only)) and not matches(config.skip)


def _entry_notebooks(model_name: str) -> list[str]:
    model = catalog.get_model(model_name)
    notebooks = [TEXT if model.family == "llama3.1" else VISION]
    return notebooks + ([CHAT] if model.instruct else [])


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


class Runner:
    def __init__(self, config: RunConfig):
        self.config = config
        self.run_id = config.run_id or new_run_id()
        self.run_dir = (config.out_dir / self.run_id).resolve()
        self.state_dir = self.run_dir / "state"
        self.stop = threading.Event()
        self.interrupted = False
        self._processes: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self.runs: list[NotebookRun] = []

    # --- one notebook ----------------------------------------------------------------------
    def _execute(self, run: NotebookRun, env: dict[str, str], *, cleanup: bool = False) -> None:
        if self.stop.is_set() and not cleanup:
            run.status = "skipped"
            return
        import papermill

        source = self.config.notebooks_dir / run.notebook
        accepted = papermill.inspect_notebook(str(source))
        chosen = {k: v for k, v in run.parameters.items() if k in accepted}
        run.output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            json.dump(chosen, handle)  # JSON is YAML
        command = [sys.executable, "-m", "papermill", str(source), str(run.output),
                   "-f", handle.name, "--kernel", "python3",
                   "--cwd", str(self.config.notebooks_dir), "--log-level", "WARNING",
                   "--progress-bar" if self.config.progress else "--no-progress-bar"]
        before = RunState(run.run_id, self.state_dir).get("results", {})
        started = time.monotonic()
        label = f"{run.notebook}{' [' + run.entry + ']' if run.entry else ''}"
        print(f"-> {label} (run {run.run_id})", flush=True)
        process = subprocess.Popen(command, env={**os.environ, **env}, start_new_session=True)
        with self._lock:
            self._processes.add(process)
        try:
            process.wait(timeout=self.config.timeout_s)
            run.status = "passed" if process.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            self._terminate(process)
            run.status = "timeout"
            run.error = f"stopped after the {self.config.timeout_s:.0f}s notebook timeout"
        finally:
            with self._lock:
                self._processes.discard(process)
            os.unlink(handle.name)
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
        print(f"{mark} {label:<48} {run.seconds:6.1f}s  {run.error}", flush=True)

    def _terminate(self, process: subprocess.Popen) -> None:
        """Stops papermill and its kernel: the whole process group, gently then firmly."""
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def interrupt(self, signum: int, _frame: Any) -> None:
        if self.stop.is_set():
            print("Cleanup is running; it deletes only what this run created.", flush=True)
            return
        print(f"\nReceived {signal.Signals(signum).name}: stopping the running notebook, then "
              "cleaning up.", flush=True)
        self.interrupted = True
        self.stop.set()
        with self._lock:
            running = list(self._processes)
        for process in running:
            threading.Thread(target=self._terminate, args=(process,), daemon=True).start()

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
        for notebook in [*_entry_notebooks(model), DEBUG]:
            if not _selected(notebook, self.config):
                continue
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
        config = self.config
        check_parameters(config.parameters)
        for entry in config.matrix:
            check_parameters(entry)
            catalog.get_model(str(entry.get("MODEL", "")))  # unknown models fail up front
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.base_env = {"NBHELPERS_BACKEND": config.backend,
                         "NBHELPERS_STATE_DIR": str(self.state_dir), **config.environment}
        emulator = None
        if config.backend == "emulator" and not self.base_env.get("NBHELPERS_EMULATOR_URL"):
            from nbhelpers.connection import start_emulator

            emulator = start_emulator(state_file=self.run_dir / "emulator-state.json")
            self.base_env["NBHELPERS_EMULATOR_URL"] = emulator.url
        if config.backend == "emulator":
            self.base_env.setdefault("HF_TOKEN", os.environ.get("HF_TOKEN") or REHEARSAL_TOKEN)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self.interrupt)
                        for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._run_all()
        finally:
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
            for notebook in NOTEBOOKS[:-1]:
                if not _selected(notebook, config) or (config.matrix and notebook != SETUP):
                    continue
                run = self._new(notebook, run_id=self.run_id, entry="",
                                parameters=config.parameters)
                if main_failed and notebook != DEBUG:  # after a failure, diagnose it
                    run.status = "skipped"
                    continue
                self._execute(run, self._env(self.run_id))
                main_failed = main_failed or not run.ok
            if config.matrix and not main_failed:
                with ThreadPoolExecutor(max_workers=max(1, config.parallel)) as pool:
                    list(pool.map(self._matrix_entry, config.matrix))
        finally:
            if not config.keep:
                self._execute(self._new(CLEANUP, run_id=self.run_id, entry="",
                                        parameters=config.parameters),
                              self._env(self.run_id), cleanup=True)


def run(config: RunConfig) -> RunReport:
    return Runner(config).run()


# --- reports ------------------------------------------------------------------------------
def _results_text(run: NotebookRun) -> str:
    shown = {k: v for k, v in run.results.items() if k in (
        "bucket", "service_account", "endpoint_id", "first_reply", "chat_reply", "diagnosis",
        "deleted")}
    return "; ".join(f"{k}={str(v)[:80]}" for k, v in shown.items())


def _rows(report: RunReport) -> list[list[str]]:
    return [[r.notebook + (f" [{r.entry}]" if r.entry else ""), r.status, f"{r.seconds:.1f}s",
             _results_text(r) if r.ok else (f"cell {r.cell}: " if r.cell is not None else "")
             + r.error, r.output.name] for r in report.runs]


def write_reports(report: RunReport) -> tuple[Path, Path]:
    """report.md and a self-contained report.html in the run's folder."""
    import html

    header = ["notebook", "status", "duration", "results / error", "executed notebook"]
    verdict = "PASSED" if report.ok else ("INTERRUPTED" if report.interrupted else "FAILED")
    failures = [r for r in report.runs if r.status in ("failed", "timeout", "interrupted")]
    md = [f"# Run {report.run_id}: {verdict}", "",
          f"backend: {report.backend} · folder: {report.run_dir}", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |"
           for row in _rows(report)]
    for r in failures:
        md += ["", f"**{r.notebook}** {r.status}"
               + (f" at cell {r.cell}" if r.cell is not None else "") + f": {r.error}"]
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
        f"<code>{html.escape(r.error)}</code></p>" for r in failures)
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
