"""Secrets: the Hugging Face token comes from the environment or a hidden prompt, never a
parameter, and is scrubbed from anything shown."""

from __future__ import annotations

import getpass
import logging
import os
import sys
from typing import Any

from nbhelpers.errors import ConfigError
from nbhelpers.redaction import looks_like_secret, redact, remember

__all__ = ["TOKEN_ENV_VARS", "hf_token", "looks_like_secret", "redact"]

TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


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


def hf_token(*, required: bool, model_name: str = "", ask: bool = True) -> str | None:
    """Returns the Hugging Face token from HF_TOKEN (or a hidden prompt), or None.

    When `required` (a gated model loaded from Hugging Face) and none is found, raises a
    ConfigError that says how to provide one, before anything is created.
    """
    token = next((os.environ[v].strip() for v in TOKEN_ENV_VARS if os.environ.get(v)), None)
    if token is None and required and ask:
        token = _prompt() or None
    if token:
        return _remember(token)
    if required:
        raise ConfigError(
            f"{model_name or 'this model'} is gated on Hugging Face and no token was found. "
            "Accept the licence on the model's Hugging Face page, then set the HF_TOKEN "
            "environment variable (never a notebook parameter) or run the cell interactively "
            "to be asked; or deploy the Model Garden copy by setting weights_uri to its gs:// path."
        )
    return None
