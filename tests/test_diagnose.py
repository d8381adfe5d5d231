"""diagnose_text on real error excerpts, diagnose_endpoint through Cloud Logging, and the
debugging notebook for seeded failures."""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

import nbhelpers
from nbhelpers.diagnose import KINDS, diagnose_text
from nbhelpers.errors import DeploymentError
from nbhelpers.run_config import RunConfig
from nbhelpers.runner import run
from tests.conftest import FAKE_TOKEN

DATA = Path(__file__).parent / "data" / "error_excerpts.json"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_accuracy_on_real_excerpts():
    excerpts = json.loads(DATA.read_text())["excerpts"]
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses = []
    for excerpt in excerpts:
        assert excerpt["source"].startswith("https://github.com/") and excerpt["text"]
        got = diagnose_text(excerpt["text"])
        per_kind[excerpt["kind"]][1] += 1
        if got.kind == excerpt["kind"]:
            per_kind[excerpt["kind"]][0] += 1
            assert got.evidence and all(line in excerpt["text"] for line in got.evidence)
        else:
            misses.append((excerpt["source"], excerpt["kind"], got.kind))
    total = sum(n for _, n in per_kind.values())
    right = sum(r for r, _ in per_kind.values())
    print(f"\ndiagnose_text accuracy: {right}/{total} = {right / total:.1%}")
    for kind in KINDS:
        r, n = per_kind[kind]
        print(f"  {kind:<18} {r}/{n}")
    for miss in misses:
        print("  miss:", *miss)
    assert set(per_kind) == set(KINDS) and all(n >= 4 for _, n in per_kind.values())
    assert right / total >= 0.9


@pytest.mark.parametrize("text, kind", [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 6.20 GiB.\n"
     "ERROR Model server exited unexpectedly", "oom"),
    ("huggingface_hub.errors.GatedRepoError: 401 Client Error.\nTraceback (most recent call "
     "last):\nRuntimeError: Engine process failed to start", "hf_auth"),
    ("google.api_core.exceptions.ServiceUnavailable: 503 Took too long to respond.", "timeout"),
    ("google.api_core.exceptions.InvalidArgument: 400 Request payload size exceeds the limit: "
     "1572864 bytes.", "bad_request"),
    ("openai.BadRequestError: Error code: 400 - At most 1 image(s) may be provided in one "
     "request.", "bad_request"),
    ("Model server exited unexpectedly. Model server logs can be found at https://console",
     "other"),
])
def test_the_root_cause_wins(text, kind):
    assert diagnose_text(text).kind == kind


def test_numbers_become_deploy_parameters():
    v0 = diagnose_text("ValueError: The model's max seq len (4096) is larger than the maximum "
                       "number of tokens that can be stored in KV cache (2256). Try increasing")
    assert v0.details == {"max_model_len": 4096, "kv_cache_tokens": 2256}
    assert v0.deploy_parameters == {"MAX_MODEL_LEN": 2048}
    v1 = diagnose_text("ValueError: To serve at least one request with the models's max seq "
                       "len (131072), (16.00 GiB KV cache is needed, which is larger than the "
                       "available KV cache memory (0.71 GiB). Based on the available memory, "
                       "the estimated maximum model length is 5632. Try increasing")
    assert v1.kind == "max_model_len" and v1.deploy_parameters == {"MAX_MODEL_LEN": 5632}
    oom = diagnose_text("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.22 GiB."
                        " GPU 0 has a total capacity of 39.38 GiB of which 1.01 GiB is free.")
    assert oom.details == {"tried_to_allocate": "1.22 GiB", "gpu_capacity": "39.38 GiB"}
    assert "MAX_NUM_SEQS" in oom.deploy_parameters


def _seed(emulator, cause: str) -> None:
    request = urllib.request.Request(f"{emulator.url}/emulator/fail-next-deploy",
                                     json.dumps({"cause": cause}).encode(),
                                     {"Content-Type": "application/json"})
    urllib.request.urlopen(request).close()


@pytest.mark.parametrize("cause, model", [
    ("oom", "Llama-3.2-11B-Vision-Instruct"), ("max_model_len", "Llama-3.1-8B-Instruct"),
    ("hf_auth", "Llama-3.1-8B"), ("quota", "Llama-3.1-70B-Instruct"),
    ("unsupported_model", "Llama-3.2-90B-Vision"),
])
def test_diagnose_endpoint_reads_cloud_logging(session, env, emulator, cause, model):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    _seed(emulator, cause)
    with pytest.raises(DeploymentError):
        nbhelpers.deploy(session, nbhelpers.plan_deployment(model, ask_for_token=False))
    report = nbhelpers.diagnose_endpoint(session)  # the run's most recent deployment
    assert report.diagnosis.kind == cause, report.diagnosis
    assert report.deployed_models == [] and not report.healthy
    if cause != "quota":  # a quota refusal starts no container: the platform error says it
        assert report.log_lines and report.diagnosis.evidence[0] in report.log_lines
    assert FAKE_TOKEN not in str(report.diagnosis) + "".join(report.log_lines)


def test_base_model_chat_leaves_a_log_line_to_diagnose(session, env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    base = nbhelpers.deploy(session, nbhelpers.plan_deployment("Llama-3.2-1B",
                                                               ask_for_token=False))
    import openai

    with pytest.raises(openai.BadRequestError):
        nbhelpers.chat_client(base).chat.completions.create(
            model="", messages=[{"role": "user", "content": "Hi"}])
    report = nbhelpers.diagnose_endpoint(session, base.endpoint_id)
    assert report.diagnosis.kind == "chat_template" and report.deployed_models


@pytest.mark.notebooks
@pytest.mark.parametrize("cause, model, expected", [
    ("max_model_len", "Llama-3.1-8B-Instruct", "MAX_MODEL_LEN"),
    ("oom", "Llama-3.2-11B-Vision-Instruct", "MAX_NUM_SEQS"),
    ("hf_auth", "Llama-3.1-8B-Instruct", "HF_TOKEN"),
    ("quota", "Llama-3.1-70B-Instruct", "quota"),
])
def test_debugging_notebook_names_cause_and_fix(tmp_path, env, emulator, cause, model,
                                                expected):
    env.setenv("NBHELPERS_STATE_DIR", str(tmp_path / "dbg" / "state"))  # the runner's state
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    session = nbhelpers.connect(run_id="dbg", quiet=True)
    _seed(emulator, cause)
    with pytest.raises(DeploymentError):
        nbhelpers.deploy(session, nbhelpers.plan_deployment(model, ask_for_token=False))
    report = run(RunConfig(NOTEBOOKS, tmp_path, run_id="dbg", only=("04",), keep=True,
                           progress=False, environment={"NBHELPERS_EMULATOR_URL": emulator.url}))
    debug = report.runs[0]
    assert debug.ok, debug.error
    assert debug.results == {"diagnosis": cause}
    text = (tmp_path / "dbg" / "04_debugging.ipynb").read_text()
    assert f"cause: {cause}" in text and expected in text and "evidence:" in text
    assert FAKE_TOKEN not in text


def test_pasted_error_text(tmp_path, emulator):
    report = run(RunConfig(NOTEBOOKS, tmp_path, run_id="paste", only=("04",), keep=True,
                           progress=False, environment={"NBHELPERS_EMULATOR_URL": emulator.url},
                           parameters={"ERROR_TEXT": "google.api_core.exceptions."
                                       "ResourceExhausted: 429 The following quota metrics "
                                       "exceed quota limits: aiplatform.googleapis.com/"
                                       "custom_model_serving_nvidia_h100_gpus"}))
    assert report.runs[0].ok and report.runs[0].results == {"diagnosis": "quota"}


def test_the_logs_of_a_deployment_that_failed_days_ago_are_read(session, emulator):
    """Cloud Logging's SDK reads only the last day unless the filter names a time; the
    emulator keeps that rule, and diagnosis asks for the whole retention window."""
    from google.cloud import aiplatform
    from google.cloud import logging as cloud_logging

    endpoint = aiplatform.Endpoint.create(display_name="old", labels=session.settings.labels())
    emulator.vertex.logging.log(endpoint.resource_name, [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"])
    for entry in emulator.vertex.state.data["logs"][endpoint.resource_name]:
        entry["t"] -= 2 * 86400  # two days ago
    client = cloud_logging.Client(project=session.settings.project,
                                  credentials=session.credentials, _use_grpc=False,
                                  client_options=session.client_options())
    by_default = client.list_entries(filter_=f'resource.labels.endpoint_id="{endpoint.name}"')
    assert list(by_default) == []  # the SDK's own one-day window, as on Google
    report = nbhelpers.diagnose_endpoint(session, endpoint.name)
    assert report.diagnosis.kind == "oom", report.diagnosis
    assert any("CUDA out of memory" in line for line in report.log_lines)
