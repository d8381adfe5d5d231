"""Cloud Logging for the serving containers: each endpoint's container lines, kept as entries
and read back through `entries:list`, as the debugging notebook reads real ones."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from nbhelpers.emulator.common import ApiError, Route, State, now

_COMPARE = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__, "<": float.__lt__}


def _seconds(stamp: str) -> float:
    """An RFC 3339 time of a filter, as seconds since the epoch."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, f"Invalid timestamp in filter: {stamp!r}") from None


class CloudLogging:
    """Log entries, kept in the state file under "logs" by endpoint resource name."""

    def __init__(self, state: State):
        self.state = state

    def routes(self) -> list[Route]:
        return [("POST", r"/v2/entries:list", self.list_entries)]

    def log(self, endpoint_name: str, lines: list[str]) -> None:
        """Keeps container log lines as Cloud Logging would: one timestamped entry a line."""
        with self.state.lock:
            entries = self.state.data["logs"].setdefault(endpoint_name, [])
            for line in lines:
                entries.append({"t": time.time(), "text": line, "id": self.state.next_id()})
            self.state.save()

    def _entries(self, eid: str) -> list[tuple[str, dict[str, Any]]]:
        return [(name, entry) for name, logs in self.state.data["logs"].items()
                if name.endswith("/endpoints/" + eid) for entry in logs]

    def lines(self, eid: str) -> list[str]:
        """The text of every line logged for the endpoint with this id, oldest first."""
        return [entry["text"] for _, entry in self._entries(eid)]

    def list_entries(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Cloud Logging entries:list for the endpoint the filter names, within the filter's
        `timestamp` bounds (the SDK adds `timestamp>=` a day ago when a filter has none)."""
        text = body.get("filter", "")
        match = re.search(r'resource\.labels\.endpoint_id\s*=\s*"?(\d+)"?', text)
        if not match:
            return {}
        bounds = [(op, _seconds(value)) for op, value in
                  re.findall(r'timestamp\s*(>=|<=|>|<)\s*"([^"]+)"', text)]
        kept = [item for item in self._entries(match.group(1))
                if all(_COMPARE[op](item[1]["t"], limit) for op, limit in bounds)]
        found = sorted(kept, key=lambda item: item[1]["t"],
                       reverse="desc" in str(body.get("orderBy", "")).lower())
        found = found[:int(body.get("pageSize") or 1000)]
        entries = []
        for name, entry in found:
            project, location = name.split("/")[1], name.split("/")[3]
            error = bool(re.search(r"Error|ERROR|Traceback|error:", entry["text"]))
            entries.append({
                "logName": f"projects/{project}/logs/aiplatform.googleapis.com%2F"
                           "prediction_container",
                "resource": {"type": "aiplatform.googleapis.com/Endpoint",
                             "labels": {"endpoint_id": match.group(1), "location": location,
                                        "resource_container": project}},
                "textPayload": entry["text"], "timestamp": now(entry["t"]),
                "insertId": entry["id"], "severity": "ERROR" if error else "INFO"})
        return {"entries": entries} if entries else {}
