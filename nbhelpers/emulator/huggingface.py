"""The Hugging Face Hub routes the client's access check calls, as huggingface_hub calls them
(hf_api.HfApi.whoami and auth_check): GET /api/whoami-v2 (401 for an invalid token) and
GET /api/models/{repo}/auth-check (403 with X-Error-Code GatedRepo and the Hub's own message
when the licence is not accepted or the request awaits review). Served under /huggingface, the
HF_ENDPOINT the connection sets for the emulator. Every token may read every repository until
a test says otherwise (POST /emulator/huggingface/access); tokens are kept only as hashes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from nbhelpers.emulator.common import ApiError, Route, State

PREFIX = "/huggingface"
USER = "rehearsal-hf-user"
# What a token may do with a repository (or with every one, under "*").
ACCESS = ("granted", "not_requested", "pending", "invalid")
INVALID = "Invalid credentials in Authorization header"


@dataclass
class HubReply:
    """A Hub reply: its errors carry X-Error-Code and X-Error-Message headers, which Google's
    error shape has no room for."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, handler: Any) -> None:
        data = json.dumps(self.body).encode()
        handler.send_response(self.status)
        for name, value in {"Content-Type": "application/json", **self.headers}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _error(status: int, message: str, code: str = "") -> HubReply:
    headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
    return HubReply(status, {"error": message}, headers)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class HuggingFaceHub:
    """Per token hash, its access by repository, under "huggingface"."""

    def __init__(self, state: State):
        self.state = state

    def routes(self) -> list[Route]:
        return [
            ("GET", PREFIX + r"/api/whoami-v2", self.whoami),
            ("GET", PREFIX + r"/api/models/(?P<repo>[^/]+/[^/]+)/auth-check", self.auth_check),
            ("POST", r"/emulator/huggingface/access", self.set_access),
        ]

    def _access(self, token: str, repo: str) -> str:
        rules = self.state.data.get("huggingface", {}).get(_digest(token), {})
        return rules.get(repo) or rules.get("*") or "granted"

    @staticmethod
    def _token(headers: Any) -> str:
        value = (headers.get("Authorization") or "") if headers is not None else ""
        return value[len("Bearer "):].strip() if value.startswith("Bearer ") else ""

    def whoami(self, body: dict[str, Any], *, headers: Any, **_: Any) -> HubReply:
        token = self._token(headers)
        if not token or self._access(token, "*") == "invalid":
            return _error(401, INVALID)
        return HubReply(200, {"type": "user", "name": USER,
                              "auth": {"type": "access_token",
                                       "accessToken": {"role": "read"}}})

    def auth_check(self, body: dict[str, Any], *, headers: Any, repo: str,
                   **_: Any) -> HubReply:
        token = self._token(headers)
        if not token:
            return _error(401, f"Access to model {repo} is restricted. You must have access to "
                               "it and be authenticated to access it. Please log in.", "GatedRepo")
        access = self._access(token, repo)
        if access == "invalid" or self._access(token, "*") == "invalid":
            return _error(401, INVALID)
        if access == "not_requested":
            return _error(403, f"Access to model {repo} is restricted and you are not in the "
                               f"authorized list. Visit https://huggingface.co/{repo} to ask for "
                               "access.", "GatedRepo")
        if access == "pending":
            return _error(403, f"Your request to access model {repo} is awaiting a review from "
                               "the repo authors.", "GatedRepo")
        return HubReply(200, {})

    def set_access(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        """{"token": ..., "access": one of ACCESS, "repo": "owner/name" or "*" (default)}."""
        token, access, repo = body.get("token"), body.get("access"), body.get("repo") or "*"
        if not isinstance(token, str) or not token or access not in ACCESS:
            raise ApiError(400, f"give a token and an access among {', '.join(ACCESS)}")
        with self.state.lock:
            rules = self.state.data.setdefault("huggingface", {}).setdefault(_digest(token), {})
            rules[repo] = access
            self.state.save()
        return {"repo": repo, "access": access}
