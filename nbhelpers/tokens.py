"""Secrets: the Hugging Face token comes from where each runtime keeps it (the environment,
Colab's secrets, Secret Manager in the project, or a hidden prompt), never a parameter; each
source is named when used, the token never, and it is scrubbed from anything shown. Before a
deployment stores it, `check_hf_access` asks the Hub whether it can read the model."""

from __future__ import annotations

import getpass
import logging
import os
import re
import sys
from typing import Any, Protocol

from nbhelpers import runtime
from nbhelpers.errors import ConfigError
from nbhelpers.redaction import looks_like_secret, redact, remember

__all__ = ["DEFAULT_SECRET", "TOKEN_ENV_VARS", "check_hf_access", "hf_token",
           "looks_like_secret", "redact"]

TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
COLAB_SECRET = "HF_TOKEN"  # the name huggingface_hub also reads from Colab's Secrets panel
DEFAULT_SECRET = "hf-token"  # the Secret Manager secret read in the project
SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")  # Secret Manager's rule for secret ids
HUB = "https://huggingface.co"  # HF_ENDPOINT overrides it, as for huggingface_hub
HUB_TIMEOUT_S = 15.0


class ProjectSecrets(Protocol):
    """What reading Secret Manager needs of a connection: the project and a REST client made
    for the backend (connection.Session is one)."""

    settings: Any

    def rest_client(self, client_class: type) -> Any: ...


_factory_installed = False


def _install_log_redaction() -> None:
    """Scrubs secrets from every log record when it is created, whichever logger or handler
    (a logger filter would miss records propagated from child loggers)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def _remember(token: str) -> str:
    remember(token)  # errors and log records hide it from now on
    _install_log_redaction()
    return token


def _prompt() -> str | None:
    """Asks without echo where a person can answer; headless runs (papermill, CI) get None."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    kernel = getattr(shell, "kernel", None)
    if kernel is not None and not getattr(kernel, "_allow_stdin", False):
        return None
    if shell is None and not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass("Hugging Face access token (input hidden, Enter to skip): ").strip()
    except Exception:  # StdinNotImplementedError and the like: nobody to ask
        return None


def _from_environment() -> tuple[str, str] | None:
    for name in TOKEN_ENV_VARS:
        value = (os.environ.get(name) or "").strip()
        if value:
            return value, f"the environment ({name})"
    return None


def _from_colab(notes: list[str]) -> tuple[str, str] | None:
    """Colab's Secrets panel, through google.colab.userdata (not environment variables).
    Colab Enterprise has no such panel, so it is not asked there (huggingface_hub skips it
    there too)."""
    if runtime.runtime_kind() != runtime.COLAB:
        return None
    try:
        from google.colab import userdata
    except ImportError:
        return None
    try:
        value = (userdata.get(COLAB_SECRET) or "").strip()
    except userdata.SecretNotFoundError:
        notes.append(f"Colab secrets hold no {COLAB_SECRET}")
        return None
    except userdata.NotebookAccessError:
        notes.append(f"the Colab secret {COLAB_SECRET} exists but this notebook may not read it: "
                     "turn on its 'Notebook access' in the Secrets panel (the key icon)")
        return None
    except Exception as err:  # a timeout or Colab's own error: the panel did not answer
        notes.append(f"Colab secrets could not be read ({type(err).__name__})")
        return None
    if not value:
        notes.append(f"the Colab secret {COLAB_SECRET} is empty")
        return None
    return value, f"Colab secrets ({COLAB_SECRET})"


def _from_secret_manager(project_secrets: ProjectSecrets | None, secret_name: str,
                         notes: list[str]) -> tuple[str, str] | None:
    """The latest version of the secret in the connected project, through the backend's
    Secret Manager (the connection knows whether that is Google or the emulator)."""
    if project_secrets is None:
        return None
    project = project_secrets.settings.project
    where = f"secret {secret_name!r} in project {project}"
    try:
        from google.api_core import exceptions
        from google.cloud import secretmanager
    except ImportError:
        notes.append("Secret Manager not asked: google-cloud-secret-manager is not installed")
        return None
    try:
        client = project_secrets.rest_client(secretmanager.SecretManagerServiceClient)
        reply = client.access_secret_version(
            name=f"projects/{project}/secrets/{secret_name}/versions/latest",
            retry=None, timeout=HUB_TIMEOUT_S)
    except exceptions.NotFound:
        notes.append(f"Secret Manager has no {where} (or it has no enabled version)")
        return None
    except exceptions.PermissionDenied:
        notes.append(f"Secret Manager refused to read the {where}: enable the Secret Manager "
                     "API and grant yourself roles/secretmanager.secretAccessor on the secret")
        return None
    except Exception as err:  # unreachable, unauthenticated: say which, never the details
        notes.append(f"Secret Manager could not be read ({type(err).__name__})")
        return None
    data = bytes(reply.payload.data)
    if reply.payload.data_crc32c:
        import google_crc32c

        if int(google_crc32c.value(data)) != int(reply.payload.data_crc32c):
            notes.append(f"the {where} arrived corrupted (its CRC32C does not match)")
            return None
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        notes.append(f"the {where} is not UTF-8 text")
        return None
    if not value:
        notes.append(f"the {where} is empty")
        return None
    return value, f"Secret Manager ({where}, latest version)"


def check_secret_name(name: str, value: object) -> str:
    """A Secret Manager secret id, or a ConfigError naming the parameter."""
    if not isinstance(value, str) or not SECRET_ID.fullmatch(value):
        raise ConfigError(f"{name} must be a Secret Manager secret id (1-255 letters, digits, "
                          f"'-' and '_'), got {redact(repr(value))[:80]}")
    return value


def hf_token(*, required: bool, model_name: str = "", ask: bool = True, repo_id: str = "",
             secret_name: str = DEFAULT_SECRET,
             project_secrets: ProjectSecrets | None = None) -> str | None:
    """Returns the Hugging Face token, or None. The environment (HF_TOKEN) is always read;
    when `required` (a gated model loaded from Hugging Face) Colab's secrets, then the
    `secret_name` secret of the connected project (`project_secrets`), then a hidden prompt
    (`ask`) follow. The source is printed, the token never. With `repo_id`, the Hub is asked
    whether the token can read that repository (check_hf_access).

    When required and none is found, raises a ConfigError that says where a token may be
    given, before anything is created.
    """
    check_secret_name("secret_name", secret_name)
    notes: list[str] = []
    found = _from_environment()
    if found is None and required:
        found = _from_colab(notes) or _from_secret_manager(project_secrets, secret_name, notes)
        if found is None and ask:
            typed = _prompt()
            found = (typed, "the hidden prompt") if typed else None
    if found is not None:
        token, source = found
        _remember(token)
        print(f"Hugging Face token: from {source}")
        if repo_id:
            check_hf_access(token, repo_id, source=source)
        return token
    if required:
        looked = f" Looked here: {'; '.join(notes)}." if notes else ""
        raise ConfigError(
            f"{model_name or 'this model'} is gated on Hugging Face and no token was found. "
            "Accept the licence on the model's Hugging Face page, then give your token in one "
            "of these places (never a notebook parameter): the HF_TOKEN environment variable; "
            f"Colab's Secrets panel as {COLAB_SECRET} with notebook access; a Secret Manager "
            f"secret named {secret_name!r} in the project; or run the cell interactively to be "
            "asked. Or deploy the Model Garden copy by setting weights_uri to its gs:// path."
            + looked
        )
    return None


def hub_url() -> str:
    return (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")


def check_hf_access(token: str, repo_id: str, *, source: str = "the token") -> str:
    """Asks the Hugging Face Hub (HF_ENDPOINT) whether `token` can read `repo_id`, through
    the routes huggingface_hub uses: /api/whoami-v2 (401: invalid token) and
    /api/models/{repo}/auth-check (403 with X-Error-Code GatedRepo: licence not accepted, or
    the request awaits review). Raises a ConfigError for each, before anything is deployed;
    returns "granted", or "unchecked" when the Hub cannot be reached (the deployment's own
    download is then the check)."""
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigError(f"the Hugging Face token from {source} is not valid: it holds spaces "
                          "or characters that tokens never have. Copy it again from "
                          "https://huggingface.co/settings/tokens.")
    import requests

    base, headers = hub_url(), {"Authorization": f"Bearer {token}"}
    try:
        who = requests.get(f"{base}/api/whoami-v2", headers=headers, timeout=HUB_TIMEOUT_S)
        if who.status_code == 401:
            raise ConfigError(
                f"the Hugging Face token from {source} is not valid: the Hub answered 401 "
                "Unauthorized (a revoked, expired or mistyped token). Create a read token at "
                "https://huggingface.co/settings/tokens and replace it there.")
        user = who.json().get("name", "your account") if who.ok else "your account"
        check = requests.get(f"{base}/api/models/{repo_id}/auth-check", headers=headers,
                             timeout=HUB_TIMEOUT_S)
    except requests.RequestException as err:
        print(f"Hugging Face access: not checked, the Hub at {base} could not be reached "
              f"({type(err).__name__}); a token without access would fail the deployment.")
        return "unchecked"
    said = check.headers.get("X-Error-Message") or _error_text(check)
    page = f"https://huggingface.co/{repo_id}"
    if check.ok:
        print(f"Hugging Face access: {user} may read {repo_id}.")
        return "granted"
    if check.status_code == 403 and check.headers.get("X-Error-Code") == "GatedRepo":
        if "awaiting a review" in said:
            raise ConfigError(
                f"{user}'s request to access {repo_id} is pending: it awaits review by the "
                "repository's authors (Meta reviews Llama requests). Wait for the e-mail that "
                "grants access (its state is at https://huggingface.co/settings/gated-repos), "
                "then run this cell again; or deploy Model Garden's copy (weights_uri). "
                f"The Hub says: {said}")
        raise ConfigError(
            f"{user} has not accepted the licence of {repo_id}, which is gated: open {page}, "
            "accept the licence there with this Hugging Face account, and run this cell again "
            "once the page says access is granted; or deploy Model Garden's copy "
            f"(weights_uri). The Hub says: {said}")
    if check.status_code in (401, 404):
        raise ConfigError(
            f"{repo_id} is not visible to {user}'s token (the Hub answered {check.status_code}): "
            f"check the model id at {page}; a fine-grained token also needs 'Read access to "
            "contents of all public gated repos you can access'.")
    print(f"Hugging Face access: not checked, the Hub answered {check.status_code} "
          f"({said[:120]}).")
    return "unchecked"


def _error_text(response: Any) -> str:
    try:
        error = response.json().get("error", "")
    except ValueError:
        return response.text[:200]
    return error if isinstance(error, str) else str(error)
