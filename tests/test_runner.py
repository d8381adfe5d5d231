"""The batch runner: matrix, failures, signals, idempotence, reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbhelpers.errors import ConfigError
from nbhelpers.runner import RunConfig, parse_parameter_file, run

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
pytestmark = pytest.mark.notebooks


def _emulator_state(run_dir: Path) -> dict:
    return json.loads((run_dir / "emulator-state.json").read_text())


def test_two_model_matrix(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("MAX_TOKENS: 16\nN_PROMPTS: 4\nmatrix:\n"
                      "  - MODEL: Llama-3.1-8B-Instruct\n  - MODEL: Llama-3.2-1B\n")
    parameters, matrix = parse_parameter_file(params)
    report = run(RunConfig(NOTEBOOKS, tmp_path, run_id="mx", parameters=parameters,
                           matrix=matrix, parallel=2, progress=False))
    assert report.exit_code == 0, [(r.notebook, r.error) for r in report.runs]
    by_entry = {}
    for r in report.runs:
        by_entry.setdefault(r.entry, []).append(r.notebook)
    assert by_entry[""] == ["00_setup.ipynb", "05_cleanup.ipynb"]
    assert by_entry["Llama-3.1-8B-Instruct"] == [
        "01_deploy_llama31_text.ipynb", "03_openai_chat_inference.ipynb", "04_debugging.ipynb",
        "05_cleanup.ipynb"]
    assert by_entry["Llama-3.2-1B"] == ["02_deploy_llama32_multimodal.ipynb",
                                        "04_debugging.ipynb", "05_cleanup.ipynb"]
    assert all(r.results == {"diagnosis": "healthy"} for r in report.runs
               if r.notebook == "04_debugging.ipynb")
    run_ids = {r.run_id for r in report.runs if r.entry}
    assert run_ids == {"mx-llama-3-1-8b-instruct", "mx-llama-3-2-1b"}
    cleanups = [r for r in report.runs if r.notebook == "05_cleanup.ipynb" and r.entry]
    assert all(r.results == {"deleted": 2} for r in cleanups)  # each its own endpoint + model
    state = _emulator_state(tmp_path / "mx")
    assert state["endpoints"] == {} and state["models"] == {}
    assert "Llama-3.2-1B" in (tmp_path / "mx" / "report.md").read_text()


def test_failure_after_the_endpoint_exists_still_cleans_up(tmp_path):
    import urllib.request

    from nbhelpers import emulator as emulator_module

    # Bad parameters stop the plan cell before anything exists, so the failure after the
    # deployment is seeded: the emulator fails the first predict call.
    emulator = emulator_module.start(state_file=tmp_path / "shared-emulator.json")
    try:
        urllib.request.urlopen(urllib.request.Request(
            f"{emulator.url}/emulator/faults",
            json.dumps({"status": 400, "count": 1, "message": "seeded predict failure"}).encode(),
            {"Content-Type": "application/json"})).close()
        report = run(RunConfig(NOTEBOOKS, tmp_path, run_id="bad", progress=False,
                               only=("00", "01", "04"),
                               environment={"NBHELPERS_EMULATOR_URL": emulator.url}))
        state = emulator.vertex.state.data
    finally:
        emulator.stop()
    assert report.exit_code == 1
    failed = [r for r in report.runs if r.status == "failed"]
    assert [r.notebook for r in failed] == ["01_deploy_llama31_text.ipynb"]
    assert "seeded predict failure" in failed[0].error
    assert failed[0].cell is not None
    debug = [r for r in report.runs if r.notebook == "04_debugging.ipynb"]
    assert debug[0].ok  # diagnosis runs after a failure; the endpoint itself is healthy here
    assert report.runs[-1].notebook == "05_cleanup.ipynb" and report.runs[-1].ok
    assert report.runs[-1].results == {"deleted": 2}
    assert state["endpoints"] == {} and state["models"] == {}
    text = (tmp_path / "bad" / "report.md").read_text()
    assert "FAILED" in text and f"at cell {failed[0].cell}" in text


def test_same_run_id_twice_creates_no_second_deployment(tmp_path):
    config = dict(run_id="twice", progress=False, only=("00", "01"), keep=True,
                  environment={"NBHELPERS_EMULATOR_URL": ""})
    from nbhelpers import emulator as emulator_module

    emulator = emulator_module.start(state_file=tmp_path / "shared-emulator.json")
    try:
        config["environment"] = {"NBHELPERS_EMULATOR_URL": emulator.url}
        first = run(RunConfig(NOTEBOOKS, tmp_path, **config))
        second = run(RunConfig(NOTEBOOKS, tmp_path, **config))
        assert first.exit_code == 0 and second.exit_code == 0
        assert len(emulator.vertex.state.data["endpoints"]) == 1
        assert len(emulator.vertex.state.data["models"]) == 1
        output = (tmp_path / "twice" / "01_deploy_llama31_text.ipynb").read_text()
        assert "Reusing the live deployment" in output
        cleaned = run(RunConfig(NOTEBOOKS, tmp_path, **{**config, "keep": False,
                                                        "only": ("05",)}))
        assert cleaned.exit_code == 0 and emulator.vertex.state.data["endpoints"] == {}
    finally:
        emulator.stop()


def test_sigint_during_a_deploy_leaves_nothing_deployed(tmp_path):
    env = {**os.environ, "NBHELPERS_EMULATOR_DEPLOY_SECONDS": "6", "PYTHONUNBUFFERED": "1"}
    env.pop("NBHELPERS_EMULATOR_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "nbhelpers", "run", "--only", "00", "--only", "01",
         "--run-id", "sig", "--out", str(tmp_path), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    state_file = tmp_path / "sig" / "emulator-state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a deployment is in flight
        try:
            ops = json.loads(state_file.read_text())["operations"].values()
            if any(not op["done"] for op in ops):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("no deployment started")
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 130, output
    assert "Received SIGINT" in output
    state = json.loads(state_file.read_text())
    assert state["endpoints"] == {} and state["models"] == {}, output
    assert "INTERRUPTED" in (tmp_path / "sig" / "report.md").read_text()


def test_runner_refuses_secrets_and_unknown_matrix_models(tmp_path):
    with pytest.raises(ConfigError, match="HF_TOKEN environment variable"):
        run(RunConfig(NOTEBOOKS, tmp_path, parameters={"PROMPT": "hf_abcdefghijklmnopq"}))
    with pytest.raises(ConfigError, match="unknown model 'Llama-9'"):
        run(RunConfig(NOTEBOOKS, tmp_path, matrix=[{"MODEL": "Llama-9"}]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("matrix:\n  - PROMPT: x\n")
    with pytest.raises(ConfigError, match="each with a MODEL"):
        parse_parameter_file(bad)


def test_list_shows_parameters_with_help():
    listed = subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--list"],
                            capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "01_deploy_llama31_text.ipynb" in listed and "  MODEL: str" in listed
    assert "  N_PROMPTS: int (default 24)" in listed
