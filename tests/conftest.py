"""Fixtures: an emulator in this process, spoken to over HTTP by the real SDKs."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbhelpers import emulator as emulator_module

FAKE_TOKEN = "hf_testTokenThatMustNeverLeak123"


@pytest.fixture
def emulator(tmp_path):
    running = emulator_module.start(state_file=tmp_path / "emulator.json", deploy_seconds=0.2)
    yield running
    running.stop()


def use_emulator(monkeypatch: pytest.MonkeyPatch, url: str, state_dir: Path) -> None:
    """Points a run at the emulator at `url`, with no Hugging Face token and no project; what
    connect() sets for the emulator is put back by `monkeypatch` when it undoes."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GOOGLE_CLOUD_PROJECT",
                 "GOOGLE_CLOUD_REGION", "NBHELPERS_RUN_ID", "NBHELPERS_OWNER",
                 "NBHELPERS_EMULATOR_IDENTITY", "NBHELPERS_BASE_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "STORAGE_EMULATOR_HOST", "HF_ENDPOINT"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NBHELPERS_BACKEND", "emulator")
    monkeypatch.setenv("NBHELPERS_EMULATOR_URL", url)
    monkeypatch.setenv("NBHELPERS_STATE_DIR", str(state_dir))


@pytest.fixture
def env(monkeypatch, tmp_path, emulator):
    """Environment of a run against the emulator, with no Hugging Face token."""
    use_emulator(monkeypatch, emulator.url, tmp_path / "state")
    return monkeypatch


ALICE = "alice@example.com"


@pytest.fixture
def session(env):
    """Alice's run: the emulator's token-info names her as whom the credentials belong to."""
    import nbhelpers

    env.setenv("NBHELPERS_EMULATOR_IDENTITY", ALICE)
    return nbhelpers.connect(project="test-project", run_id="run-a", quiet=True)


@contextlib.contextmanager
def module_session(root: Path, *, run_id: str, deploy_seconds: float) -> Iterator[tuple[Any, Any]]:
    """An emulator of its own and Alice's session against it, with a Hugging Face token, for a
    module-scoped fixture (`session` is per test); yields (emulator, session) and stops both."""
    import nbhelpers

    running = emulator_module.start(state_file=root / "emulator.json",
                                    deploy_seconds=deploy_seconds)
    try:
        with pytest.MonkeyPatch.context() as env:
            use_emulator(env, running.url, root / "state")
            env.setenv("NBHELPERS_EMULATOR_IDENTITY", ALICE)
            env.setenv("HF_TOKEN", FAKE_TOKEN)
            yield running, nbhelpers.connect(project="test-project", run_id=run_id, quiet=True)
    finally:
        running.stop()


def emulator_logs(emulator, endpoint_id: str) -> list[str]:
    with urllib.request.urlopen(f"{emulator.url}/emulator/logs/{endpoint_id}") as response:
        return json.loads(response.read())["lines"]
