"""The batch runner: the notebooks in order under papermill, a report, an exit code, and a
cleanup that runs whatever happens (failure, timeout, SIGINT, SIGTERM or SIGHUP) unless asked
not to.

Bad input is refused with a ConfigError before anything starts: no run folder, no emulator, no
papermill. Each notebook runs in its own papermill process (its own session), so a timeout or a
signal can stop it without stopping the runner, which then runs the cleanup notebook under a
time limit of its own (it may have to wait out a deployment in progress). No child outlives the
runner: each is stopped when the runner leaves, and on Linux dies with it even when it is killed.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import functools
import json
import math
import os
import reprlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from nbhelpers import catalog, tokens, validate
from nbhelpers.errors import ConfigError, choices
from nbhelpers.releases import DEPLOYMENT_TIMEOUT_S
from nbhelpers.state import RunState, new_run_id

SETUP, CLEANUP = "00_setup.ipynb", "05_cleanup.ipynb"
NOTEBOOKS = (SETUP, "01_deploy_llama31_text.ipynb", "02_deploy_llama32_multimodal.ipynb",
             "03_openai_chat_inference.ipynb", "04_debugging.ipynb", CLEANUP)
TEXT, VISION, CHAT, DEBUG = NOTEBOOKS[1], NOTEBOOKS[2], NOTEBOOKS[3], NOTEBOOKS[4]
REHEARSAL_TOKEN = "hf_rehearsalOnlyNotARealToken"  # the emulator accepts any token
SETUP_KEYS = ("project", "region", "bucket_uri", "owner", "service_account")
BACKENDS = ("emulator", "vertex")
# The cleanup notebook may first have to wait for a deployment in progress to end (Vertex AI
# deletes nothing while one runs), then undeploy and delete: the container's time-out and a margin.
CLEANUP_MARGIN_S = 600.0
DEFAULT_CLEANUP_TIMEOUT_S = DEPLOYMENT_TIMEOUT_S + CLEANUP_MARGIN_S
MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week; more is a slip of units, and GPUs bill by the hour
MAX_PARALLEL = 32  # each matrix entry is a billed deployment and a kernel on this machine
# A matrix entry's run id is "<run id>-<model slug>" (slugs have up to 29 characters), and a run
# id has at most 63 (validate.run_id): the notebooks of a longer entry would refuse it.
MAX_RUN_ID = 32
STOP_GRACE_S = 15.0  # a stopped notebook's time to end before SIGKILL
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, name))
_INT64 = 2 ** 63  # notebook integers end in Vertex AI and vLLM fields of 64 bits at most
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}

_shown = reprlib.Repr()  # bad values in messages, cut short
_shown.maxstring = _shown.maxother = 80
_shown.maxlong = 40


def shown(value: Any) -> str:
    """A value as error messages show it: its repr, cut to about 80 characters."""
    return _shown.repr(value)


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
    timeout_s: float | None = None  # each lesson notebook; None: no limit
    cleanup_timeout_s: float = DEFAULT_CLEANUP_TIMEOUT_S  # the cleanup notebook
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


# --- parameters: what the notebooks take, and the file and command line that give them ---------
@dataclass(frozen=True, kw_only=True)
class ParameterSpec:
    """One parameter as a notebook's `parameters` cell declares it."""

    notebook: str
    name: str
    default: str  # the default's source text
    kind: type | None  # the default's type (bool, int, float, str); None when not a literal

    def refusal(self, value: Any) -> str | None:
        """Why `value` does not fit this parameter, or None when it does."""
        kind = self.kind
        number = isinstance(value, int | float) and not isinstance(value, bool)
        in_range = not isinstance(value, int) or -_INT64 <= value < _INT64
        if kind is None:
            return None
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = number and isinstance(value, int) and in_range
        elif kind is float:
            ok = number and in_range and math.isfinite(value)
        else:
            ok = isinstance(value, str) and _is_text(value)
        if ok:
            return None
        takes = _KINDS[kind]
        if number and not in_range:
            takes += " within a 64-bit integer"
        elif kind is float and number:
            takes = "a finite number"
        elif kind is str and isinstance(value, str):
            takes += " of valid Unicode text"
        elif kind is str and isinstance(value, int | float):  # bools too: YAML's yes and no
            takes += " (quote it in YAML: '...')"
        return f"{self.notebook} declares {self.name} = {self.default}, so it takes {takes}"


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")  # a lone surrogate can't reach the notebook
        return True
    except UnicodeEncodeError:
        return False


def _literal_kind(source: str) -> type | None:
    try:
        kind = type(ast.literal_eval(source))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return kind if kind in _KINDS else None


_inspected: dict[tuple[str, tuple[int, ...]], dict[str, dict[str, ParameterSpec]]] = {}


def notebook_parameters(notebooks_dir: Path) -> dict[str, dict[str, ParameterSpec]]:
    """Each notebook's parameters, by notebook then name: papermill's reading of the
    `parameters` cells, done once per version of the files."""
    import papermill

    paths = [Path(notebooks_dir) / name for name in NOTEBOOKS]
    try:
        missing = [path.name for path in paths if not path.is_file()]
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        raise ConfigError(f"--notebooks {shown(str(notebooks_dir))} is not a usable folder: "
                          f"{getattr(err, 'strerror', None) or err}") from None
    if missing:
        raise ConfigError(f"{notebooks_dir} lacks {choices(missing)}: the notebooks folder "
                          f"(--notebooks) must hold {choices(NOTEBOOKS)}")
    key = (str(Path(notebooks_dir).resolve()), tuple(p.stat().st_mtime_ns for p in paths))
    if key not in _inspected:
        specs: dict[str, dict[str, ParameterSpec]] = {}
        for path in paths:
            try:
                inspected = papermill.inspect_notebook(str(path))
            except Exception as err:  # nbformat and papermill raise many kinds for a bad file
                raise ConfigError(f"cannot read the parameters of {path}: {err}") from err
            specs[path.name] = {
                name: ParameterSpec(notebook=path.name, name=name, default=param["default"],
                                    kind=_literal_kind(param["default"]))
                for name, param in inspected.items()}
        _inspected[key] = specs
    return _inspected[key]


def _file_problem(path: Path, text: str, err: Exception) -> str:
    """Where and what the YAML error is: the file, its line and column, the problem."""
    import yaml

    mark, problem = None, str(err)
    if isinstance(err, yaml.MarkedYAMLError):
        mark, problem = err.problem_mark or err.context_mark, err.problem or err.context or ""
    elif isinstance(err, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, err.position) + 1
        char = chr(err.character) if isinstance(err.character, int) else err.character
        return f"{path}, line {line}: not valid YAML: character {char!r} is not allowed"
    if mark is None:
        return f"{path}: not valid YAML: {problem}"
    return f"{path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}"


def parse_parameter_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A YAML mapping of notebook parameters; a `matrix` key lists per-model parameters. The
    names and values are checked with the run's other settings (validate_config)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"parameters file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"parameters file {path} is a folder, not a YAML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"parameters file {path} is not UTF-8 text (byte {err.start} can't "
                          "be read); save it as UTF-8 YAML") from None
    except OSError as err:
        raise ConfigError(f"cannot read parameters file {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(_file_problem(path, text, err)) from None
    except RecursionError:
        raise ConfigError(f"parameters file {path} nests too deeply to be parameters") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of parameter names to values, not "
                          f"{type(data).__name__} {shown(data)}")
    for name in data:
        if not isinstance(name, str):
            raise ConfigError(f"{path}: parameter name {shown(name)} is not a name; write "
                              "NAME: value, with NAME one of `python -m nbhelpers run --list`")
    matrix = data.pop("matrix", None)
    matrix = [] if matrix is None else matrix
    if not isinstance(matrix, list):
        raise ConfigError(f"{path}: matrix must be a list of mappings, each with a MODEL; "
                          f"found {type(matrix).__name__} {shown(matrix)}")
    for number, entry in enumerate(matrix, 1):
        if not isinstance(entry, dict) or "MODEL" not in entry:
            raise ConfigError(f"{path}: matrix entry {number} ({shown(entry)}) is not valid: "
                              "matrix must be a list of mappings, each with a MODEL")
    return data, matrix


def parse_cli_value(notebooks_dir: Path, name: str, raw: str) -> Any:
    """A `-p NAME VALUE` value: as typed where every notebook declares NAME a string (papermill's
    -r, so `-p PROMPT yes` stays "yes" and `-p ENDPOINT_ID 123` "123"), else read as YAML (20 a
    number, true a boolean)."""
    import yaml

    kinds = {specs[name].kind for specs in notebook_parameters(notebooks_dir).values()
             if name in specs}
    if kinds == {str}:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"-p {name} {shown(raw)}: the value is not valid YAML "
                          f"({getattr(err, 'problem', None) or err})") from None


def check_parameters(parameters: Mapping[Any, Any]) -> None:
    for name, value in parameters.items():
        if tokens.looks_like_secret(value):
            raise ConfigError(f"parameter {name} looks like a Hugging Face token; pass secrets "
                              "through the HF_TOKEN environment variable, never as a parameter")


def list_parameters(notebooks_dir: Path) -> str:
    """Each notebook's parameters with their types, defaults and help (papermill's reading)."""
    import papermill

    notebook_parameters(notebooks_dir)  # a missing notebook is a ConfigError, not a traceback
    lines = []
    for name in NOTEBOOKS:
        lines.append(name)
        for param in papermill.inspect_notebook(str(Path(notebooks_dir) / name)).values():
            kind = param["inferred_type_name"]
            if kind in (None, "None"):
                try:
                    kind = type(ast.literal_eval(param["default"])).__name__
                except (ValueError, SyntaxError):
                    kind = "?"
            lines.append(f"  {param['name']}: {kind} (default {param['default']})  "
                         f"{param['help']}".rstrip())
    return "\n".join(lines)


# --- which notebooks run, and with what -----------------------------------------------------------
def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.startswith(pattern)


def _selected(name: str, config: RunConfig) -> bool:
    if name == CLEANUP:
        return True  # cleanup is never skipped; --keep is how to keep resources
    return ((not config.only or any(_matches(name, p) for p in config.only))
            and not any(_matches(name, p) for p in config.skip))


def _entry_notebooks(model_name: str) -> list[str]:
    model = catalog.get_model(model_name)
    notebooks = [TEXT if model.family == "llama3.1" else VISION]
    return notebooks + ([CHAT] if model.instruct else [])


def _main_lessons(config: RunConfig) -> list[str]:
    """The main run's notebooks before cleanup; with a matrix, only setup (entries do the rest)."""
    return [name for name in NOTEBOOKS[:-1]
            if _selected(name, config) and (not config.matrix or name == SETUP)]


def _entry_lessons(model: str, config: RunConfig) -> list[str]:
    """A matrix entry's notebooks before its cleanup."""
    return [name for name in [*_entry_notebooks(model), DEBUG] if _selected(name, config)]


@dataclass(frozen=True, kw_only=True)
class Handed:
    """A set of parameters the run hands to notebooks: the main run's or a matrix entry's."""

    entry: str  # "" for the main run, the model for a matrix entry
    own: Mapping[str, Any]  # the names it gives itself: the run's, or the entry's
    parameters: dict[str, Any]  # what its notebooks get (an entry's over the run's)
    notebooks: list[str]


def planned_notebooks(config: RunConfig) -> list[Handed]:
    """What the run hands to which notebooks: the main run, then each matrix entry."""
    cleanup = [] if config.keep else [CLEANUP]
    planned = [Handed(entry="", own=config.parameters, parameters=dict(config.parameters),
                      notebooks=_main_lessons(config) + cleanup)]
    for entry in config.matrix:
        model = str(entry["MODEL"])
        planned.append(Handed(entry=model, own=entry, parameters={**config.parameters, **entry},
                              notebooks=_entry_lessons(model, config) + cleanup))
    return planned


# --- refusing bad input before anything starts ----------------------------------------------------
def _check_seconds(option: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0 < value <= MAX_TIMEOUT_S:  # nan and inf fail the comparison too
        raise ConfigError(f"{option} must be a finite number of seconds above 0 and at most "
                          f"{MAX_TIMEOUT_S:.0f} (a week){', or none' if optional else ''}; "
                          f"got {shown(value)}")


def _check_notebook_patterns(option: str, values: Any) -> None:
    if isinstance(values, str | bytes) or not isinstance(values, tuple | list):
        raise ConfigError(f"{option} takes a list of notebook names or prefixes, not "
                          f"{shown(values)}; the notebooks: {choices(NOTEBOOKS)}")
    for value in values:
        matched = [name for name in NOTEBOOKS
                   if isinstance(value, str) and value and _matches(name, value)]
        if not matched:
            close = []
            if isinstance(value, str) and value:
                close = difflib.get_close_matches(value, {n[:len(value)] for n in NOTEBOOKS}, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{option} {shown(value)} matches no notebook{hint}; give a name "
                              f"or the start of one: {choices(NOTEBOOKS)}")
        if option == "--skip" and matched == [CLEANUP]:
            raise ConfigError(f"--skip {shown(value)} names only the cleanup notebook, which "
                              "always runs; --keep keeps the run's resources (billed until "
                              "deleted)")


def _check_run_id(run_id: Any) -> None:
    if run_id == "":
        return  # a new one
    try:
        validate.run_id(run_id)
        if "\n" in run_id:  # validate's pattern ends in $, which lets a final newline through
            raise ConfigError(f"invalid run id {run_id!r}: it holds a line break")
    except ConfigError as err:
        raise ConfigError(f"--run-id: {err}") from None
    if len(run_id) > MAX_RUN_ID:
        raise ConfigError(f"--run-id {shown(run_id)} has {len(run_id)} characters; at most "
                          f"{MAX_RUN_ID}, as a matrix entry's run id adds '-' and the model "
                          "(up to 30 more) and a run id has at most 63")


def _check_options(config: RunConfig) -> None:
    for option, folder in (("--notebooks", config.notebooks_dir), ("--out", config.out_dir)):
        if not isinstance(folder, str | os.PathLike) or not str(folder):
            raise ConfigError(f"{option} must be a folder path, not {shown(folder)}")
    try:
        if Path(config.out_dir).exists() and not Path(config.out_dir).is_dir():
            raise ConfigError(f"--out {config.out_dir} is a file; give a folder for the runs")
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        raise ConfigError(f"--out {shown(str(config.out_dir))} is not a usable folder: "
                          f"{getattr(err, 'strerror', None) or err}") from None
    _check_run_id(config.run_id)
    if not isinstance(config.backend, str) or config.backend not in BACKENDS:
        raise ConfigError(f"--backend {shown(config.backend)} is not one of "
                          f"{choices(BACKENDS)}")
    _check_seconds("--timeout", config.timeout_s, optional=True)
    _check_seconds("--cleanup-timeout", config.cleanup_timeout_s)
    parallel = config.parallel
    if not isinstance(parallel, int) or isinstance(parallel, bool) \
            or not 1 <= parallel <= MAX_PARALLEL:
        raise ConfigError(f"--parallel must be a whole number from 1 to {MAX_PARALLEL} (matrix "
                          f"entries at once); got {shown(parallel)}")
    _check_notebook_patterns("--only", config.only)
    _check_notebook_patterns("--skip", config.skip)
    for option, flag in (("--keep", config.keep), ("--no-progress (progress)", config.progress)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{option} must be True or False, not {shown(flag)}")
    environment = config.environment
    if not isinstance(environment, Mapping) or not all(
            isinstance(k, str) and k and "=" not in k and "\0" not in k
            and isinstance(v, str) and "\0" not in v for k, v in environment.items()):
        raise ConfigError(f"environment must map variable names to strings; got "
                          f"{shown(environment)}")


def _check_parameter_sets(config: RunConfig) -> None:
    """The parameters and matrix themselves: shapes, secrets and models."""
    if not isinstance(config.parameters, Mapping):
        raise ConfigError(f"parameters must be a mapping of names to values, not "
                          f"{shown(config.parameters)}")
    check_parameters(config.parameters)
    matrix = config.matrix
    if isinstance(matrix, str | bytes | Mapping) or not isinstance(matrix, list | tuple):
        raise ConfigError(f"matrix must be a list of mappings, each with a MODEL; got "
                          f"{shown(matrix)}")
    slugs: dict[str, str] = {}
    for number, entry in enumerate(matrix, 1):
        if not isinstance(entry, Mapping) or "MODEL" not in entry:
            raise ConfigError(f"matrix entry {number} ({shown(entry)}) is not valid: the matrix "
                              "must be a list of mappings, each with a MODEL")
        model = entry["MODEL"]
        if not isinstance(model, str):
            raise ConfigError(f"matrix entry {number}: MODEL {shown(model)} is not a model name; "
                              f"choose one of {choices(m.name for m in catalog.models())}")
        check_parameters(entry)
        try:
            slug = catalog.get_model(model).slug
        except ConfigError as err:
            raise ConfigError(f"matrix entry {number}: {err}") from None
        if slug in slugs:
            raise ConfigError(f"matrix entries {slugs[slug]} and {number} both name MODEL "
                              f"{model}; each model runs once, under its own run id")
        slugs[slug] = str(number)


def _check_names_and_values(config: RunConfig) -> None:
    """Each parameter name is taken by a notebook of the run, and each value fits the type
    every notebook that takes it declares."""
    specs = notebook_parameters(config.notebooks_dir)
    planned = planned_notebooks(config)
    everywhere = {name for handed in planned for nb in handed.notebooks for name in specs[nb]}
    for handed in planned:
        where = f" (matrix entry MODEL {handed.entry})" if handed.entry else ""
        taken = {name for nb in handed.notebooks for name in specs[nb]} if handed.entry \
            else everywhere  # the run's parameters reach the entries' notebooks too
        for name in handed.own:
            if name not in taken and not (handed.entry and name == "MODEL"):  # the runner's
                _refuse_name(name, where, taken, specs)
        for name, value in handed.parameters.items():
            for notebook in handed.notebooks:
                spec = specs[notebook].get(name)
                reason = spec.refusal(value) if spec else None
                if reason:
                    at = where if name in handed.own else ""
                    raise ConfigError(f"parameter {name}={shown(value)}{at} does not fit: "
                                      f"{reason}")


def _refuse_name(name: Any, where: str, taken: set[str],
                 specs: dict[str, dict[str, ParameterSpec]]) -> None:
    listed = ", ".join(sorted(taken))
    elsewhere = [nb for nb, names in specs.items() if isinstance(name, str) and name in names]
    if elsewhere:
        raise ConfigError(
            f"parameter {name}{where} is taken only by {choices(elsewhere)}, which "
            f"{'this entry' if where else 'this run'} does not run (see --only, --skip, --keep, "
            f"and which notebooks a matrix model runs); its notebooks take: {listed}")
    close = difflib.get_close_matches(name, taken, 1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"unknown parameter {shown(name)}{where}{hint}; the notebooks of "
                      f"{'this entry' if where else 'this run'} take: {listed}")


def validate_config(config: RunConfig) -> None:
    """Refuses, with a ConfigError that names the option or parameter and the valid choices,
    what would fail or do the wrong thing once started. Reads only the notebooks' `parameters`
    cells: nothing is created, nothing is started."""
    _check_options(config)
    _check_parameter_sets(config)
    _check_names_and_values(config)


# --- children: started to die with the runner, stopped with their kernels ------------------------
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl() -> Any:
    """libc's prctl on Linux, else None; loaded before any fork, so children only call it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _child_setup() -> Callable[[], None] | None:
    """A preexec_fn that has Linux send the child SIGTERM when its parent dies, even by SIGKILL:
    papermill runs in a session of its own, which nothing else would reach. The signal follows
    the thread that forked, so each child is started and waited for by one thread."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent, term = os.getpid(), int(signal.SIGTERM)

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, term, 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), term)

    return setup


def _proc_stat(pid: int) -> list[str] | None:
    """The fields after the command name in /proc/PID/stat (state, parent, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None


def _descendants(pid: int) -> list[int]:
    """pid's children, their children and so on (from /proc on Linux; elsewhere none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        fields = _proc_stat(entry)
        if fields and len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(entry)
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _alive(pid: int) -> bool:
    if os.path.isdir("/proc"):
        fields = _proc_stat(pid)
        return fields is not None and bool(fields) and fields[0] != "Z"  # a zombie has ended
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _signal_group(pid: int, signum: int) -> None:
    """Signals pid's process group where pid leads one (papermill and kernels lead their own
    sessions), else pid alone; never the runner's own group."""
    try:
        group = os.getpgid(pid)
        if group == pid and group != os.getpgrp():
            os.killpg(group, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


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
        chosen = {k: v for k, v in run.parameters.items() if k in accepted}
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
                                       preexec_fn=_child_setup())
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
        kernels = _descendants(process.pid)
        _signal_group(process.pid, signal.SIGTERM)
        for pid in kernels:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        while any(_alive(pid) for pid in kernels) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in kernels:
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)

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
        for notebook in _entry_lessons(model, self.config):
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
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self.interrupt) for s in _STOP_SIGNALS}
        emulator = None
        try:
            if config.backend == "emulator" and not self.base_env.get("NBHELPERS_EMULATOR_URL"):
                from nbhelpers.connection import start_emulator

                emulator = start_emulator(state_file=self.run_dir / "emulator-state.json")
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
            for notebook in _main_lessons(config):
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
        "bucket", "service_account", "endpoint_id", "first_reply", "chat_reply", "diagnosis",
        "deleted")}
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
