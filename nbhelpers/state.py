"""The run's state file: how separate notebooks and restarted kernels find what a run made.

One JSON file per run under the state directory ($NBHELPERS_STATE_DIR, else ~/.nbhelpers/runs),
plus a `current` file naming the latest run so later notebooks can leave run_id empty.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    configured = os.environ.get("NBHELPERS_STATE_DIR")
    path = Path(configured).expanduser() if configured else Path.home() / ".nbhelpers" / "runs"
    return path.resolve()


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def current_run_id(directory: Path | None = None) -> str | None:
    pointer = (directory or state_dir()) / "current"
    return pointer.read_text().strip() or None if pointer.exists() else None


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class RunState:
    """A small JSON document of one run; every change is written through at once."""

    def __init__(self, run_id: str, directory: Path | None = None):
        self.run_id = run_id
        self.directory = directory or state_dir()
        self.path = self.directory / run_id / "state.json"
        self.data: dict[str, Any] = (
            json.loads(self.path.read_text()) if self.path.exists() else {"run_id": run_id}
        )

    def save(self) -> None:
        _atomic_write(self.path, json.dumps(self.data, indent=2, sort_keys=True))
        _atomic_write(self.directory / "current", self.run_id + "\n")

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    @property
    def deployments(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("deployments", {})

    def record_deployment(self, key: str, record: dict[str, Any]) -> None:
        self.deployments[key] = record
        self.save()

    def forget_deployment(self, key: str) -> None:
        self.deployments.pop(key, None)
        self.save()
