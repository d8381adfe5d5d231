"""Serving GPU quota, read through the Cloud Quotas API before a deployment is attempted.

A deployment without quota fails after the endpoint and model exist; checking first turns that
into a clear message with the quota to request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbhelpers.errors import ConfigError
from nbhelpers.hardware import ACCELERATORS, Hardware

SERVICE = "aiplatform.googleapis.com"


def quota_id(accelerator_type: str) -> str:
    family = ACCELERATORS[accelerator_type].quota_family
    return f"CustomModelServing{family}PerProjectPerRegion"


@dataclass(frozen=True, kw_only=True)
class QuotaCheck:
    quota_id: str
    region: str
    limit: int | None  # None when the region has no value in the reply
    needed: int

    @property
    def enough(self) -> bool:
        return self.limit is None or self.limit >= self.needed

    def describe(self) -> str:
        limit = "unknown" if self.limit is None else str(self.limit)
        return (f"{self.quota_id} in {self.region}: limit {limit}, this deployment needs "
                f"{self.needed}")


def serving_quota(session: Any, hardware: Hardware) -> QuotaCheck:
    """The project's serving quota for the hardware's GPUs in the session's region."""
    from google.cloud import cloudquotas_v1

    client = session.rest_client(cloudquotas_v1.CloudQuotasClient)
    qid = quota_id(hardware.accelerator_type)
    name = (f"projects/{session.settings.project}/locations/global/services/{SERVICE}/"
            f"quotaInfos/{qid}")
    info = client.get_quota_info(request={"name": name})
    region = session.settings.region
    limit = None
    for dimension in info.dimensions_infos:
        if dict(dimension.dimensions).get("region") in (region, None):
            limit = int(dimension.details.value)
            if dict(dimension.dimensions).get("region") == region:
                break
    return QuotaCheck(quota_id=qid, region=region, limit=limit, needed=hardware.accelerator_count)


def require_quota(session: Any, hardware: Hardware) -> QuotaCheck:
    """Raises a ConfigError that says what to request when the quota is below the GPUs needed."""
    check = serving_quota(session, hardware)
    if not check.enough:
        raise ConfigError(
            f"not enough serving quota: {check.describe()}. Request an increase of "
            f"'{check.quota_id}' for {check.region} (IAM & Admin > Quotas, service "
            f"{SERVICE}), or choose another region or machine type."
        )
    return check
