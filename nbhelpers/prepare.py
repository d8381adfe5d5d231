"""The tutorial's one-time project set-up, made idempotent: APIs, bucket, service account, roles.

Every step first reads the current state and changes only what is missing, so re-running the
setup notebook is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbhelpers.connection import Session
from nbhelpers.errors import ConfigError

# Vertex AI and Compute Engine as in the tutorial; Cloud Quotas for the pre-deploy quota check.
REQUIRED_APIS = ("aiplatform.googleapis.com", "compute.googleapis.com",
                 "cloudquotas.googleapis.com")
BUCKET_ROLES = ("roles/storage.admin",)
PROJECT_ROLES = ("roles/storage.admin", "roles/aiplatform.user")
ENABLED = 2  # google.api.serviceusage.v1.State.ENABLED


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
        binding = next((b for b in policy.bindings if b["role"] == role), None)
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

    from google.cloud import resourcemanager_v3

    client = session.rest_client(resourcemanager_v3.ProjectsClient)
    resource = f"projects/{session.settings.project}"
    project_policy = client.get_iam_policy(request={"resource": resource})
    missing = []
    for role in PROJECT_ROLES:
        binding = next((b for b in project_policy.bindings if b.role == role), None)
        if binding is None:
            project_policy.bindings.add(role=role, members=[member])
        elif member not in binding.members:
            binding.members.append(member)
        else:
            continue
        missing.append(role)
    if missing:
        client.set_iam_policy(request={"resource": resource, "policy": project_policy})
        report.granted += [f"{role} on {resource}" for role in missing]


def prepare_project(session: Session) -> SetupReport:
    """Runs every set-up step and records the service account in the run's state."""
    report = SetupReport()
    enable_apis(session, report)
    ensure_bucket(session, report)
    report.service_account = default_service_account(session)
    grant_roles(session, report.service_account, report)
    session.state.update(service_account=report.service_account, setup_done=True)
    return report
