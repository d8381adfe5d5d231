"""Waiting for deployments: polling with progress, a deployment in progress on an endpoint
(Vertex AI deletes nothing while one runs), and one deploy at a time per run and model."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from nbhelpers.connection import Session
from nbhelpers.errors import DeploymentError

MAX_DEPLOY_WAIT_S = 24 * 3600  # a bound on deploy's timeout_s: far past any real deployment


def wait_until(done: Callable[[], bool], what: str, *, timeout_s: float) -> bool:
    """Polls `done` until it holds (True) or `timeout_s` passes (False), saying what it waits
    for, less often as the wait grows (deploys take up to an hour). Polls quickly at first, so
    short waits end soon after they could."""
    started = time.monotonic()
    next_report, pause = 10.0, 0.05
    while not done():
        waited = time.monotonic() - started
        if waited >= timeout_s:
            return False
        if waited >= next_report:
            print(f"  ... {int(waited // 60)}m{int(waited % 60):02d}s: still waiting for {what}",
                  flush=True)
            next_report = next_report * 2 if next_report < 300 else next_report + 300
        time.sleep(min(pause, max(0.0, timeout_s - waited)))
        pause = min(pause * 1.5, 5.0)  # 0.05, 0.08, 0.11 s ...: a short deploy is seen soon
    return True


def deploys_in_progress(endpoint: Any) -> list[str]:
    """The endpoint's DeployModel operations that have not ended. Vertex AI refuses to delete
    an endpoint (or its model) while one runs, and a kernel that died while waiting leaves one
    running: this is how a re-run and cleanup find it."""
    from google.longrunning import operations_pb2

    running, token = [], ""
    while True:
        reply = endpoint.api_client.list_operations(request=operations_pb2.ListOperationsRequest(
            name=endpoint.resource_name, page_token=token))
        running += [op.name for op in reply.operations if not op.done
                    and op.metadata.type_url.endswith(".DeployModelOperationMetadata")]
        token = reply.next_page_token
        if not token:
            return running


def wait_for_deploys(endpoint: Any, *, timeout_s: float) -> bool:
    """Waits, with progress, until no deployment runs on the endpoint; True if one was running.
    Raises DeploymentError when one still runs after `timeout_s`."""
    if not deploys_in_progress(endpoint):
        return False
    print(f"A deployment is in progress on endpoint {endpoint.name}; waiting for it to end "
          f"(up to {timeout_s / 60:.0f} min) before going on.", flush=True)
    if not wait_until(lambda: not deploys_in_progress(endpoint),
                      f"the deployment in progress on endpoint {endpoint.name}",
                      timeout_s=timeout_s):
        raise DeploymentError(
            f"a deployment on endpoint {endpoint.name} was still in progress after "
            f"{timeout_s / 60:.0f} min; Vertex AI lets nothing delete it before it ends. Run "
            "this again later (the cleanup notebook deletes it once it has ended); its "
            "nbh-expires label lets `python -m nbhelpers cleanup --expired` find it too.")
    return True


@contextlib.contextmanager
def deploy_turn(session: Session, key: str, *, timeout_s: float) -> Iterator[None]:
    """One deployment at a time per run and model on this machine: kernels that share a run id
    take turns, so the second finds the first's deployment instead of paying for another. The
    lock is a file lock, which the operating system drops when a kernel dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the endpoint's labels still find the deployment
        yield
        return
    path = session.state.path.parent / f"deploy-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        def take() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        if not take():
            print(f"Another kernel of run {session.settings.run_id} is deploying {key} now; "
                  "waiting for it, then using its deployment.", flush=True)
            if not wait_until(take, f"the other kernel's deployment of {key}",
                              timeout_s=timeout_s):
                raise DeploymentError(
                    f"another kernel of run {session.settings.run_id} was still deploying "
                    f"{key} after {timeout_s / 60:.0f} min; run this cell again later")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
