"""The batch runner refuses bad input before anything starts: property tests (hypothesis) over
every option, the parameters, the matrix and the parameters file, and good input passes.

"Nothing starts" is checked, not assumed: papermill (subprocess.Popen) and the emulator are
replaced by failures, and the output folder must stay empty. Run with -s to see how many
examples each property tried.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbhelpers import catalog, prices, run_config, runner, tokens
from nbhelpers.__main__ import main
from nbhelpers.checks import shown
from nbhelpers.errors import ConfigError
from nbhelpers.limits import DEDICATED_MAX_INFERENCE_TIMEOUT_S
from nbhelpers.model_garden import DEPLOY_WITH
from nbhelpers.releases import DEFAULT_TAG, RELEASES
from nbhelpers.run_config import (
    BACKENDS,
    CLEANUP,
    MAX_PARALLEL,
    MAX_TIMEOUT_S,
    NOTEBOOKS,
    RunConfig,
    notebook_parameters,
    parse_cli_value,
    parse_parameter_file,
    planned_notebooks,
    validate_config,
)
from nbhelpers.runner import run

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
SPECS = notebook_parameters(NOTEBOOKS_DIR)
KIND = {name: spec.kind for specs in SPECS.values() for name, spec in specs.items()}
NAMES = sorted(KIND)
MODELS = [m.name for m in catalog.models()]
# every prefix of a notebook name selects it; those of the cleanup notebook alone are refused
# by --skip (cleanup always runs)
PREFIXES = sorted({name[:n] for name in NOTEBOOKS for n in range(1, len(name) + 1)})
CLEANUP_ONLY = [p for p in PREFIXES if [n for n in NOTEBOOKS if n.startswith(p)] == [CLEANUP]]
# run ids: lowercase, as labels are; short enough for a matrix entry's "<run id>-<model>"
GOOD_RUN_ID = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{run_config.MAX_RUN_ID - 1}}}")
EXAMPLES: collections.Counter[str] = collections.Counter()
PROPERTY = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _examples_tried() -> Iterator[None]:
    yield
    print("\nhypothesis examples tried per property: " + ", ".join(
        f"{name} {count}" for name, count in sorted(EXAMPLES.items())))


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


def test_notebooks_agree_on_each_parameters_type():
    """The properties below draw one value type per name: the notebooks must agree on it."""
    for name in NAMES:
        assert len({specs[name].kind for specs in SPECS.values() if name in specs}) == 1, name


@contextlib.contextmanager
def nothing_starts(out: Path) -> Iterator[None]:
    failing = AssertionError("started although the input was refused")
    with mock.patch.object(runner.subprocess, "Popen", side_effect=failing) as popen, \
            mock.patch("nbhelpers.connection.start_emulator", side_effect=failing) as emulator:
        yield
    assert not popen.called and not emulator.called
    assert not list(out.iterdir()), list(out.iterdir())


def refused(out: Path, **options: Any) -> str:
    """run() refuses the configuration with a ConfigError, and nothing starts: its message."""
    config = RunConfig(NOTEBOOKS_DIR, out, progress=False, **options)
    with nothing_starts(out), pytest.raises(ConfigError) as caught:
        run(config)
    return str(caught.value)


# --- strategies -------------------------------------------------------------------------------
def anything_but(*good: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                     st.text(max_size=20), st.text(min_size=300, max_size=3000),
                     st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
                     ).filter(lambda v: all(type(v) is not type(g) or v != g for g in good))


BAD_SECONDS = st.one_of(
    st.floats(max_value=0.0),  # 0, -0.0, negatives, -inf
    st.just(math.nan), st.just(math.inf),
    st.floats(min_value=MAX_TIMEOUT_S, exclude_min=True),  # huge, inf
    st.integers(max_value=0), st.integers(min_value=int(MAX_TIMEOUT_S) + 1),
    st.booleans(), st.text(max_size=10), st.lists(st.floats(), max_size=2),
    st.complex_numbers(max_magnitude=10))


def _no_notebook(value: str) -> bool:
    return value == "" or not any(name.startswith(value) for name in NOTEBOOKS)


BAD_PATTERN = st.one_of(
    st.text(max_size=30).filter(_no_notebook),  # misspelt, or empty (which would match all)
    st.text(min_size=500, max_size=3000).filter(_no_notebook),
    st.integers(), st.none(), st.binary(max_size=5))
BAD_PATTERNS = st.one_of(
    st.tuples(st.lists(st.sampled_from(PREFIXES), max_size=2), BAD_PATTERN)
    .map(lambda drawn: (*drawn[0], drawn[1])),
    st.sampled_from(PREFIXES),  # one string, not a list of them
    st.integers(), st.none(), st.dictionaries(st.text(max_size=3), st.text(max_size=3)))
OPTIONS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "timeout_s": ("--timeout", BAD_SECONDS),
    "cleanup_timeout_s": ("--cleanup-timeout", st.one_of(BAD_SECONDS, st.none())),
    "parallel": ("--parallel", st.one_of(
        st.integers(max_value=0), st.integers(min_value=MAX_PARALLEL + 1), st.floats(),
        st.booleans(), st.none(), st.text(max_size=5))),
    "backend": ("--backend", anything_but(*BACKENDS)),
    "only": ("--only", BAD_PATTERNS),
    "skip": ("--skip", st.one_of(BAD_PATTERNS, st.sampled_from(CLEANUP_ONLY).map(lambda p: (p,)))),
    "keep": ("--keep", anything_but(True, False)),
    "run_id": ("--run-id", st.one_of(
        st.text(max_size=40).filter(lambda s: s and not GOOD_RUN_ID.fullmatch(s)),
        st.text(alphabet="abc123-", min_size=run_config.MAX_RUN_ID + 1, max_size=2000),
        st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2))),
}


MOST_HOURLY_COST = 1_000_000  # prices.check_max_hourly_cost's ceiling
# The parameters whose values the runner checks by the package's tables (run_config.VALUE_RULES):
# their good values come from those tables, their bad ones break exactly one rule.
GOOD_BY_RULE: dict[str, st.SearchStrategy[Any]] = {
    "DEPLOY_WITH": st.sampled_from(DEPLOY_WITH),
    "CONTAINER_TAG": st.sampled_from(sorted(RELEASES)),
    "MAX_HOURLY_COST": st.one_of(st.floats(0, MOST_HOURLY_COST), st.integers(0, MOST_HOURLY_COST)),
    "INFERENCE_TIMEOUT_S": st.integers(0, DEDICATED_MAX_INFERENCE_TIMEOUT_S),
}
NOT_A_CHOICE = st.text(max_size=40).filter(lambda s: not tokens.looks_like_secret(s))
BAD_BY_RULE: dict[str, tuple[st.SearchStrategy[Any], str]] = {  # the values, what the error says
    "DEPLOY_WITH": (NOT_A_CHOICE.filter(lambda s: s not in DEPLOY_WITH), "'model-garden'"),
    "CONTAINER_TAG": (NOT_A_CHOICE.filter(lambda s: s not in RELEASES), repr(DEFAULT_TAG)),
    "MAX_HOURLY_COST": (st.one_of(
        st.floats(max_value=0, exclude_max=True, allow_nan=False, allow_infinity=False),
        st.integers(-2 ** 63, -1), st.floats(min_value=MOST_HOURLY_COST, exclude_min=True,
                                             allow_infinity=False),
        st.integers(MOST_HOURLY_COST + 1, 2 ** 63 - 1)), "0 for no limit"),
    "INFERENCE_TIMEOUT_S": (st.one_of(st.integers(-2 ** 63, -1), st.integers(
        DEDICATED_MAX_INFERENCE_TIMEOUT_S + 1, 2 ** 63 - 1)), "0 (Google's default) to 3600"),
}


def good_value(kind: type | None, name: str = "") -> st.SearchStrategy[Any]:
    """Values of the type a notebook declares, huge and empty ones too, never token-like; for a
    name the runner checks by a table, values from that table."""
    if name in GOOD_BY_RULE:
        return GOOD_BY_RULE[name]
    int64 = st.integers(-2 ** 63, 2 ** 63 - 1)
    text = st.one_of(st.text(max_size=40), st.text(min_size=2000, max_size=5000)) \
        .filter(lambda s: not tokens.looks_like_secret(s))
    return {bool: st.booleans(), int: int64, str: text,
            float: st.one_of(st.floats(allow_nan=False, allow_infinity=False), int64)}[kind]


def bad_value(kind: type | None) -> st.SearchStrategy[Any]:
    """Values of another type, out of range, non-finite, or secrets."""
    huge = st.one_of(st.integers(min_value=2 ** 63), st.integers(max_value=-2 ** 63 - 1))
    containers = st.one_of(st.lists(st.integers(), max_size=3),
                           st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    return {
        bool: st.one_of(st.integers(), st.text(max_size=8), st.none(), st.floats(), containers),
        int: st.one_of(st.text(max_size=8), st.floats(), st.booleans(), st.none(), huge,
                       containers),
        float: st.one_of(st.text(max_size=8), st.sampled_from([math.nan, math.inf, -math.inf]),
                         st.booleans(), st.none(), huge, containers),
        str: st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), containers,
                       st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
                       st.from_regex(r"\A.{0,10}hf_[A-Za-z0-9]{6,40}\Z")),  # a token
    }[kind]


# --- bad input: refused, naming what is wrong, before anything starts --------------------------
@PROPERTY
@given(st.sampled_from(sorted(OPTIONS)).flatmap(
    lambda field: st.tuples(st.just(field), OPTIONS[field][1])))
def test_bad_options_are_refused_before_anything_starts(out, drawn):
    EXAMPLES["bad options"] += 1
    field, value = drawn
    message = refused(out, **{field: value})
    assert OPTIONS[field][0] in message, message


@PROPERTY
@given(st.one_of(st.text(max_size=60), st.text(min_size=500, max_size=3000), st.integers(),
                 st.none(), st.booleans()).filter(lambda name: name not in KIND),
       st.booleans())
def test_unknown_parameter_names_are_refused(out, name, in_matrix):
    EXAMPLES["unknown parameter names"] += 1
    if in_matrix:
        message = refused(out, matrix=[{"MODEL": "Llama-3.2-1B", name: 1}])
        assert "matrix entry MODEL Llama-3.2-1B" in message, message
    else:
        message = refused(out, parameters={name: 1})
    assert tokens.redact(shown(name)) in message and "take: " in message, message


@PROPERTY
@given(st.sampled_from([n for n in NAMES if len(n) >= 5]), st.data())
def test_misspelt_parameter_names_get_a_close_match(out, name, data):
    EXAMPLES["misspelt parameter names"] += 1
    at = data.draw(st.integers(0, len(name) - 1))
    typo = name[:at] + data.draw(st.sampled_from("ABCXYZ_")) + name[at + 1:]
    if typo in KIND:
        return
    message = refused(out, parameters={typo: 1})
    assert f"unknown parameter {typo!r} (did you mean " in message, message


@PROPERTY
@given(st.sampled_from(NAMES).flatmap(lambda name: st.tuples(st.just(name),
                                                             bad_value(KIND[name]))))
def test_bad_parameter_values_are_refused(out, drawn):
    EXAMPLES["bad parameter values"] += 1
    name, value = drawn
    message = refused(out, parameters={name: value})
    assert f"parameter {name}" in message, message


@PROPERTY
@given(st.sampled_from(sorted({n for nb in ("01_deploy_llama31_text.ipynb",
                                             "03_openai_chat_inference.ipynb")
                               for n in SPECS[nb]} - {"MODEL"}))
       .flatmap(lambda name: st.tuples(st.just(name), bad_value(KIND[name]))))
def test_bad_values_in_a_matrix_entry_are_refused(out, drawn):
    EXAMPLES["bad matrix entry values"] += 1
    name, value = drawn
    message = refused(out, matrix=[{"MODEL": "Llama-3.1-8B-Instruct", name: value}])
    assert f"parameter {name}" in message, message


def test_the_rules_cover_names_the_notebooks_take():
    assert set(BAD_BY_RULE) == set(GOOD_BY_RULE) == set(run_config.VALUE_RULES)
    for name in run_config.VALUE_RULES:
        assert name in KIND, name  # a rule for a parameter no notebook declares checks nothing
    assert prices.check_max_hourly_cost(MOST_HOURLY_COST) == MOST_HOURLY_COST


@PROPERTY
@given(st.sampled_from(sorted(BAD_BY_RULE)).flatmap(
    lambda name: st.tuples(st.just(name), BAD_BY_RULE[name][0])), st.booleans())
def test_values_outside_the_tables_are_refused_naming_the_value_and_the_choices(out, drawn,
                                                                               in_matrix):
    """The right type, the wrong value: a tag outside the release table, a way to deploy that
    is none, a negative cost, a timeout outside 0-3600 s. Refused before setup starts."""
    EXAMPLES["values outside the tables"] += 1
    name, value = drawn
    if in_matrix:
        message = refused(out, matrix=[{"MODEL": "Llama-3.2-1B", name: value}])
    else:
        message = refused(out, parameters={name: value})
    assert f"parameter {name}={shown(value)}" in message, message
    assert BAD_BY_RULE[name][1] in message, message


def test_the_deploy_notebooks_offer_the_tables_choices():
    """What the runner checks is what the Colab forms offer (one source: the package's tables),
    and the new parameters' defaults are those the brief of issue #17 set."""
    for notebook in ("01_deploy_llama31_text.ipynb", "02_deploy_llama32_multimodal.ipynb"):
        specs = SPECS[notebook]
        for name, table in (("DEPLOY_WITH", list(DEPLOY_WITH)), ("CONTAINER_TAG", list(RELEASES))):
            assert json.loads(specs[name].help.removeprefix("@param ")) == table, (notebook, name)
        defaults = {name: ast.literal_eval(specs[name].default) for name in
                    ("DEPLOY_WITH", "ACCEPT_EULA", "DEDICATED_ENDPOINT", "INFERENCE_TIMEOUT_S")}
        assert defaults == {"DEPLOY_WITH": "vllm-container", "ACCEPT_EULA": False,
                            "DEDICATED_ENDPOINT": True, "INFERENCE_TIMEOUT_S": 0}, notebook
    assert SPECS["01_deploy_llama31_text.ipynb"]["RUN_BATCH_JOB"].default == "False"


BAD_MATRIX = st.one_of(
    st.text(max_size=20), st.integers(), st.none(),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),  # not a list
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none(),
                       st.lists(st.integers(), max_size=2)), min_size=1, max_size=3),
    st.lists(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "MODEL"),
                             st.integers(), max_size=2), min_size=1, max_size=2),  # no MODEL
    st.one_of(st.integers(), st.none(), st.booleans(), st.lists(st.text(), max_size=2),
              st.text(max_size=40).filter(lambda m: m not in MODELS and not m.startswith("meta-")))
    .map(lambda model: [{"MODEL": model}]),  # not a model of the catalog
    st.sampled_from(MODELS).map(lambda model: [{"MODEL": model}, {"MODEL": model}]),  # twice
    st.sampled_from(MODELS).map(
        lambda model: [{"MODEL": model}, {"MODEL": catalog.get_model(model).hf_id}]),
)


@PROPERTY
@given(BAD_MATRIX)
def test_bad_matrices_are_refused(out, matrix):
    EXAMPLES["bad matrices"] += 1
    message = refused(out, matrix=matrix)
    assert "matrix" in message, message


@PROPERTY
@given(st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400),
    st.lists(st.sampled_from(["A: 1", "matrix:", "  - MODEL: Llama-3.2-1B", "- x", "B: [1,",
                              "\tC: 2", "D: {", "E: !!binary aGk=", "F: &a 1", "G: *b",
                              "H: 2024-01-01", "? [1]\n: 2", "'", "\x00", "K: \x85", "%YAML 9"]),
             max_size=6).map("\n".join)))
def test_any_parameters_file_is_read_or_refused_naming_the_file(tmp_path_factory, contents):
    EXAMPLES["parameters file contents"] += 1
    path = tmp_path_factory.mktemp("file") / "params.yaml"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        path.write_text(contents, encoding="utf-8", errors="surrogatepass")
    try:
        parameters, matrix = parse_parameter_file(path)
    except ConfigError as err:
        EXAMPLES["parameters file contents: refused"] += 1
        assert str(path) in str(err), err
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.MarkedYAMLError as yaml_error:
            if yaml_error.problem_mark is not None:
                assert f"line {yaml_error.problem_mark.line + 1}" in str(err), err
        except (yaml.YAMLError, ValueError):
            pass
        return
    assert all(isinstance(name, str) for name in parameters)
    assert isinstance(matrix, list) and all(isinstance(e, dict) and "MODEL" in e for e in matrix)


# --- good input passes --------------------------------------------------------------------------
@st.composite
def good_configs(draw: st.DrawFn, out: Path) -> RunConfig:
    models = draw(st.lists(st.sampled_from(MODELS), max_size=3, unique=True))
    config = RunConfig(
        NOTEBOOKS_DIR, out,
        run_id=draw(st.one_of(st.just(""), st.from_regex(GOOD_RUN_ID, fullmatch=True))),
        matrix=[{"MODEL": draw(st.sampled_from([m, catalog.get_model(m).hf_id]))}
                for m in models],
        backend=draw(st.sampled_from(BACKENDS)),
        only=tuple(draw(st.lists(st.sampled_from(PREFIXES), max_size=3))),
        skip=tuple(draw(st.lists(st.sampled_from(sorted(set(PREFIXES) - set(CLEANUP_ONLY))),
                                 max_size=2))),
        keep=draw(st.booleans()),
        timeout_s=draw(st.one_of(st.none(), st.floats(min_value=1e-3, max_value=MAX_TIMEOUT_S),
                                 st.integers(1, int(MAX_TIMEOUT_S)))),
        cleanup_timeout_s=draw(st.floats(min_value=1e-3, max_value=MAX_TIMEOUT_S)),
        parallel=draw(st.integers(1, MAX_PARALLEL)),
        progress=draw(st.booleans()))
    planned = planned_notebooks(config)
    taken = sorted({n for handed in planned for nb in handed.notebooks for n in SPECS[nb]})
    names = draw(st.lists(st.sampled_from(taken), max_size=5, unique=True)) if taken else []
    config.parameters = {name: draw(good_value(KIND[name], name)) for name in names}
    for entry, handed in zip(config.matrix, planned[1:], strict=True):
        own = sorted({n for nb in handed.notebooks for n in SPECS[nb]} - {"MODEL"})
        for name in draw(st.lists(st.sampled_from(own), max_size=3, unique=True)) if own else []:
            entry[name] = draw(good_value(KIND[name], name))
    return config


@PROPERTY
@given(st.data())
def test_good_configurations_pass_validation(out, data):
    config = data.draw(good_configs(out))
    EXAMPLES["good configurations"] += 1
    validate_config(config)
    # ... and the same parameters, written as a YAML file, read back as they were
    path = out.parent / "good-params.yaml"
    # (escaped: PyYAML's emitter writes a bare NEL, U+0085, which its reader takes for a space)
    path.write_text(yaml.safe_dump({**config.parameters, "matrix": config.matrix}),
                    encoding="utf-8")
    assert parse_parameter_file(path) == (config.parameters, config.matrix)
    assert not list(out.iterdir())


# --- examples: the file, the command line ---------------------------------------------------------
def test_parameters_file_problems_name_the_file_and_line(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=f"parameters file {missing} does not exist"):
        parse_parameter_file(missing)
    with pytest.raises(ConfigError, match="is a folder"):
        parse_parameter_file(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"A: \xff\xfe\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        parse_parameter_file(binary)
    broken = tmp_path / "broken.yaml"
    broken.write_text("MAX_TOKENS: 16\nPROMPT: [unclosed\nTOP_K: 1\n")
    with pytest.raises(ConfigError, match=rf"{broken}, line 3, column \d+: not valid YAML"):
        parse_parameter_file(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- MAX_TOKENS: 16\n")
    with pytest.raises(ConfigError, match="must hold a mapping of parameter names"):
        parse_parameter_file(listed)
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text("matrix:\n  MODEL: Llama-3.2-1B\n")
    with pytest.raises(ConfigError, match="matrix must be a list of mappings"):
        parse_parameter_file(matrix)
    if os.geteuid() != 0:  # root reads whatever the mode says
        unreadable = tmp_path / "unreadable.yaml"
        unreadable.write_text("A: 1\n")
        unreadable.chmod(0)
        with pytest.raises(ConfigError, match="cannot read parameters file"):
            parse_parameter_file(unreadable)


def test_names_for_notebooks_the_run_skips_say_which_notebook_takes_them(out):
    message = refused(out, parameters={"N_PROMPTS": 4}, only=("00", "01"))
    assert "N_PROMPTS is taken only by '03_openai_chat_inference.ipynb'" in message
    message = refused(out, matrix=[{"MODEL": "Llama-3.2-1B", "SYSTEM_PROMPT": "x"}])
    assert "SYSTEM_PROMPT (matrix entry MODEL Llama-3.2-1B)" in message  # a base model: no chat
    assert "--only '01_deplyo' matches no notebook (did you mean '01_deploy'?)" in refused(
        out, only=("01_deplyo",))


def test_command_line_values_keep_strings_as_typed():
    assert parse_cli_value(NOTEBOOKS_DIR, "PROMPT", "yes") == "yes"
    assert parse_cli_value(NOTEBOOKS_DIR, "ENDPOINT_ID", "1234") == "1234"
    assert parse_cli_value(NOTEBOOKS_DIR, "MAX_TOKENS", "20") == 20
    assert parse_cli_value(NOTEBOOKS_DIR, "DRY_RUN", "true") is True
    with pytest.raises(ConfigError, match="-p MAX_TOKENS '\\[1,': the value is not valid YAML"):
        parse_cli_value(NOTEBOOKS_DIR, "MAX_TOKENS", "[1,")


@pytest.mark.parametrize("arguments, message", [
    (["--only", "09"], "error: --only '09' matches no notebook"),
    (["--skip", "05"], "error: --skip '05' names only the cleanup notebook"),
    (["--timeout", "nan"], "error: --timeout must be a finite number of seconds above 0"),
    (["--cleanup-timeout", "0"], "error: --cleanup-timeout must be a finite number"),
    (["--parallel", "0"], "error: --parallel must be a whole number from 1 to"),
    (["-p", "MAX_TOKEN", "5"], "error: unknown parameter 'MAX_TOKEN' (did you mean MAX_TOKENS?)"),
    (["-p", "MAX_TOKENS", "many"], "error: parameter MAX_TOKENS='many' does not fit"),
    (["-f", "missing.yaml"], "error: parameters file missing.yaml does not exist"),
])
def test_command_line_refuses_with_exit_status_2(tmp_path, capsys, arguments, message):
    with mock.patch.object(runner.subprocess, "Popen", side_effect=AssertionError("started")):
        assert main(["run", "--out", str(tmp_path), *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
