"""Find and delete what the suite created, by its labels, and nothing else: endpoints, models and
batch prediction jobs labelled with this run (or owner), and the files under this run's folder of
the staging bucket, which the whole project shares and no run deletes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from nbhelpers import checks, prices, validate
from nbhelpers.batch_jobs import end_jobs, labelled_jobs
from nbhelpers.connection import Session
from nbhelpers.errors import ConfigError
from nbhelpers.releases import DEPLOYMENT_TIMEOUT_S
from nbhelpers.settings import LABEL_OWNER, LABEL_RUN, LABEL_SUITE, SUITE, is_expired
from nbhelpers.state import is_mirror
from nbhelpers.validate import label_value
from nbhelpers.waiting import MAX_DEPLOY_WAIT_S, wait_for_deploys

# Cloud Storage takes at most 100 calls in one batch request; the SDK's own
# `bucket.delete(force=True)` refuses buckets of more than 256 objects, so a run's files are
# deleted here, in batches, whatever their number.
DELETE_BATCH = 100
FILES_SHOWN = 20  # files listed by name; the rest are counted


@dataclass
class Inventory:
    endpoints: list[Any] = field(default_factory=list)
    models: list[Any] = field(default_factory=list)
    files: list[Any] = field(default_factory=list)  # blobs under the run's folder
    batch_jobs: list[Any] = field(default_factory=list)  # BatchPredictionJobs (batch_jobs)

    def describe(self) -> str:
        lines = [f"batch prediction job {j.name} {j.display_name!r} ({j.state.name})"
                 for j in self.batch_jobs]
        lines += [f"endpoint {e.name} {e.display_name!r} "
                  f"({len(e.gca_resource.deployed_models)} deployed model(s))"
                  for e in self.endpoints]
        lines += [f"model {m.name} {m.display_name!r}" for m in self.models]
        lines += [f"file gs://{f.bucket.name}/{f.name}" for f in self.files[:FILES_SHOWN]]
        if len(self.files) > FILES_SHOWN:
            lines.append(f"... and {len(self.files) - FILES_SHOWN} more file(s) under the "
                         "same folder")
        return "\n".join(lines) or "nothing labelled for this run"

    def __len__(self) -> int:
        return len(self.endpoints) + len(self.models) + len(self.files) + len(self.batch_jobs)


def _ours(labels: dict[str, str], session: Session, whole_owner: bool) -> bool:
    """Checked again in code, whatever the server-side filter returned."""
    settings = session.settings
    return (labels.get(LABEL_SUITE) == SUITE and labels.get(LABEL_OWNER) == settings.owner
            and (whole_owner or labels.get(LABEL_RUN) == label_value(settings.run_id)))


def _labelled(query: str, keep: Any) -> Inventory:
    """Endpoints, models and batch prediction jobs the server-side filter returns and
    `keep(labels)` accepts."""
    from google.cloud import aiplatform

    return Inventory(
        endpoints=[e for e in aiplatform.Endpoint.list(filter=query) if keep(dict(e.labels))],
        models=[m for m in aiplatform.Model.list(filter=query) if keep(dict(m.labels))],
        batch_jobs=labelled_jobs(query, keep),
    )


def find_resources(session: Session, *, whole_owner: bool = False,
                   include_files: bool = False) -> Inventory:
    """This run's labelled endpoints and models (or all of this owner's runs), and with
    `include_files` the files under its folder of the staging bucket."""
    checks.flag("whole_owner", whole_owner)
    checks.flag("include_files", include_files)
    settings = session.settings
    inventory = _labelled(settings.label_filter(whole_owner=whole_owner),
                          lambda labels: _ours(labels, session, whole_owner))
    if include_files:
        client = session.storage_client()
        if client.lookup_bucket(settings.bucket_name) is not None:
            prefix = settings.files_prefix(whole_owner=whole_owner)
            # The run's state mirror stays: it records the cleanup, and a recycled runtime
            # finds the run (and that nothing of it is left) through it.
            owner_prefix = settings.files_prefix(whole_owner=True)
            inventory.files = [b for b in client.list_blobs(settings.bucket_name, prefix=prefix)
                               if not is_mirror(b.name, owner_prefix)]
    return inventory


def _retry(action: Any, what: str, attempts: int = 6) -> None:
    """A model can refuse deletion for a short while after its undeploy: retry with backoff."""
    from google.api_core import exceptions

    for attempt in range(attempts):
        try:
            action()
            return
        except exceptions.NotFound:
            return
        except (exceptions.FailedPrecondition, exceptions.BadRequest) as err:
            if attempt == attempts - 1:
                raise
            print(f"  {what}: {err.message}; retrying in {2 ** attempt}s")
            time.sleep(2 ** attempt)


def _list_then_delete(inventory: Inventory, what: str, *, dry_run: bool,
                      wait_s: float) -> None:
    """Prints what goes (or would go, with dry_run), then deletes it unless dry_run."""
    verb = "Would delete" if dry_run else "Deleting"
    print(f"{verb} {len(inventory)} {what}:\n{inventory.describe()}")
    if not dry_run:
        _delete(inventory, wait_s=wait_s)


def cleanup(session: Session, *, dry_run: bool = True, whole_owner: bool = False,
            delete_files: bool = True, wait_s: float = DEPLOYMENT_TIMEOUT_S) -> Inventory:
    """Cancels this run's batch prediction jobs still running and deletes them once ended,
    undeploys and deletes its endpoints, then its models, then (unless
    `delete_files=False`) its files in the staging bucket; the bucket itself stays, as others'
    files may be in it. With dry_run, only lists what would go. A deployment still in
    progress cannot be deleted: cleanup waits for it to end (up to `wait_s`, the container's
    deployment timeout by default), then deletes it, rather than leave it to bill."""
    # A flag that merely looks false (0, "", None) must not delete for real.
    checks.flag("dry_run", dry_run)
    checks.flag("delete_files", delete_files)
    checks.number("wait_s", wait_s, low=0, high=MAX_DEPLOY_WAIT_S)
    inventory = find_resources(session, whole_owner=whole_owner, include_files=delete_files)
    _list_then_delete(inventory, "resource(s)", dry_run=dry_run, wait_s=wait_s)
    if dry_run:
        return inventory
    for key, record in list(session.state.deployments.items()):
        if any(record.get("endpoint_name") == e.resource_name for e in inventory.endpoints):
            session.state.forget_deployment(key)
    session.state.update(cleaned_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    return inventory


def cleanup_expired(session: Session, *, dry_run: bool = True, now: float | None = None,
                    wait_s: float = DEPLOYMENT_TIMEOUT_S) -> Inventory:
    """Deletes the suite's endpoints and models, of any owner, whose expiry label has passed:
    what a killed machine or an interrupted run left behind. Nothing without the suite's label
    and a past expiry is touched."""
    checks.flag("dry_run", dry_run)
    checks.number("wait_s", wait_s, low=0, high=MAX_DEPLOY_WAIT_S)
    inventory = _labelled(f"labels.{LABEL_SUITE}={SUITE}",
                          lambda labels: labels.get(LABEL_SUITE) == SUITE
                          and is_expired(labels, now))
    _list_then_delete(inventory, "expired resource(s)", dry_run=dry_run, wait_s=wait_s)
    return inventory


def _delete(inventory: Inventory, *, wait_s: float) -> None:
    # Batch jobs first: a running one bills and may still write files; it is cancelled and
    # waited for, as only an ended job can be deleted.
    end_jobs(inventory.batch_jobs, timeout_s=wait_s)
    for job in inventory.batch_jobs:
        _retry(job.delete, f"batch prediction job {job.name}")
    for endpoint in inventory.endpoints:
        wait_for_deploys(endpoint, timeout_s=wait_s)
        _retry(lambda e=endpoint: e.delete(force=True), f"endpoint {endpoint.name}")
    for model in inventory.models:
        _retry(model.delete, f"model {model.name}")
    _delete_files(inventory.files)


def _delete_files(blobs: list[Any]) -> None:
    """Deletes blobs in batch requests of DELETE_BATCH calls (one HTTP request each, instead
    of one per file); a call that failed inside a batch (a 404 of a file already gone
    included) is retried alone, where NotFound counts as deleted."""
    if not blobs:
        return
    client = blobs[0].client
    for start in range(0, len(blobs), DELETE_BATCH):
        chunk = blobs[start:start + DELETE_BATCH]
        with client.batch(raise_exception=False) as batch:
            for blob in chunk:
                blob.delete()
        replies = getattr(batch, "_responses", None) or []  # the SDK keeps each call's reply
        for blob, reply in zip(chunk, replies, strict=False):
            if not 200 <= reply.status_code < 300:
                _retry(blob.delete, f"file gs://{blob.bucket.name}/{blob.name}")


@dataclass(frozen=True, kw_only=True)
class BilledDeployment:
    """A model deployed on an endpoint: it bills by the hour, whoever made it."""

    endpoint_name: str
    display_name: str
    region: str
    deployed_model_id: str
    machine_type: str  # "" for automatic resources
    accelerator_type: str
    accelerator_count: int
    replicas: int  # the minimum kept running, each billed
    labels: dict[str, str]

    @property
    def owner(self) -> str:
        return self.labels.get(LABEL_OWNER, "")

    def describe(self) -> str:
        gpus = (f"{self.accelerator_count} x {self.accelerator_type}"
                if self.accelerator_count else "no GPU")
        who = (f"owner label {self.owner}, run {self.labels.get(LABEL_RUN, '?')}"
               if self.labels.get(LABEL_SUITE) == SUITE else
               "not the suite's (no nbh- labels)" if not self.owner else
               f"owner label {self.owner}")
        try:
            price = prices.estimate(self.machine_type, replicas=self.replicas,
                                    region=self.region).describe()
        except ConfigError:  # a machine outside the price table is listed all the same
            price = "price unknown"
        return (f"endpoint {self.endpoint_name.split('/')[-1]} {self.display_name!r} in "
                f"{self.region}: deployed model {self.deployed_model_id} on "
                f"{self.replicas} x {self.machine_type or 'automatic resources'} ({gpus}); "
                f"{who}; {price}")


def billing_deployments(session: Session, *, regions: tuple[str, ...] = ()) -> list[
        BilledDeployment]:
    """Read-only: every deployed model on every endpoint of the project in `regions` (default:
    the session's region), labelled or not, whoever made it, so nothing that bills is
    invisible. Nothing is changed; deleting another person's deployment is theirs to do."""
    from google.cloud import aiplatform

    wanted = [validate.region(r) for r in checks.sequence("regions", regions, low=0, high=50,
                                                           of="region names")]
    found = []
    for region in wanted or [session.settings.region]:
        for endpoint in aiplatform.Endpoint.list(location=region):
            for deployed in endpoint.gca_resource.deployed_models:
                resources = deployed.dedicated_resources
                spec = resources.machine_spec
                accelerator = spec.accelerator_type
                found.append(BilledDeployment(
                    endpoint_name=endpoint.resource_name, display_name=endpoint.display_name,
                    region=region, deployed_model_id=deployed.id,
                    machine_type=spec.machine_type,
                    accelerator_type=getattr(accelerator, "name", str(accelerator)),
                    accelerator_count=spec.accelerator_count,
                    replicas=max(resources.min_replica_count, 1),
                    labels=dict(endpoint.labels)))
    return found


def describe_billing(found: list[BilledDeployment], *, regions: tuple[str, ...] = ()) -> str:
    where = ", ".join(regions) if regions else "the session's region"
    if not found:
        return f"No deployed model in {where}: nothing of Vertex AI prediction bills there."
    return (f"{len(found)} deployed model(s) bill in {where} (read-only list; yours are "
            "deleted above, others' are their owners' to delete):\n"
            + "\n".join(f"  - {d.describe()}" for d in found))
