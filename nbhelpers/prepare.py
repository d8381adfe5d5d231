"""The tutorial's one-time project set-up, made idempotent: APIs, bucket, service account, roles.

Every step first reads the current state and changes only what is missing, so re-running the
setup notebook is safe.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from nbhelpers.connection import Session
from nbhelpers.errors import ConfigError

# Vertex AI and Compute Engine as in the tutorial; Cloud Quotas for the pre-deploy quota check.
REQUIRED_APIS = ("aiplatform.googleapis.com", "compute.googleapis.com",
                 "cloudquotas.googleapis.com")
BUCKET_ROLES = ("roles/storage.admin",)
PROJECT_ROLES = ("roles/storage.admin", "roles/aiplatform.user")
ENABLED = 2  # google.api.serviceusage.v1.State.ENABLED
IAM_POLICY_VERSION = 3  # the only version that shows (and keeps) conditional bindings
IAM_ATTEMPTS = 5  # read-modify-write rounds before giving up on a busy policy
IAM_BACKOFF_S = 0.5


@dataclass(kw_only=True)
class SetupReport:
    enabled_apis: list[str] = field(default_factory=list)
    already_enabled: list[str] = field(default_factory=list)
    bucket_uri: str = ""
    bucket_created: bool = False
    service_account: str = ""
    granted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"APIs enabled now: {', '.join(self.enabled_apis) or 'none'}; "
            f"already on: {', '.join(self.already_enabled) or 'none'}",
            f"bucket {self.bucket_uri}: {'created' if self.bucket_created else 'already there'}",
            f"service account: {self.service_account}",
            f"roles granted now: {', '.join(self.granted) or 'none (all were in place)'}",
        ]
        return "\n".join(lines)


def enable_apis(session: Session, report: SetupReport) -> None:
    from google.cloud import service_usage_v1

    client = session.rest_client(service_usage_v1.ServiceUsageClient)
    for api in REQUIRED_APIS:
        name = f"projects/{session.settings.project}/services/{api}"
        if client.get_service(request={"name": name}).state == ENABLED:
            report.already_enabled.append(api)
            continue
        client.enable_service(request={"name": name}).result(timeout=600)
        report.enabled_apis.append(api)


def ensure_bucket(session: Session, report: SetupReport) -> None:
    """Creates the staging bucket in the region, or checks that the existing one is there."""
    settings = session.settings
    client = session.storage_client()
    bucket = client.lookup_bucket(settings.bucket_name)
    region = settings.region.upper()
    if bucket is None:
        bucket = client.bucket(settings.bucket_name)
        bucket.labels = settings.labels()
        client.create_bucket(bucket, location=settings.region)
        report.bucket_created = True
    elif (bucket.location or "").upper() != region:
        raise ConfigError(
            f"bucket {settings.bucket_uri} is in {bucket.location}, not in {settings.region}: "
            "Vertex AI needs its staging bucket in the same region. Choose another bucket_uri "
            f"(or leave it empty to use gs://{settings.project}-llama-{settings.region}), or "
            f"set region to {bucket.location.lower()}."
        )
    report.bucket_uri = settings.bucket_uri


def default_service_account(session: Session) -> str:
    """PROJECT_NUMBER-compute@developer.gserviceaccount.com, the number read from the project."""
    from google.cloud import resourcemanager_v3

    client = session.rest_client(resourcemanager_v3.ProjectsClient)
    project = client.get_project(name=f"projects/{session.settings.project}")
    number = project.name.split("/")[-1]
    return f"{number}-compute@developer.gserviceaccount.com"


def grant_roles(session: Session, service_account: str, report: SetupReport) -> None:
    member = f"serviceAccount:{service_account}"
    bucket = session.storage_client().bucket(session.settings.bucket_name)
    policy = bucket.get_iam_policy(requested_policy_version=3)
    changed = False
    for role in BUCKET_ROLES:
        binding = next((b for b in policy.bindings
                        if b["role"] == role and not b.get("condition")), None)
        if binding is None:
            policy.bindings.append({"role": role, "members": {member}})
        elif member not in binding["members"]:
            binding["members"] = set(binding["members"]) | {member}
        else:
            continue
        changed = True
        report.granted.append(f"{role} on {session.settings.bucket_uri}")
    if changed:
        bucket.set_iam_policy(policy)

    granted = grant_project_roles(session, member)
    report.granted += [f"{role} on projects/{session.settings.project}" for role in granted]


def _unconditional(binding: Any) -> bool:
    """A binding without a condition: a conditional one with the same role is someone else's
    rule and must stay as it is, so our member never goes into it."""
    return not binding.HasField("condition")


def grant_project_roles(session: Session, member: str) -> list[str]:
    """Gives `member` the tutorial's project roles, touching only those bindings.

    The policy is read and written at version 3, so others' conditional bindings come back
    whole (a version-1 read shows them as `ROLE_withcond_HASH` without their condition, and a
    write of that would fail or drop them). The write carries the read's etag; when another
    administrator wrote in between, Google answers 409 ABORTED and the whole read-modify-write
    is repeated, a bounded number of times with backoff. Returns the roles granted now."""
    from google.api_core import exceptions
    from google.cloud import resourcemanager_v3

    client = session.rest_client(resourcemanager_v3.ProjectsClient)
    resource = f"projects/{session.settings.project}"
    for attempt in range(1, IAM_ATTEMPTS + 1):
        policy = client.get_iam_policy(request={
            "resource": resource, "options": {"requested_policy_version": IAM_POLICY_VERSION}})
        missing = []
        for role in PROJECT_ROLES:
            binding = next((b for b in policy.bindings if b.role == role and _unconditional(b)),
                           None)
            if binding is None:
                policy.bindings.add(role=role, members=[member])
            elif member not in binding.members:
                binding.members.append(member)
            else:
                continue
            missing.append(role)
        if not missing:
            return []
        policy.version = IAM_POLICY_VERSION
        try:
            client.set_iam_policy(request={"resource": resource, "policy": policy})
            return missing
        except exceptions.Conflict as err:  # ABORTED: 409, a Conflict on the REST transport
            if attempt == IAM_ATTEMPTS:
                raise ConfigError(
                    f"could not grant {', '.join(missing)} on {resource}: the project's IAM "
                    f"policy changed under each of {IAM_ATTEMPTS} attempts ({err.message}). "
                    "Run the setup again when other IAM changes have settled.") from None
            delay = IAM_BACKOFF_S * 2 ** (attempt - 1) * (1 + random.random())
            print(f"  project IAM policy changed since it was read; reading it again in "
                  f"{delay:.1f}s (attempt {attempt + 1} of {IAM_ATTEMPTS})")
            time.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def prepare_project(session: Session) -> SetupReport:
    """Runs every set-up step and records the service account in the run's state."""
    report = SetupReport()
    enable_apis(session, report)
    ensure_bucket(session, report)
    report.service_account = default_service_account(session)
    grant_roles(session, report.service_account, report)
    session.state.update(service_account=report.service_account, setup_done=True)
    return report
