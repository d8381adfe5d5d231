"""Colab's secrets API (google.colab.userdata), reading COLAB_STANDIN_SECRETS instead of the
Secrets panel. Same exception kinds as Colab's: NotebookAccessError derives from Exception,
SecretNotFoundError from google.colab.errors.Error."""

import json
import os

from google.colab import errors


class NotebookAccessError(Exception):
    def __init__(self, key):
        super().__init__(f"Notebook does not have access to secret {key}")


class SecretNotFoundError(errors.Error):
    def __init__(self, key):
        super().__init__(f"Secret {key} does not exist.")


def get(key):
    path = os.environ.get("COLAB_STANDIN_SECRETS", "")
    secrets = json.loads(open(path).read()) if path and os.path.exists(path) else {}
    secret = secrets.get(key)
    if secret is None:
        raise SecretNotFoundError(key)
    if not secret.get("notebook_access", False):
        raise NotebookAccessError(key)
    return secret.get("value", "")
