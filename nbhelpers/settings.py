"""Who and where: project, region, bucket, backend, run id and owner, validated up front."""

from __future__ import annotations

import calendar
import getpass
import os
import time
from dataclasses import dataclass

from nbhelpers import state, validate
from nbhelpers.errors import ConfigError, choices

BACKENDS = ("auto", "vertex", "emulator")
DEFAULT_REGION = "us-central1"
EMULATOR_PROJECT = "rehearsal-project"
SUITE = "vertex-llama"
# Label keys on every resource the suite creates; cleanup searches by them.
LABEL_SUITE, LABEL_RUN, LABEL_OWNER, LABEL_MODEL = "nbh-suite", "nbh-run", "nbh-owner", "nbh-model"
LABEL_EXPIRES = "nbh-expires"  # UTC time after which `cleanup --expired` may delete it
EXPIRY_FORMAT = "%Y%m%d-%H%M"
DEFAULT_TTL_HOURS = 24.0


def expiry_label(now: float | None = None) -> str:
    """When resources made now expire: NBHELPERS_TTL_HOURS (default 24) from now, in UTC."""
    hours = float(os.environ.get("NBHELPERS_TTL_HOURS") or DEFAULT_TTL_HOURS)
    moment = (now if now is not None else time.time()) + hours * 3600
    return time.strftime(EXPIRY_FORMAT, time.gmtime(moment))


def is_expired(labels: dict[str, str], now: float | None = None) -> bool:
    value = labels.get(LABEL_EXPIRES, "")
    try:
        expires = calendar.timegm(time.strptime(value, EXPIRY_FORMAT))
    except ValueError:
        return False  # no (readable) expiry: never treated as expired
    return expires <= (now if now is not None else time.time())


@dataclass(frozen=True, kw_only=True)
class Settings:
    project: str
    region: str
    bucket_uri: str
    backend: str  # "vertex" or "emulator", never "auto"
    run_id: str
    owner: str  # already folded into the label alphabet

    @property
    def bucket_name(self) -> str:
        return self.bucket_uri[len("gs://"):]

    def labels(self, **extra: str) -> dict[str, str]:
        """The labels every resource of this run carries."""
        base = {LABEL_SUITE: SUITE, LABEL_RUN: validate.label_value(self.run_id),
                LABEL_OWNER: self.owner, LABEL_EXPIRES: expiry_label()}
        base.update({k: validate.label_value(v) for k, v in extra.items()})
        return validate.labels(base)

    def label_filter(self, *, whole_owner: bool = False) -> str:
        """A Vertex AI list filter matching this run's resources (or all of this owner's)."""
        terms = [f"labels.{LABEL_SUITE}={SUITE}", f"labels.{LABEL_OWNER}={self.owner}"]
        if not whole_owner:
            terms.append(f"labels.{LABEL_RUN}={validate.label_value(self.run_id)}")
        return " AND ".join(terms)


def _google_credentials_found() -> bool:
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            google.auth.default()
            return True
        except DefaultCredentialsError:
            return False
    except ImportError:
        return False


def resolve_backend(requested: str = "auto", project: str = "") -> str:
    """`NBHELPERS_BACKEND` wins; `auto` means Vertex AI when a project and credentials exist."""
    chosen = (os.environ.get("NBHELPERS_BACKEND") or requested or "auto").strip().lower()
    if chosen not in BACKENDS:
        raise ConfigError(f"unknown backend {chosen!r}; choose one of {choices(BACKENDS)}")
    if chosen == "auto":
        return "vertex" if project and _google_credentials_found() else "emulator"
    return chosen


def resolve(
    *,
    project: str = "",
    region: str = "",
    bucket_uri: str = "",
    backend: str = "auto",
    run_id: str = "",
    owner: str = "",
) -> Settings:
    """Fills blanks from the environment, then from the run's state file, and checks
    everything, raising ConfigError before any cloud call."""
    run_id = (
        run_id or os.environ.get("NBHELPERS_RUN_ID") or state.current_run_id()
        or state.new_run_id()
    ).strip()
    if not validate.label_value(run_id):
        raise ConfigError(f"run id {run_id!r} has no letters or digits to label resources with")
    earlier = state.RunState(run_id).data  # what the setup notebook of this run chose
    project = (project or os.environ.get("GOOGLE_CLOUD_PROJECT") or earlier.get("project")
               or "").strip()
    region = validate.region(region or os.environ.get("GOOGLE_CLOUD_REGION")
                             or earlier.get("region") or DEFAULT_REGION)
    resolved_backend = resolve_backend(backend, project)
    if not project:
        if resolved_backend == "vertex":
            raise ConfigError(
                "no project: set the project_id parameter or GOOGLE_CLOUD_PROJECT to your "
                "Google Cloud project id"
            )
        project = EMULATOR_PROJECT
    validate.project_id(project)
    bucket_uri = bucket_uri or earlier.get("bucket_uri") or ""
    if bucket_uri:
        validate.gs_uri(bucket_uri, bucket_only=True)
        bucket_uri = bucket_uri.rstrip("/")
    else:
        bucket_uri = "gs://" + validate.bucket_name(f"{project}-llama-{region}")
    owner_raw = (owner or os.environ.get("NBHELPERS_OWNER") or earlier.get("owner")
                 or getpass.getuser())
    owner_label = validate.label_value(owner_raw)
    if not owner_label:
        raise ConfigError(f"owner {owner_raw!r} has no letters or digits to label resources with")
    return Settings(project=project, region=region, bucket_uri=bucket_uri,
                    backend=resolved_backend, run_id=run_id, owner=owner_label)
