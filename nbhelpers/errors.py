"""Exceptions the notebooks show to people: each says what is wrong and what to change, and
none shows a secret: every message passes through the one redaction."""

from nbhelpers.redaction import redact


class NbhelpersError(Exception):
    """Base class for errors raised by nbhelpers itself. Text arguments are redacted when the
    error is made, so a token pasted into a parameter is never echoed by a message, its repr
    or a traceback."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigError(NbhelpersError, ValueError):
    """A parameter or environment setting is invalid; raised before any cloud call."""


class DeploymentError(NbhelpersError, RuntimeError):
    """A deployment failed or a resource is not in the state the step needs."""


def choices(values) -> str:
    """Formats valid choices for an error message."""
    return ", ".join(repr(v) for v in values)
