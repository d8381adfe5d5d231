"""Serving GPU quota: the limit (Cloud Quotas API) and what the project already uses in the
region (Cloud Monitoring's quota usage metric), read before a deployment is attempted.

A deployment without quota fails after the endpoint and model exist; checking first, usage
included, turns that into a clear message with the ways out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from nbhelpers.errors import ConfigError
from nbhelpers.hardware import ACCELERATORS, Hardware

SERVICE = "aiplatform.googleapis.com"
MONITORING_API = "https://monitoring.googleapis.com"
# Cloud Monitoring's gauge of allocation quota in use (monitored resource consumer_quota).
USAGE_METRIC = "serviceruntime.googleapis.com/quota/allocation/usage"
USAGE_WINDOW_S = 25 * 3600  # the newest point within a day: a gauge that rarely changes
QUOTA_HELP = "https://cloud.google.com/docs/quotas/view-manage#requesting_higher_quota"


def quota_id(accelerator_type: str, *, spot: bool = False) -> str:
    """Spot VMs draw on their own quota (Google's notebooks' common_util:
    CustomModelServingPreemptible{X}PerProjectPerRegion)."""
    family = ACCELERATORS[accelerator_type].quota_family
    return f"CustomModelServing{'Preemptible' if spot else ''}{family}PerProjectPerRegion"


@dataclass(frozen=True, kw_only=True)
class QuotaCheck:
    quota_id: str
    region: str
    limit: int | None  # None when the region has no value in the reply
    needed: int
    in_use: int | None = None  # None when the usage could not be read
    usage_note: str = ""  # why the usage is unknown

    @property
    def enough(self) -> bool:
        return self.limit is None or self.limit >= self.needed + (self.in_use or 0)

    def describe(self) -> str:
        limit = "unknown" if self.limit is None else str(self.limit)
        in_use = (f"unknown ({self.usage_note})" if self.in_use is None
                  else str(self.in_use))
        return (f"{self.quota_id} in {self.region}: limit {limit}, in use {in_use}, "
                f"this deployment needs {self.needed}")


def _limit(info: Any, region: str) -> int | None:
    """The region's own value, else the value for every region (no region dimension)."""
    limit = None
    for dimension in info.dimensions_infos:
        dimension_region = dict(dimension.dimensions).get("region")
        if dimension_region == region:
            return int(dimension.details.value)
        if dimension_region is None:
            limit = int(dimension.details.value)
    return limit


def gpus_in_use(session: Any, *, quota_metric: str, region: str) -> tuple[int | None, str]:
    """GPUs of `quota_metric` the project holds in `region`, from Cloud Monitoring: (count,
    "") or (None, why it could not be read). No series means nothing is in use."""
    from google.auth.transport.requests import AuthorizedSession

    root = (session.client_options() or {}).get("api_endpoint", MONITORING_API)
    metric_filter = (f'metric.type = "{USAGE_METRIC}" AND resource.type = "consumer_quota" '
                     f'AND resource.labels.service = "{SERVICE}" '
                     f'AND metric.labels.quota_metric = "{quota_metric}" '
                     f'AND resource.labels.location = "{region}"')
    end = time.time()
    url = (f"{root}/v3/projects/{session.settings.project}/timeSeries"
           f"?filter={quote(metric_filter)}"
           f"&interval.startTime={quote(_rfc3339(end - USAGE_WINDOW_S))}"
           f"&interval.endTime={quote(_rfc3339(end))}")
    try:
        response = AuthorizedSession(session.credentials).get(url, timeout=30)
    except OSError as err:
        return None, f"Cloud Monitoring unreachable: {type(err).__name__}"
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.reason
        return None, f"Cloud Monitoring answered {response.status_code}: {message}"
    used = 0
    for series in response.json().get("timeSeries", []):
        points = series.get("points") or []
        if points:  # newest first, as Monitoring returns them
            used += int(points[0]["value"].get("int64Value", 0))
    return used, ""


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def serving_quota(session: Any, hardware: Hardware, *, replicas: int = 1,
                  spot: bool = False) -> QuotaCheck:
    """The project's serving quota for the hardware's GPUs in the session's region (Spot
    VMs' own quota with `spot`), with the GPUs of that kind already in use there; a deployment
    that may scale to `replicas` needs that many machines' GPUs."""
    from google.cloud import cloudquotas_v1

    client = session.rest_client(cloudquotas_v1.CloudQuotasClient)
    qid = quota_id(hardware.accelerator_type, spot=spot)
    name = (f"projects/{session.settings.project}/locations/global/services/{SERVICE}/"
            f"quotaInfos/{qid}")
    info = client.get_quota_info(request={"name": name})
    region = session.settings.region
    in_use, note = gpus_in_use(session, quota_metric=info.metric, region=region)
    return QuotaCheck(quota_id=qid, region=region, limit=_limit(info, region),
                      needed=hardware.accelerator_count * replicas, in_use=in_use,
                      usage_note=note)


def require_quota(session: Any, hardware: Hardware, *, replicas: int = 1,
                  spot: bool = False) -> QuotaCheck:
    """Raises a ConfigError naming the ways out when the GPUs in use plus those needed
    (for the most replicas) exceed the quota; nothing has been created at that point."""
    check = serving_quota(session, hardware, replicas=replicas, spot=spot)
    if not check.enough:
        project = session.settings.project
        free = max((check.limit or 0) - (check.in_use or 0), 0)
        raise ConfigError(
            f"not enough serving quota: {check.describe()}, so {free} are free. Either "
            f"deploy with at most {free} GPU(s) of this kind (a smaller machine type or "
            "model, or fewer replicas), or in another region with quota, or undeploy what "
            "holds them, or "
            f"request an increase of '{check.quota_id}' for {check.region} (service "
            f"{SERVICE}) at https://console.cloud.google.com/iam-admin/quotas?project="
            f"{project} (how: {QUOTA_HELP})."
        )
    return check
