"""A runtime made ready for the notebooks: which one this is (Colab, Colab Enterprise, anything
else), signing in where plain Colab needs it, and saying when an install needs a restart.

Every notebook's first cell installs the package pinned to a release and then calls
`make_ready`. The cell's text is made here (`first_cell`) from pyproject's version and
repository URL, so the notebook lint can check that every notebook carries the same one."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from urllib.parse import quote

COLAB, COLAB_ENTERPRISE, OTHER = "Colab", "Colab Enterprise", "Jupyter"
# Colab Enterprise runtimes say so in VERTEX_PRODUCT: google-cloud-aiplatform reads it
# (initializer._Config.get_resource_type) and so does huggingface_hub
# (utils/_runtime.is_colab_enterprise). Plain Colab is the one where google.colab imports.
PRODUCT_VARIABLE, ENTERPRISE_PRODUCT = "VERTEX_PRODUCT", "COLAB_ENTERPRISE"

_FIRST_CELL = """\
# @title Make this runtime ready: install nbhelpers (pinned release), sign in on Colab
NBHELPERS_VERSION, NBHELPERS_REPOSITORY = "{version}", "{repository}"
import importlib, importlib.metadata, subprocess, sys
installed_before = {{d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}}
if installed_before.get("nbhelpers") != NBHELPERS_VERSION:  # skipped when already installed
    print(f"Installing nbhelpers {{NBHELPERS_VERSION}} from {{NBHELPERS_REPOSITORY}} ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    f"nbhelpers @ git+{{NBHELPERS_REPOSITORY}}@v{{NBHELPERS_VERSION}}"], check=True)
    importlib.invalidate_caches()
from nbhelpers.runtime import make_ready
make_ready(NBHELPERS_VERSION, installed_before=installed_before)"""


def first_cell(version: str, repository: str) -> str:
    """The source of every notebook's first code cell, for this release and repository."""
    return _FIRST_CELL.format(version=version, repository=repository.rstrip("/"))


def colab_enterprise_url(repository: str, version: str, notebook: str) -> str:
    """The console link that opens `notebook` (a path in the repository) of this release in
    Colab Enterprise: the import route takes the file's raw URL with its slashes escaped, as
    GoogleCloudPlatform's notebook template links it ("Open in Colab Enterprise")."""
    prefix = "https://github.com/"
    if not repository.startswith(prefix):
        raise ValueError(f"repository must be a {prefix}OWNER/NAME URL, got {repository!r}")
    raw = (f"https://raw.githubusercontent.com/{repository[len(prefix):].rstrip('/')}/"
           f"v{version}/{notebook}")
    return "https://console.cloud.google.com/vertex-ai/colab/import/" + quote(raw, safe=":")


def runtime_kind() -> str:
    """COLAB_ENTERPRISE, COLAB, or OTHER (JupyterLab, VS Code, papermill, plain Python)."""
    if os.environ.get(PRODUCT_VARIABLE, "").strip().upper() == ENTERPRISE_PRODUCT:
        return COLAB_ENTERPRISE
    try:
        colab = importlib.util.find_spec("google.colab")
    except (ImportError, ValueError):
        colab = None
    return COLAB if colab is not None else OTHER


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed() -> dict[str, str]:
    return {_normal(d.metadata["Name"]): d.version
            for d in importlib.metadata.distributions() if d.metadata["Name"]}


def changed_while_imported(installed_before: Mapping[str, str]) -> list[str]:
    """Distributions whose version changed since `installed_before` (name -> version) and
    that this process had already imported: their old code stays loaded until a restart."""
    before = {_normal(name): version for name, version in installed_before.items()}
    now = _installed()
    changed = {name for name, version in now.items() if before.get(name) != version}
    if not changed:
        return []
    loaded_roots = {module.split(".")[0] for module in sys.modules}
    found = []
    for root, distributions in importlib.metadata.packages_distributions().items():
        if root not in loaded_roots:
            continue
        for distribution in distributions:
            name = _normal(distribution)
            if name in changed and name in before:  # a new install was never imported
                found.append(f"{distribution} {before[name]} -> {now[name]}")
    return sorted(set(found))


class RestartNeeded(SystemExit):
    """Stops "Run all" with one readable line (IPython shows a SystemExit without a long
    traceback) when freshly installed code cannot take effect in this process."""


def _sign_in_on_colab() -> str:
    """Plain Colab has no Google credentials until the user signs in; Colab Enterprise runs
    as the user already, and elsewhere gcloud's application default credentials are used."""
    from google.colab import auth

    auth.authenticate_user()
    return "signed in to Google Cloud (google.colab.auth.authenticate_user)"


def _project_of_runtime() -> str:
    """Colab Enterprise runs in a project: its credentials name it, so the `auto` backend
    finds the real cloud without a PROJECT_ID parameter."""
    if os.environ.get("GOOGLE_CLOUD_PROJECT"):
        return f"project {os.environ['GOOGLE_CLOUD_PROJECT']} (GOOGLE_CLOUD_PROJECT)"
    try:
        import google.auth

        _, project = google.auth.default()
    except Exception as err:  # no credentials or no metadata server: say so, change nothing
        return f"no project found ({type(err).__name__}); set PROJECT_ID in 00_setup"
    if not project:
        return "no project found; set PROJECT_ID in 00_setup"
    os.environ["GOOGLE_CLOUD_PROJECT"] = project
    return f"project {project} (the runtime's; GOOGLE_CLOUD_PROJECT set)"


def make_ready(version: str, *, installed_before: Mapping[str, str] | None = None) -> str:
    """Checks the pinned release is the one installed, says when a restart is needed (raising
    RestartNeeded), signs in on plain Colab, and returns (and prints) what it found."""
    have = _installed().get("nbhelpers")
    if have != version:
        raise RestartNeeded(
            f"nbhelpers {version} was asked for but {have or 'none'} is installed: the install "
            "did not take effect. Restart the session (Runtime > Restart session) and run this "
            "cell again.")
    stale = changed_while_imported(installed_before or {})
    if stale:
        raise RestartNeeded(
            "The install upgraded packages this session had already imported ("
            + ", ".join(stale) + "). Restart the session (Runtime > Restart session), then run "
            "the notebook from the top; this cell will then skip the install.")
    fresh = installed_before is not None and installed_before.get("nbhelpers") != version
    kind = runtime_kind()
    if kind == COLAB:
        where = f"Colab: {_sign_in_on_colab()}"
    elif kind == COLAB_ENTERPRISE:
        where = (f"Colab Enterprise ({PRODUCT_VARIABLE}={ENTERPRISE_PRODUCT}): signed in as the "
                 f"runtime's user; {_project_of_runtime()}")
    else:
        where = (f"{kind} (not Colab): the real cloud uses your application default "
                 "credentials (gcloud auth application-default login); the emulator needs none")
    line = f"nbhelpers {version} {'installed' if fresh else 'already installed'}. Runtime: {where}."
    print(line)
    return line
