"""Google's OAuth token-info endpoint: who an access token belongs to. The client asks it for
the e-mail that owns (labels) its resources; rehearsal access tokens name their account, so
each client of one emulator can be a different person and tests can prove that nobody's
cleanup touches another's resources."""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from typing import Any

from nbhelpers.emulator.common import ApiError, Route

TOKEN_PREFIX = "ya29.rehearsal."  # real user access tokens start with ya29.
REHEARSAL_CLIENT = "rehearsal-client.apps.googleusercontent.com"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform "
          "https://www.googleapis.com/auth/userinfo.email openid")
TOKEN_SECONDS = 3600


def access_token(email: str) -> str:
    """A rehearsal access token for `email`; an empty email gives a token without the e-mail
    scope (token-info then names no address, as for such Google credentials)."""
    encoded = base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")
    return TOKEN_PREFIX + encoded


def email_of(token: str) -> str | None:
    """The account a rehearsal token names ("" for one without the e-mail scope), or None
    for any other token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    encoded = token[len(TOKEN_PREFIX):]
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


class TokenInfo:
    """`GET /tokeninfo?access_token=...` as oauth2.googleapis.com answers it. Tokens the
    serving front end treats as expired are refused here too."""

    def __init__(self, expired_tokens: set[str]):
        self.expired_tokens = expired_tokens

    def routes(self) -> list[Route]:
        return [("GET", r"/tokeninfo", self.token_info)]

    def token_info(self, body: dict[str, Any], *, query: dict[str, str],
                   **_: Any) -> dict[str, Any]:
        token = query.get("access_token", "")
        email = email_of(token)
        if email is None or token in self.expired_tokens:
            raise ApiError(400, "Invalid Value: invalid_token", "INVALID_ARGUMENT")
        info: dict[str, Any] = {
            "azp": REHEARSAL_CLIENT, "aud": REHEARSAL_CLIENT,
            "scope": SCOPES if email else "https://www.googleapis.com/auth/cloud-platform",
            "exp": str(int(time.time()) + TOKEN_SECONDS), "expires_in": str(TOKEN_SECONDS),
            "access_type": "offline",
        }
        if email:
            # sub: a stable numeric account id, as Google's never changes for an account
            info["sub"] = str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16))
            info.update(email=email, email_verified="true")
        return info
