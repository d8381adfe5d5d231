"""Workshops (#13 item 4), with several identities against the emulator: an organiser deploys
one shared dedicated endpoint and grants three attendees the project's custom role that only
calls it; none of them deploys, each chats through it (and streams: the endpoint is dedicated);
none can deploy, undeploy or delete anything of it; nobody ungranted gets in; an attendee cannot
tear the workshop down; the organiser's teardown leaves nothing but the role."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest
from google.api_core import exceptions
from google.auth.transport.requests import AuthorizedSession
from google.cloud import aiplatform

import nbhelpers
from nbhelpers import workshop
from nbhelpers.errors import ConfigError
from tests.conftest import FAKE_TOKEN

ORGANISER = "organiser@example.com"
ATTENDEES = ["ana@example.org", "ben@example.org", "cyd@example.org"]
ROOM = "group:llama-room@example.org"  # cyd is granted through it
WORKSHOP = "llama-day"


def _restrict(emulator, email: str, groups: tuple[str, ...] = ()) -> None:
    """The attendee holds only what IAM grants it (the organiser stays the project's owner)."""
    request = urllib.request.Request(
        f"{emulator.url}/emulator/restricted-principals",
        data=json.dumps({"email": email, "groups": list(groups)}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request).close()


def _as(env, tmp_path, email: str, run_id: str):
    """`email` on a runtime of their own (their own state directory)."""
    env.setenv("NBHELPERS_EMULATOR_IDENTITY", email)
    env.setenv("NBHELPERS_STATE_DIR", str(tmp_path / email))
    return nbhelpers.connect(project="test-project", run_id=run_id, quiet=True)


def _denied(permission: str) -> str:
    """Google's PERMISSION_DENIED wording, as the emulator's 403 carries it."""
    return f"Permission '{permission}' denied on resource"


def _counts(emulator) -> tuple[int, int]:
    data = emulator.vertex.state.data
    return len(data["endpoints"]), len(data["models"])


def test_attendees_must_be_google_identities():
    assert workshop.attendee_members(["Ana@Example.org", "group:room@example.org",
                                      "user:ana@example.org"]) == [
        "group:room@example.org", "user:ana@example.org"]
    for bad in (["allUsers"], ["domain:example.org"], ["serviceAccount:x@p.iam.gserviceaccount"
                                                       ".com"], ["ana"], ["ana@localhost"], []):
        with pytest.raises(ConfigError, match="attendee|attendees must hold"):
            workshop.attendee_members(bad)
    with pytest.raises(ConfigError, match="attendees must be a list"):
        workshop.attendee_members("ana@example.org")


def test_the_plan_sizes_replicas_for_the_room(env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    small = workshop.plan_workshop("Llama-3.1-8B-Instruct", attendees=30, ask_for_token=False)
    assert small.scaling.most == 1 and small.deployment.dedicated_endpoint
    crowd = workshop.plan_workshop("Llama-3.1-8B-Instruct", attendees=600, ask_for_token=False)
    assert (crowd.scaling.min_replicas, crowd.scaling.most) == (1, 3)  # 256 at once each
    assert crowd.gpus == 3 and "1 to 3 replicas" in crowd.describe()
    with pytest.raises(ConfigError, match="base model"):
        workshop.plan_workshop("Llama-3.1-8B", attendees=3, ask_for_token=False)
    with pytest.raises(ConfigError, match="attendees"):
        workshop.plan_workshop("Llama-3.1-8B-Instruct", attendees=0)


def test_a_workshop_of_three_attendees_shares_one_endpoint(env, emulator, tmp_path, capsys):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    for email in ATTENDEES:
        _restrict(emulator, email, (ROOM.split(":")[1],) if email.startswith("cyd") else ())
    _restrict(emulator, "eve@example.org")  # never granted

    organiser = _as(env, tmp_path, ORGANISER, WORKSHOP)
    nbhelpers.prepare_project(organiser)
    plan = workshop.plan_workshop("Llama-3.1-8B-Instruct", attendees=3, hours=4,
                                  ask_for_token=False)
    card = workshop.up(organiser, plan)
    assert card["model"] == "Llama-3.1-8B-Instruct" and card["organiser"] == ORGANISER
    assert "token" not in json.dumps(card).lower() and FAKE_TOKEN not in json.dumps(card)
    endpoint = aiplatform.Endpoint(card["endpoint"])
    labels = dict(endpoint.labels)
    assert labels["nbh-workshop"] == WORKSHOP and labels["nbh-run"] == WORKSHOP
    assert labels["nbh-expires"] == card["expires_utc"]
    assert endpoint.gca_resource.dedicated_endpoint_enabled
    assert _counts(emulator) == (1, 1)
    assert workshop.grant(organiser, ATTENDEES[:2] + [ROOM]) == sorted(
        ["user:ana@example.org", "user:ben@example.org", ROOM])
    assert workshop.grant(organiser, ATTENDEES[:1]) == []  # granted once, whatever the re-runs
    role = f"projects/test-project/roles/{workshop.ATTENDEE_ROLE_ID}"
    on_endpoint = emulator.vertex.state.data["endpoint_iam"][card["endpoint"]]["bindings"]
    assert [b["role"] for b in on_endpoint] == [role]  # the custom role, not aiplatform.user
    assert emulator.vertex.state.data["custom_roles"][role]["includedPermissions"] == [
        "aiplatform.endpoints.get", "aiplatform.endpoints.predict"]
    bucket_policy = organiser.storage_client().bucket(organiser.settings.bucket_name) \
        .get_iam_policy(requested_policy_version=3)
    card_readers = [b for b in bucket_policy.bindings if b.get("condition")]
    assert [b["role"] for b in card_readers] == [workshop.CARD_READER_ROLE]
    assert f"objects/{workshop.WORKSHOP_FILES}/{WORKSHOP}/" in \
        card_readers[0]["condition"]["expression"]

    for number, email in enumerate(ATTENDEES):
        attendee = _as(env, tmp_path, email, f"attendee-{number}")
        deployment = workshop.join(attendee, WORKSHOP)
        assert deployment.endpoint_name == card["endpoint"]
        answer = nbhelpers.chat(deployment, f"Hello from attendee {number}", max_tokens=8)
        assert answer.strip()
        with pytest.raises(exceptions.Forbidden):  # no deploy of their own
            nbhelpers.deploy(attendee, nbhelpers.plan_deployment(
                "Llama-3.2-1B-Instruct", ask_for_token=False))
        assert _counts(emulator) == (1, 1)
    # The last attendee also predicts and streams, then tries each way of harming the room.
    assert nbhelpers.predict(deployment, "Hi", max_tokens=8)[0].text.strip()
    assert nbhelpers.chat(deployment, "Count to three", max_tokens=8, stream=True).strip()
    assert "data: " not in capsys.readouterr().out  # streamed text, not raw events
    shared = aiplatform.Endpoint(card["endpoint"])  # get: granted
    with pytest.raises(exceptions.Forbidden, match=_denied("aiplatform.endpoints.undeploy")):
        shared.undeploy(deployment.deployed_model_id)
    with pytest.raises(exceptions.Forbidden, match=_denied("aiplatform.endpoints.delete")):
        shared.delete()
    endpoints = aiplatform.gapic.EndpointServiceClient(
        credentials=attendee.credentials, transport="rest",
        client_options=attendee.client_options())
    with pytest.raises(exceptions.Forbidden, match=_denied("aiplatform.endpoints.deploy")):
        endpoints.deploy_model(endpoint=card["endpoint"], deployed_model={
            "model": deployment.model_resource, "dedicated_resources": {
                "machine_spec": {"machine_type": deployment.machine_type},
                "min_replica_count": 1}}).result(timeout=30)
    models = aiplatform.gapic.ModelServiceClient(
        credentials=attendee.credentials, transport="rest",
        client_options=attendee.client_options())
    with pytest.raises(exceptions.Forbidden, match=_denied("aiplatform.models.delete")):
        models.delete_model(name=deployment.model_resource).result(timeout=30)
    served = emulator.vertex.state.data["endpoints"][card["endpoint"]]["deployedModels"]
    assert _counts(emulator) == (1, 1) and [d["id"] for d in served] == [
        deployment.deployed_model_id]
    # An attendee who connects as the workshop's run still cannot tear it down.
    as_workshop = _as(env, tmp_path, ATTENDEES[0], WORKSHOP)
    with pytest.raises(ConfigError, match="only its organiser tears it down"):
        workshop.down(as_workshop)
    assert _counts(emulator) == (1, 1)

    outsider = _as(env, tmp_path, "eve@example.org", "eve-run")
    with pytest.raises(ConfigError, match="may not call workshop llama-day's endpoint"):
        workshop.join(outsider, WORKSHOP)
    with pytest.raises(ConfigError, match="no workshop 'no-such-day'"):
        workshop.join(outsider, "no-such-day")
    # Eve may see the project's endpoints (a project viewer) but was never granted calling.
    emulator.vertex.setup_apis.write_as_someone_else("test-project", {
        "role": "roles/aiplatform.viewer", "members": ["user:eve@example.org"]})
    seen = workshop.join(outsider, WORKSHOP)
    with pytest.raises(ValueError, match="Status code:403.*" + _denied(
            "aiplatform.endpoints.predict")):  # the SDK's dedicated-endpoint predict (C90)
        nbhelpers.predict(seen, "Hi", max_tokens=8)
    with pytest.raises(openai.PermissionDeniedError, match=_denied(
            "aiplatform.endpoints.predict")):
        nbhelpers.chat(seen, "Hi", max_tokens=8)

    organiser = _as(env, tmp_path, ORGANISER, WORKSHOP)
    removed = workshop.down(organiser)
    assert [e.resource_name for e in removed.endpoints] == [card["endpoint"]]
    assert _counts(emulator) == (0, 0)
    assert emulator.vertex.state.data.get("endpoint_iam") == {}
    policy = organiser.storage_client().bucket(organiser.settings.bucket_name) \
        .get_iam_policy(requested_policy_version=3)
    assert not [b for b in policy.bindings if b.get("condition")]
    with pytest.raises(ConfigError, match="no workshop 'llama-day'"):
        workshop.read_card(organiser, WORKSHOP)
    out = capsys.readouterr().out
    assert "3 attendee grant(s) removed" in out and "custom role nbhWorkshopAttendee is kept" in out
    assert not emulator.vertex.state.data["custom_roles"][role].get("deleted")
    assert FAKE_TOKEN not in out


def _role_api(session, method: str, path: str, **kwargs):
    """IAM v1 projects.roles over REST, as `gcloud iam roles` would call it."""
    return AuthorizedSession(session.credentials).request(
        method, f"{session.client_options()['api_endpoint']}/v1/{path}", timeout=30, **kwargs)


def test_the_attendee_role_is_made_once_and_kept_to_calling(env, emulator, tmp_path, capsys):
    from nbhelpers.emulator import access

    organiser = _as(env, tmp_path, ORGANISER, "role-day")
    name = workshop.attendee_role(organiser)
    assert name == f"projects/test-project/roles/{workshop.ATTENDEE_ROLE_ID}"
    first = _role_api(organiser, "GET", name).json()
    assert workshop.attendee_role(organiser) == name  # twice: nothing created or changed
    assert _role_api(organiser, "GET", name).json() == first
    assert list(emulator.vertex.state.data["custom_roles"]) == [name]
    assert (first["stage"], first["includedPermissions"]) == (
        "GA", ["aiplatform.endpoints.get", "aiplatform.endpoints.predict"])
    assert capsys.readouterr().out.count("Created the custom role") == 1

    # Someone widened it: the next up/grant sets its permissions back, with the etag.
    widened = _role_api(organiser, "PATCH", name, params={"updateMask": "includedPermissions"},
                        json={"includedPermissions": [*first["includedPermissions"],
                                                      "aiplatform.endpoints.undeploy"]})
    assert widened.status_code == 200, widened.text
    workshop.attendee_role(organiser)
    assert _role_api(organiser, "GET", name).json()["includedPermissions"] == \
        first["includedPermissions"]
    assert "set its includedPermissions back" in capsys.readouterr().out
    stale = _role_api(organiser, "PATCH", name, params={"updateMask": "title"},
                      json={"title": "x", "etag": first["etag"]})
    assert (stale.status_code, stale.json()["error"]["status"]) == (409, "ABORTED")

    # Deleted: its bindings grant nothing until the next up/grant undeletes it.
    assert _role_api(organiser, "DELETE", name).json()["deleted"] is True
    assert access.role_permissions(emulator.vertex.state, name) == frozenset()
    again = _role_api(organiser, "POST", "projects/test-project/roles",
                      json={"roleId": workshop.ATTENDEE_ROLE_ID, "role": {"title": "t"}})
    assert again.status_code == 400 and "marked for deletion" in again.text
    workshop.attendee_role(organiser)
    assert "undeleted it" in capsys.readouterr().out
    assert access.role_permissions(emulator.vertex.state, name) == frozenset(
        workshop.ATTENDEE_PERMISSIONS)
    taken = _role_api(organiser, "POST", "projects/test-project/roles",
                      json={"roleId": workshop.ATTENDEE_ROLE_ID, "role": {"title": "t"}})
    assert (taken.status_code, taken.json()["error"]["status"]) == (409, "ALREADY_EXISTS")

    # Deleted more than 7 days ago: gone for IAM, and its id is not free yet.
    _role_api(organiser, "DELETE", name)
    emulator.vertex.setup_apis.age_deleted_role(name, days=8)
    with pytest.raises(ConfigError, match="cannot be made now: You can't create a role_id "
                       r"\(nbhWorkshopAttendee\) which has been marked for deletion"):
        workshop.attendee_role(organiser)

    misspelt = _role_api(organiser, "POST", "projects/test-project/roles", json={
        "roleId": "other", "role": {"includedPermissions": ["aiplatform.endpoints.predikt"]}})
    assert misspelt.status_code == 400
    assert "Permission aiplatform.endpoints.predikt is not valid." in misspelt.text

    _restrict(emulator, ATTENDEES[0])  # an attendee may not make or change roles
    attendee = _as(env, tmp_path, ATTENDEES[0], "role-day")
    with pytest.raises(ConfigError, match="may not manage the custom role.*" + _denied(
            "iam.roles.get")):
        workshop.attendee_role(attendee)


def test_the_command_line_plans_with_the_quota_and_refuses_by_name(env, capsys):
    from nbhelpers.__main__ import main

    env.setenv("NBHELPERS_EMULATOR_IDENTITY", ORGANISER)
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    base = ["workshop", "--id", "cli-day", "--project", "test-project"]
    assert main([*base[:1], "plan", *base[1:], "--attendees", "600"]) == 0
    out = capsys.readouterr().out
    assert "workshop of 600 attendee(s)" in out and "1 to 3 replicas" in out
    assert "Serving quota: CustomModelServingL4GPUsPerProjectPerRegion" in out
    assert "this deployment needs 3" in out  # the quota is asked for the most replicas
    assert main(["workshop", "grant", *base[1:], "--attendee", "allUsers"]) == 2
    assert "is not a Google identity" in capsys.readouterr().err
    assert main(["workshop", "card", *base[1:]]) == 2
    assert "no workshop 'cli-day'" in capsys.readouterr().err


def _organiser_cell(**values) -> None:
    """The setup notebook's workshop cell, run as it is written, with the form's values."""
    from pathlib import Path

    cells = json.loads((Path(__file__).resolve().parent.parent / "notebooks" /
                        "00_setup.ipynb").read_text())["cells"]
    source = "".join(next(c for c in reversed(cells) if c["cell_type"] == "code"
                          and "workshop.up(" in "".join(c["source"]))["source"])
    namespace = {"nbhelpers": nbhelpers, "PROJECT_ID": "test-project", "REGION": "us-central1",
                 "BUCKET_URI": "", "BACKEND": "emulator", "WORKSHOP_MODEL": "Llama-3.2-1B-Instruct",
                 "WORKSHOP_ATTENDEES": 3, "WORKSHOP_HOURS": 2.0, **values}
    exec(compile(source, "00_setup.ipynb[workshop]", "exec"), namespace)  # noqa: S102


@pytest.mark.notebooks
def test_an_attendee_runs_notebook_03_on_the_workshops_endpoint(env, emulator, tmp_path):
    from pathlib import Path

    from nbhelpers.run_config import RunConfig
    from nbhelpers.runner import run

    env.setenv("HF_TOKEN", FAKE_TOKEN)
    _restrict(emulator, ATTENDEES[1])
    env.setenv("NBHELPERS_EMULATOR_IDENTITY", ORGANISER)
    nbhelpers.prepare_project(nbhelpers.connect(project="test-project", run_id="setup",
                                                quiet=True))
    _organiser_cell(WORKSHOP_ID="nb-day", WORKSHOP_ACTION="up",
                    WORKSHOP_EMAILS=f" {ATTENDEES[1]}, ")
    assert _counts(emulator) == (1, 1)
    report = run(RunConfig(Path(__file__).resolve().parent.parent / "notebooks",
                           tmp_path / "attendee", run_id="ben-run", progress=False, keep=True,
                           only=("03_openai_chat_inference.ipynb",),
                           parameters={"WORKSHOP": "nb-day", "N_PROMPTS": 4,
                                       "MAX_TOKENS": 16},
                           environment={"NBHELPERS_EMULATOR_URL": emulator.url,
                                        "NBHELPERS_EMULATOR_IDENTITY": ATTENDEES[1],
                                        "GOOGLE_CLOUD_PROJECT": "test-project"}))
    assert [(r.notebook, r.ok) for r in report.runs] == [
        ("03_openai_chat_inference.ipynb", True)], [r.error for r in report.runs]
    executed = (tmp_path / "attendee" / "ben-run" / "03_openai_chat_inference.ipynb").read_text()
    assert "Joined workshop nb-day: Llama-3.2-1B-Instruct" in executed
    assert "Deploying" not in executed and _counts(emulator) == (1, 1)  # nothing of Ben's
    assert report.runs[0].results.get("chat_reply")
    _organiser_cell(WORKSHOP_ID="nb-day", WORKSHOP_ACTION="down", WORKSHOP_EMAILS="")
    assert _counts(emulator) == (0, 0)
