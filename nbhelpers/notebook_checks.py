"""Checks every notebook keeps the suite's rules: no outputs, a tagged parameters cell whose
assignments carry Colab `# @param`, no shell cells."""

from __future__ import annotations

import json
import re
from pathlib import Path

_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*\s*(:\s*[^=]+)?=")


def problems(path: Path) -> list[str]:
    notebook = json.loads(path.read_text())
    found = []
    cells = notebook.get("cells", [])
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
    return [p for nb in sorted(directory.glob("*.ipynb")) for p in problems(nb)]
