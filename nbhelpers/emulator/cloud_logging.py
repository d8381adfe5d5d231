"""Cloud Logging for the serving containers: each endpoint's container lines, kept as entries
and read back through `entries:list`, as the debugging notebook reads real ones."""

from __future__ import annotations

import re
import time
from typing import Any

from nbhelpers.emulator.common import Route, State, now


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
        """Cloud Logging entries:list for the endpoint the filter names."""
        match = re.search(r'resource\.labels\.endpoint_id\s*=\s*"?(\d+)"?', body.get("filter", ""))
        if not match:
            return {}
        found = sorted(self._entries(match.group(1)), key=lambda item: item[1]["t"],
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
