"""The notebooks executed headless by papermill against the emulator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbhelpers.run_config import NOTEBOOKS as SUITE
from nbhelpers.run_config import RunConfig
from nbhelpers.runner import run
from tests.conftest import FAKE_TOKEN

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
pytestmark = pytest.mark.notebooks


def _outputs(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join(
        "".join(o.get("text", "")) + json.dumps(o.get("data", {})) + str(o.get("evalue", ""))
        for c in cells for o in c.get("outputs", []))


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "emulator-state.json").read_text())


def run_suite(notebooks_dir, out_dir, *, notebooks=SUITE, parameters=None, run_id="",
              environment=None):
    """The runner limited to some notebooks, without progress bars, and without the cleanup
    notebook (--keep), so that what the notebooks left can be checked."""
    report = run(RunConfig(notebooks_dir, out_dir, run_id=run_id, parameters=parameters or {},
                           only=tuple(notebooks), progress=False, keep=True,
                           environment=environment or {}))
    return [r for r in report.runs if r.notebook in notebooks]


def test_setup_deploy_predict_cleanup(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("NBHELPERS_EMULATOR_URL", raising=False)
    report = run(RunConfig(NOTEBOOKS, tmp_path, run_id="nb-run", progress=False,
                           parameters={"PROMPT": "Name three colours.", "MAX_TOKENS": 20,
                                       "RUN_BATCH_JOB": True,  # 01's billed batch section
                                       "INFERENCE_TIMEOUT_S": 120},
                           environment={"HF_TOKEN": FAKE_TOKEN}))
    results = report.runs
    assert [r.notebook for r in results] == list(SUITE)
    assert all(r.ok for r in results), [r.error for r in results]
    assert report.exit_code == 0
    run_dir = tmp_path / "nb-run"
    assert results[1].results["endpoint_id"] and "rehearsal" in results[1].results["first_reply"]
    # 2 endpoints, 2 models, and 01's batch prediction job with its 2 files (input, results)
    assert results[-1].results == {"deleted": 7}
    assert "| 01_deploy_llama31_text.ipynb | passed |" in (run_dir / "report.md").read_text()
    assert "PASSED" in (run_dir / "report.html").read_text()
    deployed = _outputs(run_dir / "01_deploy_llama31_text.ipynb")
    assert "Prompt:\nName three colours.\nOutput:\n[rehearsal engine" in deployed
    assert "received 19 characters (3 words)" in deployed
    replies = re.findall(r"\[rehearsal engine[^\n]*", deployed)
    assert replies and all(len(r.split()) == 20 for r in replies)  # MAX_TOKENS honoured
    assert "REHEARSAL MODE" in deployed
    # dedicated by default, with the inference timeout the run set
    assert "dedicated (its own DNS name; requests up to 10,485,760 bytes, streaming, inference " \
           "timeout 120 s)" in deployed
    assert "JOB_STATE_SUCCEEDED, 3 of 3 prompt(s) answered" in deployed
    cleaned = _outputs(run_dir / "05_cleanup.ipynb")
    assert "Deleting 7 resource(s)" in cleaned and "nothing labelled for this run" in cleaned
    vision = _outputs(run_dir / "02_deploy_llama32_multimodal.ipynb")
    assert "image/png" in vision  # the picture is shown inline
    # PROMPT is one parameter across 01-03: 02 asks it about the image
    assert "<|image|>Name three colours." in vision and "an image of 800x600 pixels" in vision
    body = vision[vision.index("The request body predict() sends:"):]  # printed before sending
    assert '"multi_modal_data"' in body and "data:image/jpeg;base64," in body
    assert body.index('"multi_modal_data"') < body.index("an image of 800x600 pixels")
    chatted = _outputs(run_dir / "03_openai_chat_inference.ipynb")
    assert "in 2 messages (system,user)" in chatted and "4 messages" in chatted
    assert "24/24 succeeded" in chatted and "image/png" in chatted  # the plot
    assert "endpoint: dedicated, streams" in chatted  # what 01 deployed, by default
    state = _state(run_dir)
    assert state["endpoints"] == {} and state["models"] == {}
    assert any(line for lines in state["logs"].values() for line in lines)
    # The token was in the kernels' environment: it must be nowhere in what the run left.
    captured = capfd.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_01_deploys_through_model_garden(tmp_path, emulator):
    """DEPLOY_WITH="model-garden": the plan lists Google's verified configurations, the licence
    is accepted with the deploy (ACCEPT_EULA), and the notebook predicts as on the other path;
    the batch section, off by default, starts nothing."""
    results = run_suite(NOTEBOOKS, tmp_path, notebooks=("01_deploy_llama31_text.ipynb",),
                        parameters={"DEPLOY_WITH": "model-garden", "ACCEPT_EULA": True,
                                    "MAX_TOKENS": 8}, run_id="garden",
                        environment={"NBHELPERS_EMULATOR_URL": emulator.url,
                                     "HF_TOKEN": FAKE_TOKEN})
    assert all(r.ok for r in results), [r.error for r in results]
    deployed = _outputs(tmp_path / "garden" / "01_deploy_llama31_text.ipynb")
    assert "Google's verified configurations of meta/llama3_1@llama-3.1-8b-instruct " \
           "(list_deploy_options):" in deployed
    assert "Accepting the licence of meta/llama3_1" in deployed
    assert "Output:\n[rehearsal engine" in deployed
    assert "Skipped the batch prediction job" in deployed
    data = emulator.vertex.state.data
    assert any(data["eulas"].values()) and len(data["endpoints"]) == 1
    assert data["batchPredictionJobs"] == {}
    assert FAKE_TOKEN not in deployed


@pytest.mark.parametrize("notebook, parameters, env, message", [
    ("00_setup.ipynb", {"REGION": "us-central9"}, {}, "unknown region 'us-central9'"),
    ("00_setup.ipynb", {"BUCKET_URI": "my-bucket"}, {}, "malformed Cloud Storage URI"),
    ("01_deploy_llama31_text.ipynb", {"MODEL": "Llama-3.1-9B"}, {}, "unknown model"),
    ("01_deploy_llama31_text.ipynb", {"WEIGHTS_URI": "gs:/nope"}, {},
     "malformed Cloud Storage URI"),
    ("01_deploy_llama31_text.ipynb", {}, {"HF_TOKEN": ""}, "gated on Hugging Face"),
])
def test_bad_input_is_refused_before_anything_is_created(tmp_path, emulator, notebook,
                                                        parameters, env, message):
    results = run_suite(NOTEBOOKS, tmp_path, notebooks=(notebook,),
                        parameters=parameters, run_id="bad",
                        environment={"NBHELPERS_EMULATOR_URL": emulator.url,
                                     "HF_TOKEN": FAKE_TOKEN, **env})
    failed = [r for r in results if not r.ok]
    assert failed and message in failed[0].error, [r.error for r in results]
    assert emulator.vertex.state.data["endpoints"] == {}
    assert emulator.vertex.state.data["models"] == {}
    assert not any("/endpoints/" in op or "/models/" in op
                   for op in emulator.vertex.state.data["operations"])  # nothing was attempted


def test_bucket_in_another_region_is_refused(tmp_path, emulator, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.storage_url)
    storage.Client(project="p", credentials=AnonymousCredentials()).create_bucket(
        "team-bucket-eu", location="europe-west4")
    results = run_suite(NOTEBOOKS, tmp_path, notebooks=("00_setup.ipynb",), run_id="eu",
                        parameters={"BUCKET_URI": "gs://team-bucket-eu"},
                        environment={"NBHELPERS_EMULATOR_URL": emulator.url})
    assert "is in EUROPE-WEST4, not in us-central1" in results[0].error
    assert results[0].cell is not None


@pytest.mark.parametrize("notebook, expected", [
    ("00_setup.ipynb", ["PROJECT_ID", "REGION", "BUCKET_URI", "BACKEND", "RUN_ID"]),
    ("01_deploy_llama31_text.ipynb", ["MODEL", "WEIGHTS_URI", "PROMPT", "MAX_TOKENS"]),
    ("02_deploy_llama32_multimodal.ipynb", ["MODEL", "IMAGE", "PROMPT", "MAX_NUM_SEQS"]),
    ("03_openai_chat_inference.ipynb", ["MODEL", "PROMPT", "N_PROMPTS", "CONCURRENCY"]),
    ("05_cleanup.ipynb", ["DRY_RUN", "ALL_MY_RUNS", "DELETE_RUN_FILES"]),
])
def test_papermill_lists_the_parameters(notebook, expected):
    listed = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook",
                             str(NOTEBOOKS / notebook)], capture_output=True, text=True,
                            check=True).stdout
    for name in expected:
        assert f"  {name}: " in listed, listed
