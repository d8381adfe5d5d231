"""The setup and quota cells of Google's Llama notebooks run the Google Cloud CLI; unmodified,
pointed at the emulator with CLOUDSDK_API_ENDPOINT_OVERRIDES_* and a rehearsal access token,
they exit 0 and print what the emulator holds. gcloud starts slowly (about a second a command),
so this runs a handful of commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request

import pytest

from nbhelpers.emulator.common import project_number
from nbhelpers.emulator.identity import access_token
from nbhelpers.emulator.quotas import serving_quota_ids
from nbhelpers.validate import VERTEX_REGIONS

pytestmark = pytest.mark.skipif(shutil.which("gcloud") is None,
                                reason="the Google Cloud CLI (gcloud) is not installed")
PROJECT = "gcloud-project"
SERVICES = ("SERVICEUSAGE", "CLOUDRESOURCEMANAGER", "CLOUDQUOTAS")
L4 = "CustomModelServingL4GPUsPerProjectPerRegion"


@pytest.fixture
def gcloud(emulator, tmp_path):
    """Runs `gcloud ARGS...` against the emulator with its own configuration folder (nothing of
    the user's gcloud set-up is read or changed) and returns (exit status, stdout, stderr)."""
    token_file = tmp_path / "access-token"
    token_file.write_text(access_token("rehearsal-user@example.com"))
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_PROJECT": PROJECT, "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token_file),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
           "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true"}
    env.update({f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{service}": emulator.url + "/"
                for service in SERVICES})

    def run(*args: str) -> tuple[int, str, str]:
        done = subprocess.run(["gcloud", *args], env=env, capture_output=True, text=True,
                              timeout=60)
        return done.returncode, done.stdout, done.stderr

    return run


def _get(url: str) -> dict:
    with urllib.request.urlopen(url) as response:
        return json.loads(response.read())


def test_setup_cells_enable_apis_read_the_project_and_grant_roles(gcloud, emulator):
    status, _, err = gcloud("services", "enable", "aiplatform.googleapis.com",
                            "compute.googleapis.com")
    assert status == 0, err
    for service in ("aiplatform.googleapis.com", "compute.googleapis.com"):
        state = _get(f"{emulator.url}/v1/projects/{PROJECT}/services/{service}")["state"]
        assert state == "ENABLED", service

    # Google's notebook reads the number from the last line of this output.
    status, out, err = gcloud("projects", "describe", PROJECT)
    assert status == 0, err
    assert out.strip().splitlines()[-1] == f"projectNumber: '{project_number(PROJECT)}'"

    account = f"serviceAccount:{project_number(PROJECT)}-compute@developer.gserviceaccount.com"
    for role in ("roles/storage.admin", "roles/aiplatform.user"):
        status, _, err = gcloud("projects", "add-iam-policy-binding", "--no-user-output-enabled",
                                PROJECT, f"--member={account}", f"--role={role}")
        assert status == 0, err
    status, out, err = gcloud("projects", "get-iam-policy", PROJECT, "--format=json")
    assert status == 0, err
    policy = json.loads(out)
    assert {b["role"]: b["members"] for b in policy["bindings"]} == {
        "roles/storage.admin": [account], "roles/aiplatform.user": [account]}


def test_quota_cells_read_each_quota_with_the_regions_it_applies_to(gcloud, emulator):
    for quota_id, region, value in ((L4, "us-central1", 2),
                                    ("CustomModelServingTPUV5eCoresPerProjectPerRegion", "*", 4)):
        request = urllib.request.Request(
            f"{emulator.url}/emulator/quota",
            json.dumps({"quota_id": quota_id, "region": region, "value": value}).encode(),
            {"Content-Type": "application/json"})
        urllib.request.urlopen(request).close()

    status, out, err = gcloud("beta", "quotas", "info", "describe", L4,
                              "--service=aiplatform.googleapis.com", f"--project={PROJECT}",
                              "--format=json")
    assert status == 0, err
    info = json.loads(out)
    assert info["metric"] == "aiplatform.googleapis.com/custom_model_serving_nvidia_l4_gpus"
    by_value = {d["details"]["value"]: d for d in info["dimensionsInfos"]}
    assert by_value["2"]["dimensions"] == {"region": "us-central1"}
    assert by_value["2"]["applicableLocations"] == ["us-central1"]
    assert "dimensions" not in by_value["16"]  # the value of every other region
    assert sorted(by_value["16"]["applicableLocations"]) == sorted(
        set(VERTEX_REGIONS) - {"us-central1"})

    # gcloud lists in pages of 10: the eleven quotas come in two.
    status, out, err = gcloud("beta", "quotas", "info", "list",
                              "--service=aiplatform.googleapis.com", f"--project={PROJECT}",
                              "--format=value(quotaId)")
    assert status == 0, err
    listed = out.split()
    assert listed == sorted([*serving_quota_ids(),
                             "CustomModelServingTPUV5eCoresPerProjectPerRegion"])
    assert len(listed) == 11 and "CustomModelServingPreemptibleH100GPUsPerProjectPerRegion" \
        in listed

    # The alpha command calls Cloud Quotas v1; the same answer.
    status, out, err = gcloud("alpha", "quotas", "info", "describe", L4,
                              "--service=aiplatform.googleapis.com", f"--project={PROJECT}",
                              "--format=json")
    assert status == 0, err
    assert json.loads(out)["dimensionsInfos"] == info["dimensionsInfos"]
