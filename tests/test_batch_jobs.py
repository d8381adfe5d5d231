"""Batch prediction with the vLLM container (#17 item 6): the aiplatform SDK's
BatchPredictionJob against the emulator over HTTP, the JSONL in and out of its Cloud Storage,
validation before anything is created, and cleanup by labels."""

from __future__ import annotations

import json

import pytest
from google.cloud import aiplatform

import nbhelpers
from nbhelpers.batch_jobs import wait_for_batch
from nbhelpers.deployments import Deployment
from nbhelpers.emulator.batch_prediction import JOBS, RESULTS_FILE
from nbhelpers.errors import ConfigError, DeploymentError
from nbhelpers.validate import label_value
from tests.conftest import ALICE, FAKE_TOKEN

PROMPTS = ["What is a car?", "Why?", "What is a car?", "Name three colours."]


def _deployed(session, env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    nbhelpers.prepare_project(session)  # the staging bucket the job reads and writes
    plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", family="llama3.1",
                                     ask_for_token=False)
    return nbhelpers.deploy(session, plan)


def _blobs(session, prefix):
    return sorted(b.name for b in session.storage_client().list_blobs(
        session.settings.bucket_name, prefix=prefix))


def test_a_batch_job_answers_every_prompt_in_order_and_cleanup_leaves_nothing(session, env,
                                                                              capsys):
    deployment = _deployed(session, env)
    batch = nbhelpers.run_batch_prediction(session, deployment, prompts=PROMPTS, max_tokens=8,
                                           temperature=0.5)
    said = capsys.readouterr().out
    assert f"{len(PROMPTS)} prompt(s) from gs://" in said and "1 x g2-standard-12" in said
    assert "Price while it runs: about $" in said and "JOB_STATE_SUCCEEDED" in said

    assert batch.state == "JOB_STATE_SUCCEEDED" and batch.failures == {}
    assert [r.prompt for r in batch.results] == PROMPTS
    for prompt, result in zip(PROMPTS, batch.results, strict=True):
        assert result.raw.startswith(f"Prompt:\n{prompt}\nOutput:\n[rehearsal engine")
        assert len(result.text.split()) == 8  # max_tokens reached the container
    assert f"received {len('Name three colours.')} characters" in batch.results[3].text

    # What the SDK reads back: the run's labels, the plan's machine, the counts.
    job = aiplatform.BatchPredictionJob(batch.job_name)
    labels = dict(job.labels)
    assert labels.pop("nbh-expires")
    assert labels == {"nbh-suite": "vertex-llama", "nbh-run": "run-a",
                      "nbh-owner": label_value(ALICE), "nbh-model": "llama-3-1-8b-instruct"}
    machine = job.gca_resource.dedicated_resources.machine_spec
    assert (machine.machine_type, machine.accelerator_type.name, machine.accelerator_count) \
        == ("g2-standard-12", "NVIDIA_L4", 1)
    assert job.gca_resource.model == deployment.model_resource
    assert job.completion_stats.successful_count == len(PROMPTS)

    # In the bucket: the prompts as JSONL, and Google's output folder and shard name.
    run_prefix = session.settings.files_prefix()
    names = _blobs(session, run_prefix + "batch/")
    assert len(names) == 2 and names[0].endswith("/input.jsonl")
    assert batch.output_directory.startswith(batch.output_prefix + "/prediction-")
    assert names[1] == (batch.output_directory.split("/", 3)[3] + "/" + RESULTS_FILE)
    bucket = session.storage_client().bucket(session.settings.bucket_name)
    sent = [json.loads(line) for line in bucket.blob(names[0]).download_as_text().splitlines()]
    assert [i["prompt"] for i in sent] == PROMPTS
    assert (sent[0]["max_tokens"], sent[0]["temperature"]) == (8, 0.5)
    records = [json.loads(line) for line in bucket.blob(names[1]).download_as_text().splitlines()]
    assert [sorted(r) for r in records] == [["instance", "prediction"]] * len(PROMPTS)
    assert [r["instance"] for r in records] == sent

    # Google's shards keep no order: the results are put back in the input's order all the same.
    bucket.blob(names[1]).upload_from_string(
        "".join(json.dumps(r) + "\n" for r in reversed(records)))
    again = wait_for_batch(session, batch)
    assert [r.prompt for r in again.results] == PROMPTS
    assert again.results[1].raw == records[1]["prediction"]

    found = nbhelpers.find_resources(session, include_files=True)
    assert [j.resource_name for j in found.batch_jobs] == [batch.job_name]
    assert f"batch prediction job {batch.job_id}" in found.describe()
    assert len(found) == 1 + 1 + 1 + 2  # the job, endpoint, model and two files
    nbhelpers.cleanup(session, dry_run=False)
    assert len(nbhelpers.find_resources(session, include_files=True)) == 0
    assert aiplatform.BatchPredictionJob.list() == []
    assert _blobs(session, run_prefix + "batch/") == []


def test_cleanup_cancels_a_running_job_then_deletes_it(session, env, emulator):
    deployment = _deployed(session, env)
    emulator.vertex.deploy_seconds = 60  # the job's replica is still starting
    batch = nbhelpers.run_batch_prediction(session, deployment, prompts=["Hello"], wait=False)
    assert aiplatform.BatchPredictionJob(batch.job_name).state.name == "JOB_STATE_PENDING"
    removed = nbhelpers.cleanup(session, dry_run=False, wait_s=30)
    assert [j.resource_name for j in removed.batch_jobs] == [batch.job_name]
    assert aiplatform.BatchPredictionJob.list() == []
    assert emulator.vertex.state.data[JOBS] == {}
    assert len(nbhelpers.find_resources(session, include_files=True)) == 0


def test_a_failed_job_says_why_and_stays_labelled_for_cleanup(session, env, emulator):
    deployment = _deployed(session, env)
    emulator.vertex.deploy_seconds = 1.0  # time to take the input away before the job reads it
    batch = nbhelpers.run_batch_prediction(session, deployment, prompts=["Hello"], wait=False)
    session.storage_client().bucket(session.settings.bucket_name).blob(
        batch.input_uri.split("/", 3)[3]).delete()
    with pytest.raises(DeploymentError, match=r"ended JOB_STATE_FAILED: Input file gs://.*"
                                              r"input.jsonl does not exist") as failed:
        batch.wait(session)
    assert "the cleanup notebook deletes them" in str(failed.value)
    found = nbhelpers.find_resources(session)
    assert [j.resource_name for j in found.batch_jobs] == [batch.job_name]
    nbhelpers.cleanup(session, dry_run=False)
    assert aiplatform.BatchPredictionJob.list() == []


# A Deployment by hand: every refusal below comes before any call that would need it to exist.
HAND_MADE = Deployment(key="llama-3-1-8b-instruct", model_name="Llama-3.1-8B-Instruct",
                       endpoint_name="projects/1/locations/us-central1/endpoints/9",
                       model_resource="projects/1/locations/us-central1/models/9",
                       deployed_model_id="9", machine_type="g2-standard-12",
                       dedicated_endpoint=False)


BAD_LINES = [
    ('{"prompt": "ok"}\n{"prompt": "cut', "line 2 of gs://.* is not JSON"),
    ('["a list"]', "line 1 of .* must be a JSON object"),
    ('{"prompt": "ok", "max_token": 5}', r"key\(s\) \['max_token'\] .* the keys are"),
    ('{"max_tokens": 5}', "line 1 of .* has no 'prompt'"),
    ('{"prompt": "ok", "max_tokens": 0}', "line 1 of .*: max_tokens must be a whole number"),
    ('{"prompt": "ok", "top_p": 1.5}', "line 1 of .*: top_p must be a finite number above 0"),
    ('{"prompt": "hf_abcdefghijklmnopqrstuvwxyz0123"}', "looks like a Hugging Face token"),
    ("\n\n", "holds no instance"),
]
BAD_ARGUMENTS = [
    ({}, "give either prompts .* not neither"),
    ({"prompts": ["a"], "input_uri": "gs://b/x.jsonl"}, "not both"),
    ({"prompts": []}, "prompts must hold 1 to"),
    ({"prompts": ["a", 7]}, r"prompts\[1\] must be text"),
    ({"prompts": ["a"], "temperature": -1}, "temperature must be a finite number"),
    ({"prompts": ["a"], "machine_type": "n1-standard-4"}, "unknown machine type 'n1-standard-4'"),
    ({"prompts": ["a"], "replicas": 0}, "replicas must be a whole number from 1"),
    ({"prompts": ["a"], "wait": 1}, "wait must be True or False"),
    ({"input_uri": "gs:/nope"}, "gs://"),
    ({"input_uri": "gs://test-project-llama-us-central1/none.jsonl"}, "does not exist"),
]


def test_a_bad_jsonl_or_bad_arguments_are_refused_before_anything_is_created(session,
                                                                              emulator):
    nbhelpers.prepare_project(session)
    uri = f"{session.settings.files_uri}/mine/prompts.jsonl"
    bucket = session.storage_client().bucket(session.settings.bucket_name)
    cases = [({"input_uri": uri}, message, lines) for lines, message in BAD_LINES]
    cases += [(arguments, message, None) for arguments, message in BAD_ARGUMENTS]
    for arguments, message, lines in cases:
        if lines is not None:
            bucket.blob(uri.split("/", 3)[3]).upload_from_string(lines)
        with pytest.raises(ConfigError, match=message) as refused:
            nbhelpers.run_batch_prediction(session, HAND_MADE, **arguments)
        assert "hf_abcdefghijklmnopqrstuvwxyz0123" not in str(refused.value)
    assert emulator.vertex.state.data[JOBS] == {}
    assert _blobs(session, session.settings.files_prefix() + "batch/") == []


def test_without_a_staging_bucket_the_notebook_cell_skips_and_says_why(session, capsys):
    with pytest.raises(ConfigError, match="run 00_setup"):
        nbhelpers.run_batch_prediction(session, HAND_MADE, prompts=["a"])
    assert nbhelpers.run_batch_prediction(session, HAND_MADE, prompts=["a"],
                                          skip_without_bucket=True) is None
    assert "Skipped the batch prediction job: the staging bucket" in capsys.readouterr().out
