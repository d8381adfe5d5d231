"""Validation of names, labels and URIs against Google Cloud's rules, before any cloud call.

Rules are those documented for projects, Cloud Storage buckets and Vertex AI labels (2026).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from nbhelpers.errors import ConfigError, choices
from nbhelpers.limits import MAX_DISPLAY_NAME, MAX_LABELS

# Regions where Vertex AI online prediction is offered.
VERTEX_REGIONS: tuple[str, ...] = (
    "africa-south1", "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2",
    "asia-northeast3", "asia-south1", "asia-southeast1", "asia-southeast2",
    "australia-southeast1", "australia-southeast2", "europe-central2", "europe-north1",
    "europe-southwest1", "europe-west1", "europe-west2", "europe-west3", "europe-west4",
    "europe-west6", "europe-west8", "europe-west9", "europe-west12", "me-central1",
    "me-central2", "me-west1", "northamerica-northeast1", "northamerica-northeast2",
    "southamerica-east1", "southamerica-west1", "us-central1", "us-east1", "us-east4",
    "us-east5", "us-south1", "us-west1", "us-west2", "us-west3", "us-west4",
)  # fmt: skip

_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_BUCKET_PART_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*[a-z0-9]$|^[a-z0-9]$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_RUN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_LABEL_HASH_HEX = 8  # hex digits of sha256 kept when a value must be folded


def project_id(value: str) -> str:
    value = (value or "").strip()
    if not _PROJECT_RE.fullmatch(value):
        raise ConfigError(
            f"invalid project id {value!r}: a project id has 6-30 characters, lowercase letters, "
            "digits and hyphens, starts with a letter and does not end with a hyphen "
            "(it is the id, not the display name or the number)"
        )
    return value


def region(value: str) -> str:
    value = (value or "").strip()
    if value not in VERTEX_REGIONS:
        close = [r for r in VERTEX_REGIONS if r.split("-")[0] == value.split("-")[0]]
        raise ConfigError(
            f"unknown region {value!r}; choose one of {choices(close or VERTEX_REGIONS)}"
        )
    return value


def bucket_name(value: str) -> str:
    """Checks a bare bucket name (no gs:// prefix)."""
    name = value or ""
    problem = None
    limit = 222 if "." in name else 63
    if not 3 <= len(name) <= limit:
        problem = f"it must have 3-{limit} characters"
    elif any(not _BUCKET_PART_RE.fullmatch(part) or len(part) > 63 for part in name.split(".")):
        problem = (
            "it may hold only lowercase letters, digits, '-', '_' and '.', and must start and "
            "end with a letter or digit"
        )
    elif name.startswith("goog") or "google" in name or "g00gle" in name:
        problem = "it must not start with 'goog' nor contain 'google'"
    else:
        try:
            ipaddress.ip_address(name)
            problem = "it must not be an IP address"
        except ValueError:
            pass
    if problem:
        raise ConfigError(f"invalid bucket name {name!r}: {problem}")
    return name


def gs_uri(value: str, *, bucket_only: bool = False) -> tuple[str, str]:
    """Splits `gs://BUCKET[/OBJECT]` into (bucket, object path), checking the bucket name."""
    if not isinstance(value, str) or not value.startswith("gs://"):
        raise ConfigError(
            f"malformed Cloud Storage URI {value!r}: write it as gs://BUCKET"
            + ("" if bucket_only else "[/PATH]")
        )
    bucket, _, path = value[len("gs://"):].partition("/")
    try:
        bucket_name(bucket)
    except ConfigError as err:
        raise ConfigError(
            f"malformed Cloud Storage URI {value!r} (write gs://BUCKET/...): {err}"
        ) from None
    if bucket_only and path.strip("/"):
        raise ConfigError(
            f"expected a bucket URI without a path, got {value!r}; use gs://{bucket}"
        )
    return bucket, path.strip("/")


def label_value(text: str) -> str:
    """A label value for any text (an e-mail, a run id, a model key). A label-safe value stays
    as it is; any other is folded into the label alphabet and ends with 8 hex digits of the
    sha256 of the original, so two different originals never share a label (cleanup finds
    resources by these labels: a shared one would delete another person's or run's)."""
    text = text or ""
    if _LABEL_VALUE_RE.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_LABEL_HASH_HEX]
    folded = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")
    folded = folded[:63 - 1 - _LABEL_HASH_HEX].rstrip("-")
    return f"{folded}-{digest}" if folded else digest


def run_id(value: str) -> str:
    """Run ids label every resource of a run, so they are refused rather than folded: a folded
    id could name another run's resources."""
    if not isinstance(value, str) or not _RUN_ID_RE.fullmatch(value):
        raise ConfigError(
            f"invalid run id {value!r}: a run id has 1-63 characters, lowercase letters, digits, "
            "'-' and '_', and starts with a letter or digit (e.g. 'run-7'); leave it empty for "
            "a new one"
        )
    return value


def labels(mapping: dict[str, str]) -> dict[str, str]:
    if len(mapping) > MAX_LABELS:
        raise ConfigError(f"{len(mapping)} labels given; a resource holds at most {MAX_LABELS}")
    for key, value in mapping.items():
        if not _LABEL_KEY_RE.fullmatch(key):
            raise ConfigError(
                f"invalid label key {key!r}: 1-63 lowercase letters, digits, '_' or '-', "
                "starting with a letter"
            )
        if not _LABEL_VALUE_RE.fullmatch(value):
            raise ConfigError(
                f"invalid label value {value!r} for {key!r}: at most 63 lowercase letters, "
                "digits, '_' or '-'"
            )
    return dict(mapping)


def display_name(value: str) -> str:
    if not value or len(value) > MAX_DISPLAY_NAME:
        raise ConfigError(
            f"display name {value!r} must have 1-{MAX_DISPLAY_NAME} characters"
        )
    return value
