"""Exceptions the notebooks show to people: each says what is wrong and what to change."""


class NbhelpersError(Exception):
    """Base class for errors raised by nbhelpers itself."""


class ConfigError(NbhelpersError, ValueError):
    """A parameter or environment setting is invalid; raised before any cloud call."""


class DeploymentError(NbhelpersError, RuntimeError):
    """A deployment failed or a resource is not in the state the step needs."""


def choices(values) -> str:
    """Formats valid choices for an error message."""
    return ", ".join(repr(v) for v in values)
