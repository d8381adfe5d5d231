"""Colab's sign-in (google.colab.auth.authenticate_user): records that it was called in the file
named by COLAB_STANDIN_LOG; the credentials stay those the emulator backend uses."""

import os

__all__ = ["authenticate_user"]


def authenticate_user(clear_output=True, project_id=None):
    log = os.environ.get("COLAB_STANDIN_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(f"authenticate_user project_id={project_id}\n")
