"""Cloud Quotas (the serving GPU limits) and the Cloud Monitoring series of their usage: the
GPUs of the deployments live in each region, as the quota system counts them. Sources in
docs/google-contract.md."""

from __future__ import annotations

import re
from typing import Any

from nbhelpers.emulator.common import ApiError, Route, State, now, project_number
from nbhelpers.hardware import ACCELERATORS

DEFAULT_GPU_QUOTA = 16
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


def _accelerator_of(quota_id: str) -> str | None:
    for vertex_type, accelerator in ACCELERATORS.items():
        if quota_id == f"CustomModelServing{accelerator.quota_family}PerProjectPerRegion":
            return vertex_type
    return None


def _quota_metric(service: str, quota_id: str) -> str:
    accelerator = _accelerator_of(quota_id)
    if accelerator is None:
        return f"{service}/{quota_id}"
    return f"{service}/{SERVING_METRICS[accelerator]}"


class Quotas:
    """Limits by quota id and region ("*" for every region), kept under "quotas"; usage is
    counted from the endpoints' deployed models each time it is asked for."""

    def __init__(self, state: State):
        self.state = state

    def routes(self) -> list[Route]:
        return [("GET", r"/v1/projects/(?P<project>[^/]+)/locations/global/services/"
                        r"(?P<service>[^/]+)/quotaInfos/(?P<qid>[^/]+)", self.get_quota_info),
                ("GET", r"/v3/projects/(?P<project>[^/:]+)/timeSeries", self.list_time_series)]

    def get_quota_info(self, body: dict[str, Any], *, project: str, service: str, qid: str,
                       **_: Any) -> dict[str, Any]:
        """Serving quotas default to 16 GPUs of each kind in every region; tests lower them.
        A QuotaInfo carries limits only: usage is Cloud Monitoring's."""
        regions = self.state.data.setdefault("quotas", {}).get(qid, {"*": DEFAULT_GPU_QUOTA})
        infos = [{"dimensions": {} if region == "*" else {"region": region},
                  "details": {"value": str(value)},
                  "applicableLocations": [] if region == "*" else [region]}
                 for region, value in regions.items()]
        return {"name": f"projects/{project_number(project)}/locations/global/services/"
                        f"{service}/quotaInfos/{qid}",
                "quotaId": qid, "service": service, "dimensions": ["region"],
                "metric": _quota_metric(service, qid), "isPrecise": True,
                "dimensionsInfos": infos}

    def set_limit(self, quota_id: str, region: str, value: int) -> None:
        """What a test sets to rehearse a project without enough quota."""
        with self.state.lock:
            quotas = self.state.data.setdefault("quotas", {})
            quotas.setdefault(quota_id, {"*": DEFAULT_GPU_QUOTA})[region] = value
            self.state.save()

    # --- Cloud Monitoring: quota usage ------------------------------------------------------
    def gpus_in_use(self, project: str) -> dict[tuple[str, str], int]:
        """(accelerator type, region) -> GPUs held by the project's deployed models: every
        replica holds its machine's accelerators."""
        prefix = f"projects/{project_number(project)}/locations/"
        used: dict[tuple[str, str], int] = {}
        with self.state.lock:
            endpoints = [e for n, e in self.state.data["endpoints"].items()
                         if n.startswith(prefix)]
            for endpoint in endpoints:
                region = endpoint["name"].split("/")[3]
                for deployed in endpoint["deployedModels"]:
                    resources = deployed.get("dedicatedResources") or {}
                    machine = resources.get("machineSpec") or {}
                    replicas = max(int(resources.get("minReplicaCount") or 1), 1)
                    key = (str(machine.get("acceleratorType")), region)
                    used[key] = used.get(key, 0) + replicas * int(
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
        for (accelerator, region), gpus in sorted(self.gpus_in_use(project).items()):
            service = "aiplatform.googleapis.com"
            metric = f"{service}/{SERVING_METRICS.get(accelerator, accelerator)}"
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
