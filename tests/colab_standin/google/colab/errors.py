"""Colab's common error base, as in googlecolab/colabtools google/colab/errors.py."""


class Error(Exception):
    """Base class for all Colab errors."""


class AuthorizationError(Error):
    """Authorization-related failures."""
