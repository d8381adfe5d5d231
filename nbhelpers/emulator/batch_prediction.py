"""Vertex AI batch prediction jobs (`batchPredictionJobs`): create, get, list, cancel, delete.

A job of the vLLM container runs as Google runs one (sources in docs/google-contract.md): it
waits PENDING while its own replica of the model's container starts (the machinery of
deployments: `startup.start_replica`), turns RUNNING, sends the JSONL input's lines as
`{"instances": [...]}` to the container's predict route, `batchSize` at a time, and writes one
`{"instance", "prediction"}` line per instance (`{"instance", "error"}` for those the container
refused) to `prediction-<model display name>-<time>/prediction.results-00000-of-00001` under
the output prefix, in Cloud Storage; then SUCCEEDED, or FAILED with the reason.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from nbhelpers.emulator.cloud_logging import CloudLogging
from nbhelpers.emulator.common import LOCATION_PATH, ApiError, Route, State, now
from nbhelpers.emulator.deployments import Deployments, machine_spec
from nbhelpers.emulator.operations import Operations
from nbhelpers.emulator.replica import Replica
from nbhelpers.emulator.startup import QuotaFailure, StartupFailure, start_replica
from nbhelpers.emulator.vertex_ai import (
    EMPTY,
    find_model,
    matches,
    parent,
    parse_filter,
)

JOBS = "batchPredictionJobs"  # the state file's collection
_COLLECTION = LOCATION_PATH + r"/batchPredictionJobs"
_JOB = _COLLECTION + r"/(?P<jid>[^/:]+)"
PENDING, RUNNING, SUCCEEDED, FAILED = ("JOB_STATE_PENDING", "JOB_STATE_RUNNING",
                                       "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED")
CANCELLING, CANCELLED = "JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"
ENDED = (SUCCEEDED, FAILED, CANCELLED)
# The shard names Vertex AI writes for a custom container's JSONL output.
RESULTS_FILE = "prediction.results-00000-of-00001"
ERRORS_FILE = "prediction.errors_stats-00000-of-00001"
DEFAULT_BATCH_SIZE = 64  # instances per request to a replica: the SDK's documented default


def _split_gs(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise ValueError(f"not a gs://BUCKET/OBJECT URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


def _stamp(seconds: float) -> str:
    """The output folder's time: ISO-8601 with milliseconds, as Google's reference names it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + \
        f".{int(seconds * 1000) % 1000:03d}Z"


class BatchPrediction:
    """The jobs, kept in the state file; each runs in a thread of its own. `storage_url`
    answers where the emulator's Cloud Storage serves (known only once it has started)."""

    def __init__(self, state: State, operations: Operations, logging: CloudLogging,
                 deployments: Deployments, storage_url: Callable[[], str | None]):
        self.state, self.operations, self.logging = state, operations, logging
        self.deployments, self.storage_url = deployments, storage_url
        self._cancel: dict[str, threading.Event] = {}
        with state.lock:
            jobs = state.data.setdefault(JOBS, {})
            for job in jobs.values():  # their threads ended with the previous process
                if job["state"] not in ENDED:
                    self._end(job, FAILED, error="The job was aborted: the emulator restarted.")

    def routes(self) -> list[Route]:
        return [("POST", _COLLECTION, self.create),
                ("GET", _COLLECTION, self.list),
                ("GET", _JOB, self.get),
                ("POST", _JOB + r":cancel", self.cancel),
                ("DELETE", _JOB, self.delete)]

    # --- the REST surface ----------------------------------------------------------------
    def create(self, body: dict[str, Any], *, project: str, location: str,
               **_: Any) -> dict[str, Any]:
        model = find_model(self.state, project=project, location=location,
                           mid=str(body.get("model") or "").split("/")[-1])
        source = (body.get("inputConfig") or {})
        uris = list((source.get("gcsSource") or {}).get("uris") or [])
        destination = ((body.get("outputConfig") or {}).get("gcsDestination") or {})
        if source.get("instancesFormat") != "jsonl" or not uris:
            raise ApiError(400, "batch_prediction_job.input_config: the emulator serves "
                           "instances_format 'jsonl' from gcs_source URIs; got "
                           f"{source.get('instancesFormat')!r} from {uris or 'no URI'}.")
        if (body.get("outputConfig") or {}).get("predictionsFormat") != "jsonl" \
                or not str(destination.get("outputUriPrefix", "")).startswith("gs://"):
            raise ApiError(400, "batch_prediction_job.output_config: predictions_format "
                           "'jsonl' to a gcs_destination output_uri_prefix (gs://) is "
                           "required.")
        for uri in uris:
            try:
                _split_gs(uri)
            except ValueError as err:
                raise ApiError(400, f"batch_prediction_job.input_config.gcs_source: {err}") \
                    from None
        resources = dict(body.get("dedicatedResources") or {})
        machine = machine_spec(resources)  # a custom container needs dedicated resources
        name = f"{parent(project, location)}/{JOBS}/{self.state.next_id()}"
        job = {**body, "name": name, "model": model["name"], "modelVersionId": "1",
               "dedicatedResources": {**resources, "machineSpec": machine},
               "labels": body.get("labels") or {}, "state": PENDING, "createTime": now(),
               "updateTime": now()}
        with self.state.lock:
            self.state.data[JOBS][name] = job
            self.state.save()
            self._cancel[name] = threading.Event()
        threading.Thread(target=self._run, args=(name,), daemon=True,
                         name=f"batch-job-{name.split('/')[-1]}").start()
        return job

    def list(self, body: dict[str, Any], *, project: str, location: str,
             query: dict[str, str], **_: Any) -> dict[str, Any]:
        terms = parse_filter(query.get("filter", ""))
        prefix = f"{parent(project, location)}/{JOBS}/"
        found = [job for name, job in self.state.data[JOBS].items()
                 if name.startswith(prefix) and matches(job, terms)]
        return {JOBS: found} if found else {}

    def _find(self, project: str, location: str, jid: str) -> dict[str, Any]:
        name = f"{parent(project, location)}/{JOBS}/{jid}"
        job = self.state.data[JOBS].get(name)
        if job is None:
            raise ApiError(404, f'The BatchPredictionJob "{name}" does not exist.')
        return job

    def get(self, body: dict[str, Any], *, project: str, location: str, jid: str,
            **_: Any) -> dict[str, Any]:
        return self._find(project, location, jid)

    def cancel(self, body: dict[str, Any], *, project: str, location: str, jid: str,
               **_: Any) -> dict[str, Any]:
        """Best effort, as Google's: CANCELLING at once, CANCELLED once the job's thread
        stops; what it wrote stays. An ended job cannot be cancelled."""
        job = self._find(project, location, jid)
        with self.state.lock:
            if job["state"] in ENDED:
                raise ApiError(400, f"BatchPredictionJob {job['name']} is in state "
                               f"{job['state']} and cannot be cancelled.",
                               "FAILED_PRECONDITION")
            job.update(state=CANCELLING, updateTime=now())
            self.state.save()
            event = self._cancel.get(job["name"])
        if event is None:  # no thread runs it (a restart): nothing to wait for
            self._end(job, CANCELLED)
        else:
            event.set()
        return {}

    def delete(self, body: dict[str, Any], *, project: str, location: str, jid: str,
               **_: Any) -> dict[str, Any]:
        job = self._find(project, location, jid)
        with self.state.lock:
            if job["state"] not in ENDED:
                raise ApiError(400, f"BatchPredictionJob {job['name']} is in state "
                               f"{job['state']}; cancel it and wait for it to end before "
                               "deleting it.", "FAILED_PRECONDITION")
            del self.state.data[JOBS][job["name"]]
            self._cancel.pop(job["name"], None)
            self.state.save()
        return self.operations.create(job["name"], {"@type": EMPTY})

    # --- running a job -------------------------------------------------------------------
    def _end(self, job: dict[str, Any], state: str, *, error: str = "",
             code: int = 3) -> None:
        with self.state.lock:
            job.update(state=state, updateTime=now(), endTime=now())
            if error:
                job["error"] = {"code": code, "message": error}
            self.state.save()

    def _storage(self) -> Any:
        url = self.storage_url()
        if not url:
            raise RuntimeError("this emulator runs without Cloud Storage, which batch "
                               "prediction reads its input from and writes its output to")
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="emulator", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": url})

    def _run(self, name: str) -> None:
        job = self.state.data[JOBS][name]
        cancelled = self._cancel[name]
        replica: Replica | None = None
        try:
            if cancelled.wait(self.deployments.deploy_seconds):
                return self._end(job, CANCELLED)
            model = self.state.data["models"].get(job["model"])
            if model is None:
                return self._end(job, FAILED, error=f"The Model {job['model']} was deleted.",
                                 code=5)
            machine = job["dedicatedResources"]["machineSpec"]
            try:
                replica, lines = start_replica(
                    model["containerSpec"], machine,
                    service_seconds=self.deployments.service_seconds,
                    engine=self.deployments.engine,
                    on_log=lambda more: self.logging.log(name, more))
                self.logging.log(name, lines)
            except QuotaFailure as failure:
                return self._end(job, FAILED, error=str(failure), code=8)
            except StartupFailure as failure:
                self.logging.log(name, failure.lines)
                return self._end(job, FAILED, error="Model server exited unexpectedly: "
                                 f"{failure.lines[-1] if failure.lines else 'no output'}")
            with self.state.lock:
                if job["state"] == PENDING:
                    job.update(state=RUNNING, startTime=now(), updateTime=now())
                    self.state.save()
            self._predict_all(job, replica, cancelled)
        except Exception as err:  # the job fails with the reason; the emulator goes on
            self._end(job, FAILED, error=f"{type(err).__name__}: {err}", code=13)
        finally:
            if replica is not None:
                replica.stop()
            self._cancel.pop(name, None)
        return None

    def _predict_all(self, job: dict[str, Any], replica: Replica,
                     cancelled: threading.Event) -> None:
        client = self._storage()
        lines: list[str] = []
        for uri in job["inputConfig"]["gcsSource"]["uris"]:
            bucket, blob = _split_gs(uri)
            found = client.bucket(bucket).get_blob(blob)
            if found is None:
                return self._end(job, FAILED, code=5, error=f"Input file {uri} does not exist "
                                 "or the job's service account cannot read it.")
            lines += [line for line in found.download_as_text().splitlines() if line.strip()]
        size = int((job.get("manualBatchTuningParameters") or {}).get("batchSize")
                   or DEFAULT_BATCH_SIZE)
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for start in range(0, len(lines), size):
            if cancelled.is_set():
                return self._end(job, CANCELLED)
            chunk: list[Any] = []
            for line in lines[start:start + size]:
                try:
                    chunk.append(json.loads(line))
                except json.JSONDecodeError as err:
                    errors.append({"instance": line, "error": {
                        "status": "INVALID_ARGUMENT", "message": f"not JSON: {err}"}})
            if chunk:
                status, reply = _post(replica.url + replica.predict_route, {"instances": chunk})
                if status == 200 and len(reply.get("predictions") or []) == len(chunk):
                    results += [{"instance": i, "prediction": p}
                                for i, p in zip(chunk, reply["predictions"], strict=True)]
                else:
                    errors += [{"instance": i, "error": {"status": "INVALID_ARGUMENT",
                                                         "message": json.dumps(reply)}}
                               for i in chunk]
        if cancelled.is_set():
            return self._end(job, CANCELLED)
        model = self.state.data["models"].get(job["model"]) or {}
        prefix = job["outputConfig"]["gcsDestination"]["outputUriPrefix"].rstrip("/")
        folder = f"{prefix}/prediction-{model.get('displayName', 'model')}-{_stamp(time.time())}"
        bucket, path = _split_gs(folder)
        for file_name, records in ((RESULTS_FILE, results), (ERRORS_FILE, errors)):
            if records or file_name == RESULTS_FILE:
                client.bucket(bucket).blob(f"{path}/{file_name}").upload_from_string(
                    "".join(json.dumps(r) + "\n" for r in records),
                    content_type="application/jsonl")
        with self.state.lock:
            job["outputInfo"] = {"gcsOutputDirectory": folder}
            job["completionStats"] = {"successfulCount": str(len(results)),
                                      "failedCount": str(len(errors))}
        if errors and not results:
            return self._end(job, FAILED, error=f"All {len(errors)} instances failed; see "
                             f"{folder}/{ERRORS_FILE}.")
        return self._end(job, SUCCEEDED)


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except json.JSONDecodeError:
            return err.code, {"error": err.reason}
