"""The runtimes people use: the first cell every notebook shares, the Hugging Face token where
each runtime keeps it (environment, Colab's secrets, Secret Manager, prompt), the Hub's access
check, and notebook 01 run headless as a Colab and a Colab Enterprise user would, with the
google.colab stand-in of tests/colab_standin on the kernel's path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import nbhelpers
from nbhelpers import notebook_checks, runtime, tokens
from nbhelpers.errors import ConfigError
from tests.conftest import FAKE_TOKEN
from tests.test_notebooks import NOTEBOOKS, _outputs, run_suite

ROOT = Path(__file__).resolve().parent.parent
STANDIN = Path(__file__).resolve().parent / "colab_standin"
MODEL_REPO = "meta-llama/Llama-3.1-8B-Instruct"
DEPLOY = "01_deploy_llama31_text.ipynb"


def hub_access(emulator, token: str, access: str, repo: str = "*") -> None:
    """What the emulated Hub says this token may do (granted, not_requested, pending, invalid)."""
    request = urllib.request.Request(
        f"{emulator.url}/emulator/huggingface/access",
        json.dumps({"token": token, "access": access, "repo": repo}).encode(),
        {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


def store_secret(emulator, project: str, value: str, secret_id: str = "hf-token") -> None:
    """Puts the token in the emulated Secret Manager with the real SDK, as a person would."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import secretmanager

    client = secretmanager.SecretManagerServiceClient(
        credentials=AnonymousCredentials(), transport="rest",
        client_options={"api_endpoint": emulator.url})
    secret = client.create_secret(parent=f"projects/{project}", secret_id=secret_id,
                                  secret={"replication": {"automatic": {}}})
    client.add_secret_version(parent=secret.name, payload={"data": value.encode()})


@pytest.fixture
def colab(monkeypatch, tmp_path):
    """This process as a plain Colab runtime: the stand-in importable, its secrets in a file.
    google.colab leaves sys.modules afterwards, so later tests are not on "Colab"."""
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.delenv("VERTEX_PRODUCT", raising=False)
    secrets = tmp_path / "colab-secrets.json"
    monkeypatch.setenv("COLAB_STANDIN_SECRETS", str(secrets))
    monkeypatch.setenv("COLAB_STANDIN_LOG", str(tmp_path / "colab.log"))
    yield secrets
    for name in [m for m in sys.modules if m == "google.colab" or m.startswith("google.colab.")]:
        del sys.modules[name]


# --- the first cell ------------------------------------------------------------------------------
def test_every_notebook_starts_with_the_same_pinned_runtime_cell(tmp_path):
    version, repository = notebook_checks.release(NOTEBOOKS)
    assert version == "0.1.0" and repository.startswith("https://github.com/")
    cell = runtime.first_cell(version, repository)
    assert f'"{version}", "{repository}"' in cell and "@v{NBHELPERS_VERSION}" in cell
    assert notebook_checks.check(NOTEBOOKS) == []
    # A copy of the notebooks under a pyproject of another release: every pin is now wrong.
    copy = tmp_path / "repo"
    shutil.copytree(NOTEBOOKS, copy / "notebooks")
    (copy / "pyproject.toml").write_text(
        f'[project]\nversion = "0.2.0"\n[project.urls]\nRepository = "{repository}"\n')
    found = notebook_checks.check(copy / "notebooks")
    assert len(found) == len(list(NOTEBOOKS.glob("*.ipynb"))), found
    assert all("first code cell is not the runtime cell" in p for p in found)
    # One notebook whose first cell drifted is named, the others pass.
    (copy / "pyproject.toml").write_text(
        f'[project]\nversion = "{version}"\n[project.urls]\nRepository = "{repository}"\n')
    edited = copy / "notebooks" / DEPLOY
    notebook = json.loads(edited.read_text())
    first = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    first["source"] = ["%pip install nbhelpers\n"]
    edited.write_text(json.dumps(notebook))
    assert [p.split(":")[0] for p in notebook_checks.check(copy / "notebooks")] == [DEPLOY]
    (copy / "pyproject.toml").write_text('[project]\nversion = "0.1.0"\n')
    assert "[project.urls] Repository" in notebook_checks.check(copy / "notebooks")[0]


def test_readme_opens_every_notebook_of_this_release_in_colab_enterprise():
    version, repository = notebook_checks.release(NOTEBOOKS)
    readme = (ROOT / "README.md").read_text()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        link = runtime.colab_enterprise_url(repository, version, f"notebooks/{path.name}")
        assert f"[{path.stem}]({link})" in readme, path.name
    assert link == ("https://console.cloud.google.com/vertex-ai/colab/import/https:%2F%2F"
                    "raw.githubusercontent.com%2F" + repository.split("github.com/")[1]
                    .replace("/", "%2F") + f"%2Fv{version}%2Fnotebooks%2F05_cleanup.ipynb")


def test_a_restart_is_asked_for_when_an_install_changed_imported_code():
    import yaml

    real = runtime._installed()["pyyaml"]
    assert yaml and runtime.changed_while_imported({"PyYAML": "0.0.1"}) == [
        f"PyYAML 0.0.1 -> {real}"]
    assert runtime.changed_while_imported({"PyYAML": real}) == []
    # A distribution that was not installed before was never imported: no restart for it.
    assert runtime.changed_while_imported({}) == []
    with pytest.raises(runtime.RestartNeeded, match="PyYAML 0.0.1 -> .*Restart the session"):
        runtime.make_ready("0.1.0", installed_before={"pyyaml": "0.0.1"})
    with pytest.raises(runtime.RestartNeeded, match="nbhelpers 9.9.9 was asked for but 0.1.0"):
        runtime.make_ready("9.9.9")


def test_runtime_kinds(colab, monkeypatch, capsys):
    assert runtime.runtime_kind() == runtime.COLAB
    runtime.make_ready("0.1.0", installed_before={"nbhelpers": "0.1.0"})
    assert "already installed. Runtime: Colab: signed in" in capsys.readouterr().out
    assert Path(os.environ["COLAB_STANDIN_LOG"]).read_text().count("authenticate_user") == 1
    monkeypatch.setenv("VERTEX_PRODUCT", "COLAB_ENTERPRISE")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "team-project")
    assert runtime.runtime_kind() == runtime.COLAB_ENTERPRISE
    line = runtime.make_ready("0.1.0")
    assert "Colab Enterprise (VERTEX_PRODUCT=COLAB_ENTERPRISE)" in line
    assert "project team-project" in line
    assert Path(os.environ["COLAB_STANDIN_LOG"]).read_text().count("authenticate_user") == 1


def test_the_standin_leaves_google_cloud_and_google_auth_importable():
    code = ("import google.colab.userdata, google.colab.auth, google.auth, "
            "google.cloud.aiplatform, google.cloud.secretmanager; "
            "print(google.colab.__file__); print(google.cloud.aiplatform.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(STANDIN)}, check=True).stdout
    colab_file, aiplatform_file = out.split()
    assert colab_file.startswith(str(STANDIN)) and "site-packages" in aiplatform_file


# --- where the token comes from ------------------------------------------------------------------
def test_colab_secrets_each_answer(colab, monkeypatch, capsys):
    for name in tokens.TOKEN_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    colab.write_text(json.dumps({"HF_TOKEN": {"value": FAKE_TOKEN, "notebook_access": False}}))
    with pytest.raises(ConfigError, match="exists but this notebook may not read it.*"
                                          "'Notebook access'") as refused:
        tokens.hf_token(required=True, model_name="Llama-3.1-8B", ask=False)
    assert FAKE_TOKEN not in str(refused.value)
    colab.write_text("{}")
    with pytest.raises(ConfigError, match="Colab secrets hold no HF_TOKEN"):
        tokens.hf_token(required=True, ask=False)
    colab.write_text(json.dumps({"HF_TOKEN": {"value": f" {FAKE_TOKEN}\n",
                                              "notebook_access": True}}))
    assert tokens.hf_token(required=True, ask=False) == FAKE_TOKEN
    out = capsys.readouterr().out
    assert "Hugging Face token: from Colab secrets (HF_TOKEN)" in out and FAKE_TOKEN not in out
    # The environment comes first; Colab Enterprise has no Secrets panel, so it is not asked.
    monkeypatch.setenv("HF_TOKEN", "hf_fromTheEnvironment1")
    assert tokens.hf_token(required=True, ask=False) == "hf_fromTheEnvironment1"
    assert "from the environment (HF_TOKEN)" in capsys.readouterr().out
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("VERTEX_PRODUCT", "COLAB_ENTERPRISE")
    with pytest.raises(ConfigError) as missing:
        tokens.hf_token(required=True, ask=False)
    assert "Looked here" not in str(missing.value)


def test_token_from_secret_manager_of_the_connected_project(session, emulator, env, capsys):
    with pytest.raises(ConfigError, match="Secret Manager has no secret 'hf-token' in project "
                                          "test-project"):
        tokens.hf_token(required=True, ask=False, project_secrets=session)
    store_secret(emulator, "test-project", FAKE_TOKEN)
    assert tokens.hf_token(required=True, ask=False, project_secrets=session) == FAKE_TOKEN
    out = capsys.readouterr().out
    assert ("Hugging Face token: from Secret Manager (secret 'hf-token' in project "
            "test-project, latest version)") in out and FAKE_TOKEN not in out
    store_secret(emulator, "test-project", "hf_otherSecretName42", secret_id="team-hf")
    assert tokens.hf_token(required=True, ask=False, project_secrets=session,
                           secret_name="team-hf") == "hf_otherSecretName42"
    with pytest.raises(ConfigError, match="hf_token_secret must be a Secret Manager secret id"):
        nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", hf_token_secret="no/slash")


# --- can the token read the model? ---------------------------------------------------------------
@pytest.mark.parametrize("access, message", [
    ("invalid", "is not valid: the Hub answered 401 Unauthorized"),
    ("not_requested", "has not accepted the licence of meta-llama/Llama-3.1-8B-Instruct"),
    ("pending", "request to access meta-llama/Llama-3.1-8B-Instruct is pending"),
])
def test_the_hub_check_names_each_reason_before_anything_exists(session, emulator, env,
                                                                access, message):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    hub_access(emulator, FAKE_TOKEN, access, repo="*" if access == "invalid" else MODEL_REPO)
    with pytest.raises(ConfigError, match=message) as refused:
        nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", ask_for_token=False)
    assert FAKE_TOKEN not in str(refused.value)
    assert emulator.vertex.state.data["endpoints"] == {}
    assert emulator.vertex.state.data["models"] == {}
    # Another repository (or another token) is not affected.
    if access != "invalid":
        assert tokens.check_hf_access(FAKE_TOKEN, "meta-llama/Llama-3.2-1B") == "granted"
    assert tokens.check_hf_access("hf_someoneElsesToken9", MODEL_REPO) == "granted"


def test_the_hub_check_passes_and_says_so(session, env, capsys):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", ask_for_token=False)
    assert plan.container.env["HF_TOKEN"] == FAKE_TOKEN
    out = capsys.readouterr().out
    assert f"Hugging Face access: rehearsal-hf-user may read {MODEL_REPO}." in out
    with pytest.raises(ConfigError, match="holds spaces or characters"):
        tokens.check_hf_access("hf_two words", MODEL_REPO)


# --- notebook 01 as a Colab user runs it ---------------------------------------------------------
def _kernel_env(emulator, tmp_path, **extra: str) -> dict[str, str]:
    """No token in the environment; the stand-in on the kernel's path."""
    path = os.pathsep.join(p for p in (str(STANDIN), os.environ.get("PYTHONPATH", "")) if p)
    return {"NBHELPERS_EMULATOR_URL": emulator.url, "HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": "",
            "PYTHONPATH": path, "GOOGLE_CLOUD_PROJECT": "test-project",
            "COLAB_STANDIN_SECRETS": str(tmp_path / "colab-secrets.json"),
            "COLAB_STANDIN_LOG": str(tmp_path / "colab.log"), "VERTEX_PRODUCT": "", **extra}


def _deployed(emulator, tmp_path, results) -> str:
    assert [r.ok for r in results] == [True], [r.error for r in results]
    assert emulator.vertex.state.data["endpoints"], "nothing was deployed"
    text = _outputs(tmp_path / "colab" / DEPLOY)
    assert FAKE_TOKEN not in text
    return text


@pytest.mark.notebooks
def test_colab_user_with_the_token_only_in_colab_secrets_deploys(tmp_path, emulator):
    (tmp_path / "colab-secrets.json").write_text(
        json.dumps({"HF_TOKEN": {"value": FAKE_TOKEN, "notebook_access": True}}))
    results = run_suite(NOTEBOOKS, tmp_path, notebooks=(DEPLOY,), run_id="colab",
                        environment=_kernel_env(emulator, tmp_path))
    text = _deployed(emulator, tmp_path, results)
    # The first cell skipped the install (the right version is importable) and signed in.
    assert "nbhelpers 0.1.0 already installed. Runtime: Colab: signed in" in text
    assert "Installing nbhelpers" not in text
    assert (tmp_path / "colab.log").read_text().count("authenticate_user") == 1
    assert "Hugging Face token: from Colab secrets (HF_TOKEN)" in text
    assert f"Hugging Face access: rehearsal-hf-user may read {MODEL_REPO}." in text


@pytest.mark.notebooks
def test_colab_enterprise_user_with_the_token_only_in_secret_manager_deploys(tmp_path,
                                                                           emulator):
    store_secret(emulator, "test-project", FAKE_TOKEN)
    results = run_suite(NOTEBOOKS, tmp_path, notebooks=(DEPLOY,), run_id="colab",
                        environment=_kernel_env(emulator, tmp_path,
                                                VERTEX_PRODUCT="COLAB_ENTERPRISE"))
    text = _deployed(emulator, tmp_path, results)
    assert "Runtime: Colab Enterprise (VERTEX_PRODUCT=COLAB_ENTERPRISE)" in text
    assert not (tmp_path / "colab.log").exists()  # no sign-in step: the runtime runs as you
    assert ("Hugging Face token: from Secret Manager (secret 'hf-token' in project "
            "test-project, latest version)") in text
