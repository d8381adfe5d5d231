"""What a batch run is asked to do, checked before anything starts: the notebooks and the
parameters each takes (read from the notebooks themselves), the options, the parameters file and
the matrix. A bad value is a ConfigError naming it, before any run folder, emulator or papermill
exists."""

from __future__ import annotations

import ast
import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from nbhelpers import catalog, prices, tokens, validate
from nbhelpers.checks import shown
from nbhelpers.errors import ConfigError, choices
from nbhelpers.limits import DEDICATED_MAX_INFERENCE_TIMEOUT_S
from nbhelpers.model_garden import DEPLOY_WITH
from nbhelpers.releases import DEPLOYMENT_TIMEOUT_S, RELEASES
from nbhelpers.tiny_llama import ENGINES

SETUP, CLEANUP = "00_setup.ipynb", "05_cleanup.ipynb"
NOTEBOOKS = (SETUP, "01_deploy_llama31_text.ipynb", "02_deploy_llama32_multimodal.ipynb",
             "03_openai_chat_inference.ipynb", "04_debugging.ipynb", CLEANUP)
TEXT, VISION, CHAT, DEBUG = NOTEBOOKS[1], NOTEBOOKS[2], NOTEBOOKS[3], NOTEBOOKS[4]
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
# What a batch run hands every notebook that takes it, unless the run's parameters say
# otherwise: starting a run (the runner, or a test's papermill run) is the confirmation the
# deploy notebooks ask for before billing (CONFIRM_DEPLOY is False in the notebooks, so that
# "Run all" in Jupyter or Colab bills nothing by surprise); -p CONFIRM_DEPLOY false plans only.
RUNNER_PARAMETERS: dict[str, Any] = {"CONFIRM_DEPLOY": True}
_INT64 = 2 ** 63  # notebook integers end in Vertex AI and vLLM fields of 64 bits at most
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


@dataclass
class RunConfig:
    notebooks_dir: Path
    out_dir: Path
    _: KW_ONLY
    run_id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    matrix: list[dict[str, Any]] = field(default_factory=list)
    backend: str = "emulator"
    engine: str = "rehearsal"  # what the emulator's replicas answer from (tiny_llama.ENGINES)
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    keep: bool = False
    timeout_s: float | None = None  # each lesson notebook; None: no limit
    cleanup_timeout_s: float = DEFAULT_CLEANUP_TIMEOUT_S  # the cleanup notebook
    parallel: int = 2
    progress: bool = True
    environment: dict[str, str] = field(default_factory=dict)


# --- parameters: what the notebooks take, and the file and command line that give them ---------
@dataclass(frozen=True, kw_only=True)
class ParameterSpec:
    """One parameter as a notebook's `parameters` cell declares it."""

    notebook: str
    name: str
    default: str  # the default's source text
    kind: type | None  # the default's type (bool, int, float, str); None when not a literal
    type_name: str  # the type `--list` shows: papermill's reading, else the default's
    help: str  # the `# @param` comment, as papermill reads it

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


def _one_of(allowed: tuple[str, ...], what: str) -> Callable[[Any], str | None]:
    return lambda value: None if value in allowed else f"{what}: one of {choices(allowed)}"


def _max_hourly_cost(value: Any) -> str | None:
    try:
        prices.check_max_hourly_cost(value)  # the plan's own rule, so the two never differ
    except ConfigError as err:
        return str(err)
    return None


def _inference_timeout(value: Any) -> str | None:
    if 0 <= value <= DEDICATED_MAX_INFERENCE_TIMEOUT_S:
        return None
    return (f"seconds a dedicated endpoint waits for a prediction, 0 (Google's default) to "
            f"{DEDICATED_MAX_INFERENCE_TIMEOUT_S}")


# The values of the deploy notebooks' parameters the runner can check without the model, by the
# package's own tables, so that a misspelt tag or a negative cost stops the run before setup
# starts rather than in a deploy notebook's plan cell minutes later. Each rule sees a value of
# the declared type (ParameterSpec.refusal passed first) and says why it does not fit, or None.
VALUE_RULES: dict[str, Callable[[Any], str | None]] = {
    "DEPLOY_WITH": _one_of(DEPLOY_WITH, "how to deploy"),
    "CONTAINER_TAG": _one_of(tuple(RELEASES), "a tag of the release table (nbhelpers/releases.py)"),
    "MAX_HOURLY_COST": _max_hourly_cost,
    "INFERENCE_TIMEOUT_S": _inference_timeout,
}


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")  # a lone surrogate can't reach the notebook
        return True
    except UnicodeEncodeError:
        return False


def _type_name(param: dict[str, Any]) -> str:
    """The type papermill infers (an annotation), else the default's type, else '?'."""
    if param["inferred_type_name"] not in (None, "None"):
        return str(param["inferred_type_name"])
    try:
        return type(ast.literal_eval(param["default"])).__name__
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "?"


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
                                    kind=_literal_kind(param["default"]),
                                    type_name=_type_name(param), help=param["help"])
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


def handed_parameters(accepted: Mapping[str, ParameterSpec],
                      parameters: Mapping[str, Any]) -> dict[str, Any]:
    """What one notebook gets: RUNNER_PARAMETERS under the run's own, limited to the names its
    `parameters` cell declares (`accepted`)."""
    return {name: value for name, value in {**RUNNER_PARAMETERS, **parameters}.items()
            if name in accepted}


def check_parameters(parameters: Mapping[Any, Any]) -> None:
    for name, value in parameters.items():
        if tokens.looks_like_secret(value):
            raise ConfigError(f"parameter {name} looks like a Hugging Face token; pass secrets "
                              "through the HF_TOKEN environment variable, never as a parameter")


def list_parameters(notebooks_dir: Path) -> str:
    """Each notebook's parameters with their types, defaults and help (papermill's reading)."""
    lines = []
    for name, specs in notebook_parameters(notebooks_dir).items():
        lines.append(name)
        lines += [f"  {spec.name}: {spec.type_name} (default {spec.default})  {spec.help}".rstrip()
                  for spec in specs.values()]
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


def main_lessons(config: RunConfig) -> list[str]:
    """The main run's notebooks before cleanup; with a matrix, only setup (entries do the rest)."""
    return [name for name in NOTEBOOKS[:-1]
            if _selected(name, config) and (not config.matrix or name == SETUP)]


def entry_lessons(model: str, config: RunConfig) -> list[str]:
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
                      notebooks=main_lessons(config) + cleanup)]
    for entry in config.matrix:
        model = str(entry["MODEL"])
        planned.append(Handed(entry=model, own=entry, parameters={**config.parameters, **entry},
                              notebooks=entry_lessons(model, config) + cleanup))
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
    if not isinstance(config.engine, str) or config.engine not in ENGINES:
        raise ConfigError(f"--engine {shown(config.engine)} is not one of {choices(ENGINES)}")
    if config.engine != "rehearsal" and config.backend != "emulator":
        raise ConfigError(f"--engine {config.engine} serves the emulator's replicas; with "
                          f"--backend {config.backend} the models are Vertex AI's (leave --engine "
                          "out)")
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
    every notebook that takes it declares, and its VALUE_RULES."""
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
                if spec and not reason and name in VALUE_RULES:
                    reason = VALUE_RULES[name](value)
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
