"""Cloud Quotas: the serving GPU quotas the client reads before deploying."""

from __future__ import annotations

from typing import Any

from nbhelpers.emulator.common import Route, State, project_number

DEFAULT_GPU_QUOTA = 16


class Quotas:
    """Limits by quota id and region ("*" for every region), kept under "quotas"."""

    def __init__(self, state: State):
        self.state = state

    def routes(self) -> list[Route]:
        return [("GET", r"/v1/projects/(?P<project>[^/]+)/locations/global/services/"
                        r"(?P<service>[^/]+)/quotaInfos/(?P<qid>[^/]+)", self.get_quota_info)]

    def get_quota_info(self, body: dict[str, Any], *, project: str, service: str, qid: str,
                       **_: Any) -> dict[str, Any]:
        """Serving quotas default to 16 GPUs of each kind in every region; tests lower them."""
        regions = self.state.data.setdefault("quotas", {}).get(qid, {"*": DEFAULT_GPU_QUOTA})
        infos = [{"dimensions": {} if region == "*" else {"region": region},
                  "details": {"value": str(value)},
                  "applicableLocations": [] if region == "*" else [region]}
                 for region, value in regions.items()]
        return {"name": f"projects/{project_number(project)}/locations/global/services/"
                        f"{service}/quotaInfos/{qid}",
                "quotaId": qid, "service": service, "dimensions": ["region"],
                "metric": f"{service}/{qid}", "isPrecise": True,
                "dimensionsInfos": infos}

    def set_limit(self, quota_id: str, region: str, value: int) -> None:
        """What a test sets to rehearse a project without enough quota."""
        with self.state.lock:
            quotas = self.state.data.setdefault("quotas", {})
            quotas.setdefault(quota_id, {"*": DEFAULT_GPU_QUOTA})[region] = value
            self.state.save()
