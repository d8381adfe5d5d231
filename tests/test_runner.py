"""The batch runner: matrix, failures, signals, idempotence, reports."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbhelpers.errors import ConfigError
from nbhelpers.run_config import RunConfig, parse_parameter_file
from nbhelpers.runner import run

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
    # Each its own endpoint and model (01's batch job runs only with RUN_BATCH_JOB).
    assert all(r.results == {"deleted": 2} for r in cleanups), [r.results for r in cleanups]
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


# Long enough that the cleanup notebook, started after the stop, still finds the deployment in
# progress and must wait for it to end before deleting it (test_no_leak proves waits longer than
# the ~30 s for which cleanup once retried; these tests prove the runner's stops reach cleanup).
DEPLOY_SECONDS = 20
TIMEOUT_S = 20  # the deploy starts some 6-10 s into 01: --timeout cuts it short


def _start_runner(tmp_path: Path, run_id: str, *arguments: str, terminal: int | None = None,
                  deploy_seconds: float = DEPLOY_SECONDS) -> subprocess.Popen:
    """`python -m nbhelpers run` in its own process against its own emulator, its output on a
    pipe or, with `terminal` (a pty's slave), on that terminal as its controlling one."""
    env = {**os.environ, "NBHELPERS_EMULATOR_DEPLOY_SECONDS": str(deploy_seconds),
           "PYTHONUNBUFFERED": "1"}
    env.pop("NBHELPERS_EMULATOR_URL", None)
    command = [sys.executable, "-m", "nbhelpers", "run", *arguments, "--run-id", run_id,
               "--out", str(tmp_path), "--no-progress"]
    if terminal is None:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=ROOT)
    import fcntl
    import termios

    return subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, env=env,
                            cwd=ROOT, start_new_session=True,  # then take the pty as its tty:
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))


def _wait_for_a_deploy_in_flight(state_file: Path, process: subprocess.Popen,
                                 drain: int | None = None) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        while drain is not None and select.select([drain], [], [], 0)[0]:
            os.read(drain, 65536)  # a full terminal would block the runner
        try:
            ops = json.loads(state_file.read_text())["operations"].values()
            if any(not op["done"] for op in ops):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail("no deployment started")


def _nothing_left(run_dir: Path, output: str) -> None:
    state = _emulator_state(run_dir)
    assert [op["done"] for op in state["operations"].values()
            if op.get("metadata", {}).get("@type", "").endswith("DeployModelOperationMetadata")
            ] == [True], output  # the deploy the stop cut short was waited for, not left running
    assert state["endpoints"] == {} and state["models"] == {}, output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: s.name)
def test_a_signal_during_a_deploy_leaves_nothing_deployed(tmp_path, signum):
    """SIGINT (Ctrl-C), SIGTERM (kill, a scheduler), SIGHUP (the terminal or SSH session
    closes: here a real hang-up of the runner's terminal, whose writes then fail)."""
    run_dir = tmp_path / "sig"
    master = slave = None
    if signum == signal.SIGHUP:
        master, slave = os.openpty()
    process = _start_runner(tmp_path, "sig", "--only", "00", "--only", "01", terminal=slave)
    if slave is not None:
        os.close(slave)
    _wait_for_a_deploy_in_flight(run_dir / "emulator-state.json", process, drain=master)
    if master is not None:
        os.close(master)  # the terminal goes away: the kernel sends SIGHUP to the runner
        assert process.wait(timeout=240) == 130
        output = (run_dir / "runner.log").read_text()
        assert "the terminal is gone" in output, output
    else:
        process.send_signal(signum)
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 130, output
    assert f"Received {signum.name}: stopping the running notebook, then cleaning up." in output
    assert "05_cleanup.ipynb" in output and "notebooks passed" in output, output
    _nothing_left(run_dir, output)
    report = (run_dir / "report.md").read_text()
    assert "INTERRUPTED" in report and "| 01_deploy_llama31_text.ipynb | interrupted |" in report
    assert "| 05_cleanup.ipynb | passed |" in report, report


def test_a_timeout_during_a_deploy_still_cleans_up(tmp_path):
    """--timeout stops the deploy notebook mid-deploy; the cleanup notebook has a time limit of
    its own (--cleanup-timeout), so it waits for that deployment to end and deletes it. The
    deploy outlasts the cut by more than DEPLOY_SECONDS, however soon after 01 began it did."""
    run_dir = tmp_path / "slow"
    process = _start_runner(tmp_path, "slow", "--only", "01", "--timeout", str(TIMEOUT_S),
                            deploy_seconds=TIMEOUT_S + DEPLOY_SECONDS)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    _nothing_left(run_dir, output)
    report = (run_dir / "report.md").read_text()
    assert "TIMEOUT" in report and "| 01_deploy_llama31_text.ipynb | timeout |" in report
    assert f"stopped after the {TIMEOUT_S}s notebook timeout" in report, report
    assert "| 05_cleanup.ipynb | passed |" in report, report


def _children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1] == str(pid):
                found.append(int(entry))
        except (OSError, IndexError):
            pass
    return found


def _alive(pid: int) -> bool:
    try:  # a zombie has ended; only its parent's wait is missing
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal")
def test_children_die_with_a_runner_killed_hard(tmp_path):
    """SIGKILL leaves the runner no time to clean up; its papermill (in a session of its own)
    and that one's kernel must not live on without it, waiting on a deployment. The emulator
    here is the test's, so the notebook would go on if nothing stopped it."""
    from nbhelpers import emulator as emulator_module

    emulator = emulator_module.start(state_file=tmp_path / "emulator.json", deploy_seconds=300)
    script = ("from pathlib import Path; from nbhelpers.run_config import RunConfig; "
              "from nbhelpers.runner import run; "
              f"run(RunConfig(Path({str(NOTEBOOKS)!r}), Path({str(tmp_path)!r}), "
              "run_id='killed', only=('01',), keep=True, progress=False, "
              f"environment={{'NBHELPERS_EMULATOR_URL': {emulator.url!r}}}))")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    papermill: list[int] = []
    kernels: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not any(not op["done"] for op in emulator.vertex.state.data["operations"].values()):
            assert time.monotonic() < deadline and process.poll() is None, "no deploy started"
            papermill = _children(process.pid) or papermill
            kernels = [k for p in papermill for k in _children(p)] or kernels
            time.sleep(0.2)
        assert papermill and kernels and all(map(_alive, papermill + kernels))
        process.kill()
        process.wait()
        deadline = time.monotonic() + 30
        while any(map(_alive, papermill + kernels)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in papermill + kernels if _alive(pid)]
    finally:
        process.kill()
        for pid in papermill + kernels:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        emulator.stop()


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
