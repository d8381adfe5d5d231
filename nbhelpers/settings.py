"""Who and where: project, region, bucket, backend, run id and owner, validated up front."""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Callable
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
RUN_FILES = "nbhelpers-runs"  # the folder of the staging bucket that holds each run's files


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
    run_id: str  # label-safe as given (validate.run_id)
    identity: str  # the Google account the suite runs as, e.g. alice@example.com
    owner: str  # the identity as a label value (validate.label_value): labels and filters

    @property
    def bucket_name(self) -> str:
        return self.bucket_uri[len("gs://"):]

    def files_prefix(self, *, whole_owner: bool = False) -> str:
        """Where this run (or all of this owner's runs) keeps files in the staging bucket, which
        the whole project shares: a run's cleanup deletes these, never the bucket."""
        owner = f"{RUN_FILES}/{self.owner}/"
        return owner if whole_owner else f"{owner}{validate.label_value(self.run_id)}/"

    @property
    def files_uri(self) -> str:
        """This run's folder as a gs:// URI: the SDK's staging files go there too."""
        return f"{self.bucket_uri}/{self.files_prefix().rstrip('/')}"

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


def _owner(identity: str, requested: str) -> tuple[str, str]:
    """The identity and its label value. An explicit owner must be that identity: labelling
    (and so cleaning up) as someone else would touch their resources."""
    identity = (identity or "").strip().lower()
    if "@" not in identity:
        raise ConfigError(
            f"no Google identity to own the resources (got {identity!r}): sign in to Google "
            "Cloud with credentials that carry your e-mail (the userinfo.email scope)"
        )
    requested = (requested or "").strip()
    if requested and requested.casefold() != identity.casefold():
        raise ConfigError(
            f"owner {requested!r} is not who the credentials are ({identity!r}); the owner is "
            "always the signed-in Google identity, so nobody labels or cleans up as someone "
            "else: leave the owner parameter and NBHELPERS_OWNER empty (or set them to "
            f"{identity!r}), or sign in as {requested!r}"
        )
    return identity, validate.label_value(identity)


def resolve(
    *,
    project: str = "",
    region: str = "",
    bucket_uri: str = "",
    backend: str = "auto",
    run_id: str = "",
    owner: str = "",
    identify: Callable[[str], str],
) -> Settings:
    """Fills blanks from the environment, then from the run's state file, and checks
    everything, raising ConfigError before any cloud call. `identify(backend)` returns the
    Google identity the suite runs as on that backend; it is called once, after every local
    check, since it is the one step that needs the network (and the backend)."""
    run_id = validate.run_id(
        (run_id or os.environ.get("NBHELPERS_RUN_ID") or state.current_run_id()
         or state.new_run_id()).strip()
    )
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
    requested_owner = owner or os.environ.get("NBHELPERS_OWNER") or ""
    identity, owner_label = _owner(identify(resolved_backend), requested_owner)
    return Settings(project=project, region=region, bucket_uri=bucket_uri,
                    backend=resolved_backend, run_id=run_id, identity=identity,
                    owner=owner_label)
