"""Batch prediction with the vLLM container: a Vertex AI BatchPredictionJob of the run's uploaded
model reads a JSONL prompt file from the run's folder of the staging bucket, starts its own
replicas of the container (billed while the job runs, nothing after), and writes one
`{"instance", "prediction"}` line per prompt back to the bucket; the results come back here in
the input's order (Vertex AI's output files keep no order of their own).

Everything is checked before the job exists: the prompts or the file's lines (with the rules
`predict` applies, `request_rules`), the machine, the labels, the bucket."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nbhelpers import checks, prices, request_rules, validate
from nbhelpers.catalog import ModelSpec
from nbhelpers.checks import shown
from nbhelpers.connection import Session
from nbhelpers.errors import ConfigError, DeploymentError
from nbhelpers.hardware import Hardware
from nbhelpers.prediction import Completion, parse_output
from nbhelpers.settings import LABEL_MODEL
from nbhelpers.waiting import MAX_DEPLOY_WAIT_S, wait_until

# The JobState names (google.cloud.aiplatform_v1.types.JobState) after which a job does nothing
# more: the SDK's own list of completed states, less PAUSED, which batch prediction never takes.
ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
# What one line of the input may carry: the predict route's instance (request_rules.instance).
INSTANCE_KEYS = ("prompt", "max_tokens", "temperature", "top_p", "top_k", "raw_response",
                 "dynamic-lora")
RESULTS_PREFIX = "prediction.results-"  # the output's shards: prediction.results-00000-of-N
ERRORS_PREFIX = "prediction.errors_stats-"
BATCH_FOLDER = "batch"  # under the run's folder of the staging bucket: one sub-folder per job
SHOWN = 20  # prompts a description lists with their answers


@dataclass(kw_only=True)
class BatchPrediction:
    """A batch prediction job of the run and what it answered, in the input's order."""

    job_name: str
    input_uri: str
    output_prefix: str
    instances: list[dict[str, Any]]  # what the job was given, in order
    state: str = ""  # the JobState name last seen
    output_directory: str = ""  # the folder the job wrote, under output_prefix
    results: list[Completion | None] = field(default_factory=list)  # None: see failures
    failures: dict[int, str] = field(default_factory=dict)  # input index -> why

    @property
    def job_id(self) -> str:
        return self.job_name.split("/")[-1]

    def wait(self, session: Session, *, timeout_s: int = MAX_DEPLOY_WAIT_S) -> BatchPrediction:
        """Waits for the job to end and reads its results (for `wait=False`)."""
        return wait_for_batch(session, self, timeout_s=timeout_s)

    def describe(self) -> str:
        """The job, then each prompt (the first SHOWN) with its answer or why it has none."""
        done = sum(r is not None for r in self.results)
        lines = [f"batch prediction job {self.job_id}: {self.state or 'submitted'}, {done} of "
                 f"{len(self.instances)} prompt(s) answered; input {self.input_uri}; output "
                 f"{self.output_directory or self.output_prefix}"]
        for index, instance in enumerate(self.instances[:SHOWN]):
            result = self.results[index] if index < len(self.results) else None
            answer = result.text if result is not None else \
                f"(no answer: {self.failures.get(index, 'not read yet')})"
            lines.append(f"{index + 1}. {instance.get('prompt')}\n   {answer}")
        if len(self.instances) > SHOWN:
            lines.append(f"... and {len(self.instances) - SHOWN} more")
        return "\n".join(lines)


def _instance_key(value: Any) -> str:
    """An instance as comparable text: JSON numbers may come back as floats (64 as 64.0)."""
    def normal(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {k: normal(v) for k, v in item.items()}
        if isinstance(item, list):
            return [normal(v) for v in item]
        return item

    return json.dumps(normal(value), sort_keys=True)


def _check_line(where: str, line: str, model: ModelSpec) -> dict[str, Any]:
    """One line of a JSONL input: an instance of the predict route, each value checked by the
    rule `predict` applies to it; the error names the line."""
    example = '{"prompt": "...", "max_tokens": 128}'
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where} is not JSON ({err.msg}, column {err.colno}): {shown(line)}; "
                          f"each line must be one instance like {example}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object like {example}, got {shown(value)}")
    unknown = sorted(set(value) - set(INSTANCE_KEYS))
    if unknown:
        raise ConfigError(f"{where} has key(s) {unknown} that the container's predict route "
                          f"does not take; the keys are {list(INSTANCE_KEYS)}")
    if "prompt" not in value:
        raise ConfigError(f"{where} has no 'prompt': each line must be like {example}")
    rules: dict[str, Callable[[Any], Any]] = {
        "prompt": lambda v: checks.text("prompt", v),
        "max_tokens": lambda v: request_rules.check_max_tokens(
            v, context=request_rules.context_of(model)),
        "temperature": request_rules.check_temperature,
        "top_p": request_rules.check_top_p,
        "top_k": lambda v: request_rules.check_top_k(v, vocab=request_rules.vocab_of(model)),
        "raw_response": lambda v: checks.flag("raw_response", v),
        "dynamic-lora": lambda v: checks.text("dynamic-lora", v),
    }
    for key, item in value.items():
        try:
            rules[key](item)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    return value


def check_jsonl(text: str, *, model: ModelSpec, source: str) -> list[dict[str, Any]]:
    """The instances of a JSONL prompt file, each line checked (blank lines are skipped, as
    the job skips them); raises ConfigError naming the first bad line."""
    instances = [_check_line(f"line {number} of {source}", line, model)
                 for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not instances:
        raise ConfigError(f"{source} holds no instance: write one JSON object per line, like "
                          '{"prompt": "...", "max_tokens": 128}')
    if len(instances) > request_rules.MAX_PROMPTS:
        raise ConfigError(f"{source} holds {len(instances):,} instances; at most "
                          f"{request_rules.MAX_PROMPTS:,} in one job")
    return instances


def _bucket(session: Session, *, skip: bool) -> Any:
    client = session.storage_client()
    bucket = client.lookup_bucket(session.settings.bucket_name)
    if bucket is None and not skip:
        raise ConfigError(f"the staging bucket {session.settings.bucket_uri} does not exist: "
                          "run 00_setup (nbhelpers.prepare_project) first; a batch job reads "
                          "its prompts from it and writes its results to it")
    return bucket


def run_batch_prediction(
    session: Session,
    deployment: Any,
    *,
    prompts: list[str] | None = None,
    input_uri: str = "",
    machine_type: str = "",
    replicas: int = 1,
    max_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 1,
    raw_response: bool = False,
    wait: bool = True,
    timeout_s: int = MAX_DEPLOY_WAIT_S,
    skip_without_bucket: bool = False,
) -> BatchPrediction | None:
    """Runs a batch prediction job of the deployment's uploaded vLLM model (a Deployment from
    deploy or reconnect) on `prompts` (written as JSONL to the run's folder of the bucket, each
    with the sampling settings) or on the JSONL file `input_uri` (its lines as they are, each
    checked). The job runs on `machine_type` (default: the deployment's) with `replicas` of its
    own, labelled with the run; with `wait` it waits, then returns the results in the input's
    order. Raises ConfigError before anything is created or written; with `skip_without_bucket`
    a run without a staging bucket (00_setup not run) says so and returns None instead."""
    model = request_rules.deployment_model(deployment)
    checks.flag("wait", wait)
    checks.flag("skip_without_bucket", skip_without_bucket)
    checks.whole("timeout_s", timeout_s, low=1, high=MAX_DEPLOY_WAIT_S)
    checks.whole("replicas", replicas, low=1, high=prices.MAX_REPLICAS)
    checks.text("machine_type", machine_type, empty_ok=True)
    hardware = Hardware.for_machine(machine_type or deployment.machine_type)
    checks.text("input_uri", input_uri, empty_ok=True)
    if (prompts is None) == (not input_uri):
        raise ConfigError("give either prompts (a list of texts) or input_uri (a gs:// JSONL "
                          f"file), not {'both' if input_uri else 'neither'}")
    settings = session.settings
    labels = settings.labels(**{LABEL_MODEL: deployment.key})
    if prompts is not None:
        batch = request_rules.check_prompts("prompts", prompts)
        instances = [request_rules.instance(p, max_tokens=max_tokens, temperature=temperature,
                                            top_p=top_p, top_k=top_k,
                                            raw_response=raw_response, model=model)
                     for p in batch]
    else:
        bucket_name, blob_name = validate.gs_uri(input_uri)
        blob = session.storage_client().bucket(bucket_name).get_blob(blob_name)
        if blob is None:
            raise ConfigError(f"input_uri {input_uri} does not exist (or these credentials "
                              "cannot read it)")
        instances = check_jsonl(blob.download_as_text(), model=model, source=input_uri)
    bucket = _bucket(session, skip=skip_without_bucket)
    if bucket is None:
        print(f"Skipped the batch prediction job: the staging bucket {settings.bucket_uri} "
              "does not exist yet. Run 00_setup, then this cell again.")
        return None
    folder = (f"{settings.files_prefix()}{BATCH_FOLDER}/"
              f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}")
    if prompts is not None:  # the only write before the job: the run's own folder
        bucket.blob(f"{folder}/input.jsonl").upload_from_string(
            "".join(json.dumps(i) + "\n" for i in instances), content_type="application/jsonl")
        input_uri = f"{settings.bucket_uri}/{folder}/input.jsonl"
    output_prefix = f"{settings.bucket_uri}/{folder}/output"
    job = _submit(session, deployment, hardware=hardware, replicas=replicas, labels=labels,
                  input_uri=input_uri, output_prefix=output_prefix, count=len(instances))
    found = BatchPrediction(job_name=job.resource_name, input_uri=input_uri,
                            output_prefix=output_prefix, instances=instances)
    return wait_for_batch(session, found, timeout_s=timeout_s) if wait else found


def _submit(session: Session, deployment: Any, *, hardware: Hardware, replicas: int,
            labels: dict[str, str], input_uri: str, output_prefix: str, count: int) -> Any:
    from google.cloud import aiplatform

    price = prices.estimate(hardware.machine_type, replicas=replicas,
                            region=session.settings.region)
    display = validate.display_name(
        f"{deployment.key}-batch-{validate.label_value(session.settings.run_id)}"[:128])
    job = aiplatform.BatchPredictionJob.submit(
        job_display_name=display, model_name=deployment.model_resource,
        instances_format="jsonl", predictions_format="jsonl", gcs_source=input_uri,
        gcs_destination_prefix=output_prefix, machine_type=hardware.machine_type,
        accelerator_type=hardware.accelerator_type,
        accelerator_count=hardware.accelerator_count, starting_replica_count=replicas,
        max_replica_count=replicas, labels=labels,
        service_account=session.state.get("service_account"))
    print(f"Batch prediction job {job.name}: {count} prompt(s) from {input_uri} on "
          f"{replicas} x {hardware.describe()}; it starts replicas of the container of its "
          "own (on Vertex AI that takes minutes, as a deployment does), and its results go to "
          f"{output_prefix}.\nPrice while it runs: {price.describe()}", flush=True)
    return job


def wait_for_batch(session: Session, batch: BatchPrediction, *,
                   timeout_s: int = MAX_DEPLOY_WAIT_S) -> BatchPrediction:
    """Waits, saying each state the job reaches, then reads the results back in the input's
    order. Raises DeploymentError when the job failed, was cancelled or is still running
    after `timeout_s` (it then keeps running: cleanup cancels it)."""
    from google.cloud import aiplatform

    checks.whole("timeout_s", timeout_s, low=1, high=MAX_DEPLOY_WAIT_S)
    job = aiplatform.BatchPredictionJob(batch.job_name)

    def ended() -> bool:
        state = job.state.name
        if state != batch.state:
            print(f"  job {batch.job_id}: {state}", flush=True)
            batch.state = state
        return state in ENDED

    if not wait_until(ended, f"batch prediction job {batch.job_id} ({len(batch.instances)} "
                      "prompts) to end", timeout_s=timeout_s):
        raise DeploymentError(
            f"batch prediction job {batch.job_id} was still {batch.state} after {timeout_s}s; "
            "it keeps running (and billing): wait again with .wait(session), or run the "
            "cleanup notebook, which cancels it")
    if batch.state != "JOB_STATE_SUCCEEDED":
        error = job.gca_resource.error.message or "no reason given"
        raise DeploymentError(
            f"batch prediction job {batch.job_id} ended {batch.state}: {error}\nThe job and its "
            "files stay, labelled with the run; the cleanup notebook deletes them.")
    batch.output_directory = job.gca_resource.output_info.gcs_output_directory
    _read_results(session, batch)
    answered = sum(r is not None for r in batch.results)
    print(f"Read {answered} of {len(batch.instances)} result(s) from "
          f"{batch.output_directory}.", flush=True)
    for index, why in list(batch.failures.items())[:3]:
        print(f"  prompt {index} failed: {why}")
    return batch


def _records(session: Session, directory: str, prefix: str) -> Iterable[dict[str, Any]]:
    bucket_name, folder = validate.gs_uri(directory)
    for blob in session.storage_client().list_blobs(bucket_name, prefix=folder.rstrip("/") + "/"):
        if blob.name.rsplit("/", 1)[-1].startswith(prefix):
            for line in blob.download_as_text().splitlines():
                if line.strip():
                    yield json.loads(line)


def _read_results(session: Session, batch: BatchPrediction) -> None:
    """Each output record goes back to the input line with the same instance (identical
    instances take their places in turn)."""
    places: dict[str, deque[int]] = defaultdict(deque)
    for index, instance in enumerate(batch.instances):
        places[_instance_key(instance)].append(index)
    results: list[Completion | None] = [None] * len(batch.instances)
    for prefix, failed in ((RESULTS_PREFIX, False), (ERRORS_PREFIX, True)):
        for record in _records(session, batch.output_directory, prefix):
            queue = places.get(_instance_key(record.get("instance")))
            if not queue:
                continue  # not one of ours: nothing to put it against
            index = queue.popleft()
            if failed:
                batch.failures[index] = str((record.get("error") or {}).get("message", record))
            else:
                raw = str(record.get("prediction"))
                results[index] = Completion(str(batch.instances[index].get("prompt", "")),
                                            parse_output(raw), raw)
    for index, result in enumerate(results):
        if result is None and index not in batch.failures:
            batch.failures[index] = "no output record for this prompt"
    batch.results = results


# --- cleanup by labels (teardown) ---------------------------------------------------------------
def labelled_jobs(query: str, keep: Callable[[dict[str, str]], bool]) -> list[Any]:
    """The batch prediction jobs the list filter returns and `keep(labels)` accepts."""
    from google.cloud import aiplatform

    return [job for job in aiplatform.BatchPredictionJob.list(filter=query)
            if keep(dict(job.labels))]


def end_jobs(jobs: list[Any], *, timeout_s: float) -> None:
    """Cancels the jobs still running and waits for each to end: only an ended job can be
    deleted, and a cancelled one stops billing."""
    running = [job for job in jobs if job.state.name not in ENDED]
    for job in running:
        print(f"  cancelling batch prediction job {job.name} ({job.state.name})")
        job.cancel()
    for job in running:
        def stopped(job: Any = job) -> bool:
            return job.state.name in ENDED

        if not wait_until(stopped, f"batch prediction job {job.name} to stop after its cancel",
                          timeout_s=timeout_s):
            raise DeploymentError(f"batch prediction job {job.name} was still "
                                  f"{job.state.name} {timeout_s:.0f}s after its cancel; run "
                                  "the cleanup again later")
