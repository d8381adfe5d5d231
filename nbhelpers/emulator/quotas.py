"""Cloud Quotas (the serving GPU limits, on v1 for the SDK and v1beta for `gcloud beta quotas
info`) and the Cloud Monitoring series of their usage: the GPUs of the deployments live in each
region, as the quota system counts them. Sources in docs/google-contract.md."""

from __future__ import annotations

import re
from typing import Any

from nbhelpers.emulator.common import ApiError, Route, State, now, project_number
from nbhelpers.hardware import ACCELERATORS
from nbhelpers.validate import VERTEX_REGIONS

DEFAULT_GPU_QUOTA = 16
SERVICE = "aiplatform.googleapis.com"
USAGE_METRIC = "serviceruntime.googleapis.com/quota/allocation/usage"
# The quota metric behind each serving quota id, as Vertex AI names it (Google's Model Garden
# notebooks map accelerators to these names; H200's follows the same pattern).
SERVING_METRICS = {
    "NVIDIA_L4": "custom_model_serving_nvidia_l4_gpus",
    "NVIDIA_TESLA_A100": "custom_model_serving_nvidia_a100_gpus",
    "NVIDIA_A100_80GB": "custom_model_serving_nvidia_a100_80gb_gpus",
    "NVIDIA_H100_80GB": "custom_model_serving_nvidia_h100_gpus",
    "NVIDIA_H200_141GB": "custom_model_serving_nvidia_h200_gpus",
}
_FILTER_TERM = re.compile(r'([a-z_.]+)\s*=\s*"([^"]*)"')
_SERVICE_PATH = (r"/(?:v1|v1beta)/projects/(?P<project>[^/]+)/locations/global/services/"
                 r"(?P<service>[^/]+)/quotaInfos")
PREEMPTIBLE = "Preemptible"  # Spot VMs' serving quota: CustomModelServingPreemptible{X}...
DEFAULT_PAGE_SIZE = 100


def serving_quota_ids() -> list[str]:
    """The serving GPU quotas the emulator knows: on-demand and Spot, per accelerator."""
    return [f"CustomModelServing{kind}{accelerator.quota_family}PerProjectPerRegion"
            for kind in ("", PREEMPTIBLE) for accelerator in ACCELERATORS.values()]


def _accelerator_of(quota_id: str) -> str | None:
    for vertex_type, accelerator in ACCELERATORS.items():
        if quota_id == f"CustomModelServing{accelerator.quota_family}PerProjectPerRegion":
            return vertex_type
    return None


def _quota_metric(service: str, quota_id: str) -> str:
    spot = quota_id.startswith(f"CustomModelServing{PREEMPTIBLE}")
    accelerator = _accelerator_of(quota_id.replace(PREEMPTIBLE, "", 1) if spot else quota_id)
    if accelerator is None:
        return f"{service}/{quota_id}"
    return serving_metric(service, accelerator, spot=spot)


def serving_metric(service: str, accelerator: str, *, spot: bool) -> str:
    """The quota metric that serving GPUs of this type draw on: Spot VMs' own one with `spot`
    (Google's notebooks' map: custom_model_serving_preemptible_{gpu})."""
    metric = SERVING_METRICS.get(accelerator, accelerator)
    if spot:
        metric = metric.replace("custom_model_serving_", "custom_model_serving_preemptible_", 1)
    return f"{service}/{metric}"


class Quotas:
    """Limits by quota id and region ("*" for every region), kept under "quotas"; usage is
    counted from the endpoints' deployed models each time it is asked for."""

    def __init__(self, state: State):
        self.state = state

    def routes(self) -> list[Route]:
        return [("GET", _SERVICE_PATH + r"/(?P<qid>[^/]+)", self.get_quota_info),
                ("GET", _SERVICE_PATH, self.list_quota_infos),
                ("GET", r"/v3/projects/(?P<project>[^/:]+)/timeSeries", self.list_time_series)]

    def get_quota_info(self, body: dict[str, Any], *, project: str, service: str, qid: str,
                       **_: Any) -> dict[str, Any]:
        """Serving quotas default to 16 GPUs of each kind in every region; tests lower them.
        A QuotaInfo carries limits only: usage is Cloud Monitoring's. Each value names the
        regions it applies to: a region's own, or every other region for the default."""
        regions = self.state.data.setdefault("quotas", {}).get(qid, {"*": DEFAULT_GPU_QUOTA})
        own = [r for r in regions if r != "*"]
        # proto3 JSON leaves the empty dimensions of the every-region value out
        infos = [{**({} if region == "*" else {"dimensions": {"region": region}}),
                  "details": {"value": str(value)},
                  "applicableLocations": ([r for r in VERTEX_REGIONS if r not in own]
                                          if region == "*" else [region])}
                 for region, value in regions.items()]
        return {"name": f"projects/{project_number(project)}/locations/global/services/"
                        f"{service}/quotaInfos/{qid}",
                "quotaId": qid, "service": service, "dimensions": ["region"],
                "metric": _quota_metric(service, qid), "isPrecise": True,
                "dimensionsInfos": infos}

    def list_quota_infos(self, body: dict[str, Any], *, project: str, service: str,
                         query: dict[str, str], **_: Any) -> dict[str, Any]:
        """`quotaInfos.list`, in pages of `pageSize` (gcloud asks for 10) with an opaque
        `nextPageToken`: the serving GPU quotas, and any a test set."""
        if service != SERVICE:  # the emulator keeps Vertex AI's serving quotas only
            return {}
        ids = sorted({*serving_quota_ids(), *self.state.data.get("quotas", {})})
        try:
            size = int(query.get("pageSize") or DEFAULT_PAGE_SIZE)
            start = int(query.get("pageToken") or 0)
        except ValueError:
            raise ApiError(400, "Invalid pageSize or pageToken.") from None
        if size < 1 or start < 0:
            raise ApiError(400, f"Invalid pageSize {size}: it must be positive.")
        page = [self.get_quota_info(body, project=project, service=service, qid=qid)
                for qid in ids[start:start + size]]
        reply: dict[str, Any] = {"quotaInfos": page} if page else {}
        if start + size < len(ids):
            reply["nextPageToken"] = str(start + size)
        return reply

    def set_limit(self, quota_id: str, region: str, value: int) -> None:
        """What a test sets to rehearse a project without enough quota."""
        with self.state.lock:
            quotas = self.state.data.setdefault("quotas", {})
            quotas.setdefault(quota_id, {"*": DEFAULT_GPU_QUOTA})[region] = value
            self.state.save()

    # --- Cloud Monitoring: quota usage ------------------------------------------------------
    def gpus_in_use(self, project: str) -> dict[tuple[str, str, bool], int]:
        """(accelerator type, region, Spot) -> GPUs charged to the project's deployed models:
        the accelerators of each one's most replicas (maxReplicaCount), as Google charges
        them, Spot VMs' against their own quota."""
        prefix = f"projects/{project_number(project)}/locations/"
        used: dict[tuple[str, str, bool], int] = {}
        with self.state.lock:
            endpoints = [e for n, e in self.state.data["endpoints"].items()
                         if n.startswith(prefix)]
            for endpoint in endpoints:
                region = endpoint["name"].split("/")[3]
                for deployed in endpoint["deployedModels"]:
                    resources = deployed.get("dedicatedResources") or {}
                    machine = resources.get("machineSpec") or {}
                    key = (str(machine.get("acceleratorType")), region,
                           bool(resources.get("spot")))
                    used[key] = used.get(key, 0) + charged_replicas(resources) * int(
                        machine.get("acceleratorCount") or 0)
        return used

    def list_time_series(self, body: dict[str, Any], *, project: str, query: dict[str, str],
                         **_: Any) -> dict[str, Any]:
        """`timeSeries.list` for the allocation-usage metric of serving GPU quotas: one
        series per region with GPUs in use, its latest point now. Other metrics have no data
        here, and Google leaves an empty list out of the reply."""
        terms = dict(_FILTER_TERM.findall(query.get("filter", "")))
        if not terms.get("metric.type"):
            raise ApiError(400, "Field filter had an invalid value: a metric.type is required.")
        if not query.get("interval.endTime"):
            raise ApiError(400, "Field interval.endTime had an invalid value: it is required.")
        if terms["metric.type"] != USAGE_METRIC:
            return {}
        wanted_metric = terms.get("metric.labels.quota_metric")
        wanted_region = terms.get("resource.labels.location")
        series = []
        for (accelerator, region, spot), gpus in sorted(self.gpus_in_use(project).items()):
            service = SERVICE
            metric = serving_metric(service, accelerator, spot=spot)
            if gpus == 0 or (wanted_metric and wanted_metric != metric) or (
                    wanted_region and wanted_region != region):
                continue
            series.append({
                "metric": {"type": USAGE_METRIC, "labels": {"quota_metric": metric}},
                "resource": {"type": "consumer_quota", "labels": {
                    "project_id": project, "service": service, "location": region}},
                "metricKind": "GAUGE", "valueType": "INT64",
                "points": [{"interval": {"startTime": now(), "endTime": now()},
                            "value": {"int64Value": str(gpus)}}]})
        return {"timeSeries": series, "unit": "1"} if series else {}


def charged_replicas(resources: dict[str, Any]) -> int:
    """The replicas a deployed model is charged against the serving quota for: its
    maxReplicaCount (defaulting to minReplicaCount, at least one), whatever runs now, since
    scaling up to it is guaranteed (DedicatedResources.max_replica_count, C57)."""
    least = max(int(resources.get("minReplicaCount") or 1), 1)
    return max(int(resources.get("maxReplicaCount") or least), least)
