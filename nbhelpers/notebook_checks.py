"""Checks every notebook keeps the suite's rules: no outputs, a tagged parameters cell whose
assignments carry Colab `# @param`, no shell cells, and the same first code cell everywhere,
the one that makes a runtime ready, pinned to pyproject's version and repository URL."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from nbhelpers import runtime

_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*\s*(:\s*[^=]+)?=")


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
