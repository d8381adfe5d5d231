"""Checks every notebook keeps the suite's rules: no outputs, a tagged parameters cell that is a
Colab form (a `# @title`, `# @markdown` help, `# @param` on every assignment), no shell cells,
the same first code cell everywhere (the one that makes a runtime ready, pinned to pyproject's
version and repository URL), and the lessons' guards: a deploy only behind CONFIRM_DEPLOY
and a batch prediction job only behind RUN_BATCH_JOB (both False in the notebook), MACHINE_TYPE's
choices those its MODEL list starts on, DEPLOY_WITH's and CONTAINER_TAG's the package's tables,
and one name for the prompt."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from nbhelpers import model_garden, releases, runtime, sizing

_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*\s*(:\s*[^=]+)?=")
_PARAM_LIST = re.compile(r"^(?P<name>[A-Z_][A-Z0-9_]*)\s*=.*#\s*@param\s*(?P<choices>\[.*\])")
# Parameter names retired for one prompt name across the lessons, with what replaced them.
RENAMED = {"QUESTION": "PROMPT (IMAGE_PROMPT for the question about an image in 03)",
           "TEXT_PROMPT": "PROMPT"}
DEPLOY_CALL = "nbhelpers.deploy("
CONFIRM_CALL = "nbhelpers.confirm_deploy("
BATCH_CALL = "nbhelpers.run_batch_prediction("  # starts machines of its own: billed
BATCH_GUARD = "if RUN_BATCH_JOB:"
# Choices a form offers exactly as the package's tables hold them, where they are written once.
TABLE_CHOICES = {"DEPLOY_WITH": ("model_garden.DEPLOY_WITH", list(model_garden.DEPLOY_WITH)),
                 "CONTAINER_TAG": ("releases.RELEASES", list(releases.RELEASES))}


def release(directory: Path) -> tuple[str, str]:
    """(version, repository URL) from the pyproject.toml above `directory`: the one place
    both are written, which every notebook's first cell must pin."""
    for folder in (directory.resolve(), *directory.resolve().parents):
        path = folder / "pyproject.toml"
        if path.is_file():
            project = tomllib.loads(path.read_text()).get("project", {})
            return project.get("version", ""), project.get("urls", {}).get("Repository", "")
    return "", ""


def first_cell_problems(path: Path, cells: list[dict], expected: str) -> list[str]:
    code = [c for c in cells if c.get("cell_type") == "code"]
    if not code:
        return [f"{path.name}: has no code cell"]
    if "".join(code[0]["source"]) == expected:
        return []
    return [f"{path.name}: the first code cell is not the runtime cell every notebook shares "
            "(nbhelpers.runtime.first_cell with pyproject's version and [project.urls] "
            "Repository); paste it unchanged"]


def form_problems(path: Path, source: str) -> list[str]:
    """The parameters cell as a Colab form: a `# @title` first, some `# @markdown` help, and
    the names and choices the lessons agreed on."""
    found = []
    lines = source.splitlines()
    if not lines or not lines[0].startswith("# @title "):
        found.append(f"{path.name}: the parameters cell must start with '# @title <what it "
                     "sets>' (Colab shows it as the form's title)")
    if not any(line.startswith("# @markdown ") for line in lines):
        found.append(f"{path.name}: the parameters cell has no '# @markdown' help line; say "
                     "what each group of parameters does")
    lists: dict[str, list] = {}
    for line in lines:
        name = line.split("=")[0].strip()
        if _ASSIGNMENT.match(line) and name in RENAMED:
            found.append(f"{path.name}: parameter {name} was renamed {RENAMED[name]}: one "
                         "prompt name across the lessons")
        matched = _PARAM_LIST.match(line)
        if matched:
            try:
                lists[matched["name"]] = json.loads(matched["choices"])
            except json.JSONDecodeError:
                found.append(f"{path.name}: {matched['name']}'s '# @param [...]' is not a "
                             "JSON list of choices")
    for name, (source, table) in TABLE_CHOICES.items():
        if name in lists and lists[name] != table:
            found.append(f"{path.name}: {name}'s choices must be the package's ({source}), in "
                         f"its order: {json.dumps(table)}")
    if "MACHINE_TYPE" in lists and "MODEL" in lists:
        try:
            expected = sizing.machine_param_choices(lists["MODEL"])
        except Exception as err:  # a MODEL list naming no catalog model: say which
            return [*found, f"{path.name}: MODEL's choices: {err}"]
        if lists["MACHINE_TYPE"] != expected:
            found.append(f"{path.name}: MACHINE_TYPE's choices must be those its MODEL list "
                         f"starts on (sizing.machine_param_choices): {json.dumps(expected)}")
    return found


@dataclass(frozen=True, kw_only=True)
class BilledCall:
    """A call that bills, which "Run all" must not make: the notebook declares `flag = False`
    and each cell with the call has `guard` before it."""

    call: str
    flag: str
    guard: str
    what: str  # what the call does, for the message
    guard_shown: str  # the guard as the message names it


BILLED_CALLS = (
    BilledCall(call=DEPLOY_CALL, flag="CONFIRM_DEPLOY", guard=CONFIRM_CALL, what="deploys",
               guard_shown=f"{CONFIRM_CALL}plan, CONFIRM_DEPLOY)"),
    BilledCall(call=BATCH_CALL, flag="RUN_BATCH_JOB", guard=BATCH_GUARD,
               what="starts a batch prediction job", guard_shown=f"'{BATCH_GUARD}'"),
)


def billed_call_problems(path: Path, cells: list[dict], parameters: str,
                         billed: BilledCall) -> list[str]:
    found = []
    calling = [i for i, c in enumerate(cells) if c.get("cell_type") == "code"
               and billed.call in "".join(c["source"])]
    if calling and not re.search(rf"^{billed.flag} = False\s+# @param", parameters, re.M):
        found.append(f"{path.name}: it {billed.what}, so its parameters must hold "
                     f"'{billed.flag} = False  # @param {{type:\"boolean\"}}'")
    for index in calling:
        source = "".join(cells[index]["source"])
        if billed.guard not in source or source.index(billed.guard) > source.index(billed.call):
            found.append(f"{path.name}: cell {index} calls {billed.call}...) without "
                         f"{billed.guard_shown} before it")
    return found


def problems(path: Path, expected_first_cell: str | None = None) -> list[str]:
    notebook = json.loads(path.read_text())
    found = []
    cells = notebook.get("cells", [])
    if expected_first_cell is not None:
        found += first_cell_problems(path, cells, expected_first_cell)
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(params) != 1:
        found.append(f"{path.name}: needs exactly one cell tagged 'parameters', has {len(params)}")
    for cell in params:
        for line in "".join(cell["source"]).splitlines():
            if _ASSIGNMENT.match(line) and "# @param" not in line:
                found.append(f"{path.name}: parameter line lacks '# @param': {line!r}")
        found += form_problems(path, "".join(cell["source"]))
    for billed in BILLED_CALLS:
        found += billed_call_problems(path, cells, "".join(params[0]["source"]) if params else "",
                                      billed)
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count"):
            found.append(f"{path.name}: cell {index} has saved outputs")
        for line in "".join(cell["source"]).splitlines():
            if line.lstrip().startswith("!") or line.lstrip().startswith("%%bash"):
                found.append(f"{path.name}: cell {index} shells out: {line.strip()!r}")
            if re.search(r"hf_[A-Za-z0-9]{6,}", line):
                found.append(f"{path.name}: cell {index} holds what looks like a token")
    return found


def check(directory: Path) -> list[str]:
    version, repository = release(directory)
    if not version or not repository:
        return [f"no pyproject.toml with [project] version and [project.urls] Repository above "
                f"{directory}: the notebooks' first cell pins both"]
    expected = runtime.first_cell(version, repository)
    return [p for nb in sorted(directory.glob("*.ipynb")) for p in problems(nb, expected)]
