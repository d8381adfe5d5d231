"""Runs the notebooks in order with papermill against a backend; `make demo` calls this."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbhelpers import tokens
from nbhelpers.errors import ConfigError
from nbhelpers.state import new_run_id

SUITE = ("00_setup.ipynb", "01_deploy_llama31_text.ipynb", "02_deploy_llama32_multimodal.ipynb",
         "03_openai_chat_inference.ipynb", "05_cleanup.ipynb")
REHEARSAL_TOKEN = "hf_rehearsalOnlyNotARealToken"  # the emulator accepts any token


@dataclass
class NotebookResult:
    notebook: str
    output: Path
    seconds: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@contextmanager
def _environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_suite(
    notebooks_dir: Path,
    out_dir: Path,
    *,
    notebooks: tuple[str, ...] = SUITE,
    parameters: dict[str, Any] | None = None,
    backend: str = "emulator",
    run_id: str = "",
    environment: dict[str, str] | None = None,
) -> list[NotebookResult]:
    """Executes each notebook into out_dir/<run id>/; stops at the first failure but always
    runs the cleanup notebook when it is part of the suite."""
    import papermill

    parameters = dict(parameters or {})
    for name, value in parameters.items():
        if tokens.looks_like_secret(value):
            raise ConfigError(f"parameter {name} looks like a Hugging Face token; pass secrets "
                              "through the HF_TOKEN environment variable, never as a parameter")
    run_id = run_id or new_run_id()
    run_dir = (out_dir / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {"NBHELPERS_BACKEND": backend, "NBHELPERS_RUN_ID": run_id,
           "NBHELPERS_STATE_DIR": str(run_dir / "state"), **(environment or {})}
    emulator = None
    if backend == "emulator" and "NBHELPERS_EMULATOR_URL" not in env:
        from nbhelpers import emulator as emulator_module

        emulator = emulator_module.start(state_file=run_dir / "emulator-state.json")
        env["NBHELPERS_EMULATOR_URL"] = emulator.url
        env.setdefault("HF_TOKEN", os.environ.get("HF_TOKEN") or REHEARSAL_TOKEN)
    results: list[NotebookResult] = []
    try:
        with _environment(env):
            failed = False
            for name in notebooks:
                if failed and not name.startswith("05_"):
                    continue
                source = notebooks_dir / name
                accepted = papermill.inspect_notebook(str(source))
                chosen = {k: v for k, v in parameters.items() if k in accepted}
                started = time.monotonic()
                result = NotebookResult(name, run_dir / name, 0.0)
                try:
                    papermill.execute_notebook(
                        str(source), str(result.output), parameters=chosen,
                        kernel_name="python3", cwd=str(notebooks_dir), progress_bar=False,
                    )
                except Exception as err:  # papermill saved the failing notebook already
                    result.error = tokens.redact(str(err).strip().splitlines()[-1]
                                                 if str(err).strip() else repr(err))
                    failed = True
                result.seconds = time.monotonic() - started
                results.append(result)
                print(f"{'ok  ' if result.ok else 'FAIL'} {name:<32} {result.seconds:6.1f}s  "
                      f"{result.output}{'  ' + result.error if result.error else ''}", flush=True)
    finally:
        if emulator is not None:
            emulator.stop()
    return results
