"""Who the suite runs as: the Google identity of the credentials, which owns (labels) and may
clean up the resources. A login name cannot do this: on Colab everyone is `root`."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from nbhelpers.errors import ConfigError

TOKENINFO_URL = "https://oauth2.googleapis.com/tokeninfo"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
SIGN_IN = (
    "sign in with `gcloud auth application-default login` (its default scopes include the "
    "e-mail), or on Colab run `from google.colab import auth; auth.authenticate_user()`, or use "
    f"a service account's credentials; credentials of your own need the {EMAIL_SCOPE} scope"
)


def _refresh(credentials: Any) -> None:
    """Fetches an access token (and, for Compute Engine credentials, the account's e-mail)."""
    import google.auth.exceptions
    import google.auth.transport.requests

    try:
        credentials.refresh(google.auth.transport.requests.Request())
    except google.auth.exceptions.GoogleAuthError as err:
        reason = str(err.args[0]) if err.args else ""
        raise ConfigError(
            f"could not get an access token from the Google credentials "
            f"({type(err).__name__}: {reason[:200]}) to find who you are; {SIGN_IN}"
        ) from None


def _token_email(token: str, tokeninfo_url: str) -> str:
    """The e-mail Google's token-info endpoint names for an access token. urllib logs nothing,
    and no message here carries the token or the URL that holds it."""
    url = f"{tokeninfo_url}?{urllib.parse.urlencode({'access_token': token})}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            info = json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise ConfigError(
            f"the token-info endpoint {tokeninfo_url} refused the access token (HTTP "
            f"{err.code}), so who you are is unknown; {SIGN_IN}"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        raise ConfigError(
            f"could not reach the token-info endpoint {tokeninfo_url} to find who you are "
            f"({type(err).__name__}); check the network, or {SIGN_IN}"
        ) from None
    return str(info.get("email") or "") if isinstance(info, dict) else ""


def google_identity(credentials: Any, *, tokeninfo_url: str = TOKENINFO_URL) -> str:
    """The e-mail the credentials act as, lowercased: a service account's own address, else the
    address Google's token-info endpoint returns for the access token (user credentials).
    Raises ConfigError, saying how to sign in, when there is none."""
    email = getattr(credentials, "service_account_email", None)
    if email == "default":  # Compute Engine / Colab: the metadata server says which account
        _refresh(credentials)
        email = getattr(credentials, "service_account_email", None)
    if isinstance(email, str) and "@" in email:
        return email.strip().lower()
    if not getattr(credentials, "token", None) or not credentials.valid:
        _refresh(credentials)
    token = getattr(credentials, "token", None)
    email = _token_email(token, tokeninfo_url) if token else ""
    if "@" not in email:
        raise ConfigError(
            f"the Google credentials ({type(credentials).__name__}) name no e-mail address, so "
            "the suite cannot tell your resources from anyone else's (the owner label); "
            + SIGN_IN
        )
    return email.strip().lower()
