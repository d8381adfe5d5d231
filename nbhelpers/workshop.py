"""Workshops: one shared dedicated endpoint that a room of attendees calls, instead of one
deployment (and one GPU of quota) per attendee.

The organiser plans the serving for N attendees (`plan_workshop`), checks the quota for it and
deploys it with a workshop label and an expiry (`up`), writes the workshop card to the bucket
(endpoint, model, region, expiry; no secrets), grants attendees a role that lets them call the
endpoint and nothing else (`grant`: the project's custom role `nbhWorkshopAttendee`, made when
missing), and tears it all down (`down`). A workshop is a run whose id is the workshop
id, so everything it creates carries the run's labels too and the cleanup notebook finds it.
An attendee only reads the card and connects (`join`): nothing is deployed, and no deploy
permission or quota is needed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nbhelpers import catalog, checks, settings, validate
from nbhelpers.checks import shown
from nbhelpers.connection import Session
from nbhelpers.container import VllmOptions
from nbhelpers.deployments import Deployment, deploy
from nbhelpers.errors import ConfigError, DeploymentError
from nbhelpers.hardware import Hardware
from nbhelpers.plans import DeploymentPlan, plan_deployment
from nbhelpers.prepare import IAM_ATTEMPTS, IAM_BACKOFF_S, IAM_POLICY_VERSION
from nbhelpers.sizing import Scaling
from nbhelpers.teardown import Inventory, cleanup

WORKSHOP_FILES = "nbhelpers-workshops"  # the bucket's folder of workshop cards
CARD_FILE = "card.json"
LABEL_WORKSHOP = "nbh-workshop"  # on the workshop's endpoint, beside the run's labels
# What attendees are granted on the endpoint: a project custom role that calls it and nothing
# else. Vertex AI's predefined roles/aiplatform.user would also let an attendee undeploy or
# delete the room's endpoint ("Vertex AI access control with IAM", read 2026-11-26: predefined
# roles carry more than needed; a custom role with aiplatform.endpoints.predict calls an endpoint
# without controlling it). Per the Vertex AI REST reference, endpoints.get needs
# aiplatform.endpoints.get (join reads the endpoint), and predict, rawPredict, streamRawPredict
# and chat.completions all need aiplatform.endpoints.predict.
ATTENDEE_ROLE_ID = "nbhWorkshopAttendee"  # IAM role ids: 3-64 of A-Z a-z 0-9 _ .
ATTENDEE_PERMISSIONS = ("aiplatform.endpoints.get", "aiplatform.endpoints.predict")
ATTENDEE_ROLE_TITLE = "nbhelpers workshop attendee"  # at most 100 bytes
ATTENDEE_ROLE_DESCRIPTION = (
    "Calls a workshop's shared Vertex AI endpoint (get; predict, rawPredict, streamRawPredict, "
    "chat completions) and nothing else: no deploy, undeploy or delete. Made by nbhelpers "
    "workshop up/grant; granted on workshop endpoints only.")
# grant()'s default role: this id means the project's custom role above, made when missing; a
# role name (roles/..., projects/P/roles/R) is granted as it is (an organisation's own role).
ATTENDEE_ROLE = ATTENDEE_ROLE_ID
IAM_API = "https://iam.googleapis.com"  # IAM v1 projects.roles; the session may point elsewhere
CARD_READER_ROLE = "roles/storage.objectViewer"  # on the card's folder only (an IAM condition)
DEFAULT_HOURS = 8.0
MAX_HOURS = 72.0
MAX_ATTENDEES = 1_000
REQUESTS_PER_ATTENDEE = 1  # in flight at once: a person waits for the answer before asking again
_EMAIL = re.compile(r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
                    r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+")
MEMBER_KINDS = ("user", "group")


@dataclass(kw_only=True)
class WorkshopPlan:
    """The shared serving for a room: a dedicated endpoint and the replicas the room needs."""

    attendees: int
    hours: float
    deployment: DeploymentPlan
    per_replica: int  # requests one replica runs at once (vLLM's max_num_seqs)

    @property
    def scaling(self) -> Scaling:
        return self.deployment.scaling

    @property
    def gpus(self) -> int:
        """GPUs of quota at the most replicas: what the quota check asks for."""
        return self.deployment.hardware.accelerator_count * self.scaling.most

    def describe(self) -> str:
        return (f"workshop of {self.attendees} attendee(s) for {self.hours:g} h: "
                f"{self.attendees * REQUESTS_PER_ATTENDEE} request(s) in flight at most, "
                f"{self.per_replica} per replica (max_num_seqs); {self.scaling.describe()}; "
                f"{self.gpus} GPU(s) of quota at most\n" + self.deployment.describe())


def plan_workshop(model: str, *, attendees: int, hours: float = DEFAULT_HOURS,
                  machine_type: str = "", options: VllmOptions | None = None,
                  weights_uri: str = "", ask_for_token: bool = True,
                  region: str = settings.DEFAULT_REGION) -> WorkshopPlan:
    """Plans one dedicated endpoint for `attendees` people, each with one request in flight:
    one replica when max_num_seqs holds the room, else a replica range (from one, scaling out
    to what the room needs). Checked before any cloud call, like plan_deployment."""
    checks.whole("attendees", attendees, low=1, high=MAX_ATTENDEES)
    checks.number("hours", hours, low=0.5, high=MAX_HOURS,
                   why="how long the workshop's endpoint lives before its expiry")
    spec = catalog.get_model(model)
    if not spec.instruct:
        raise ConfigError(f"{spec.name} is a base model, with no chat template: a workshop "
                          "chats, so choose an Instruct model")
    if options is not None and not isinstance(options, VllmOptions):
        raise ConfigError(f"options must be nbhelpers.VllmOptions(...) or None, got "
                          f"{shown(options)}")
    checks.text("machine_type", machine_type, empty_ok=True)
    hardware = Hardware.for_machine(machine_type) if machine_type else spec.hardware
    resolved = (options or VllmOptions()).resolved(spec, hardware.accelerator_count)
    per_replica = resolved.max_num_seqs or spec.max_num_seqs
    needed = max(1, math.ceil(attendees * REQUESTS_PER_ATTENDEE / per_replica))
    scaling = Scaling(min_replicas=1, max_replicas=needed if needed > 1 else None)
    deployment = plan_deployment(spec, machine_type=machine_type, options=options,
                                 weights_uri=weights_uri, dedicated_endpoint=True,
                                 ask_for_token=ask_for_token, region=region, scaling=scaling)
    return WorkshopPlan(attendees=attendees, hours=hours, deployment=deployment,
                        per_replica=per_replica)


def check_quota(session: Session, plan: WorkshopPlan) -> str:
    """Stops before anything is created when the region's serving quota cannot hold the
    workshop at its most replicas; returns what was found."""
    from nbhelpers.quota import serving_quota

    check = dataclasses.replace(serving_quota(session, plan.deployment.hardware),
                                needed=plan.gpus)
    if not check.enough:
        raise ConfigError(
            f"not enough serving quota for the workshop: {check.describe()}. Plan fewer "
            "attendees per replica (a larger max_num_seqs), a smaller machine type, another "
            f"region, or request more '{check.quota_id}' quota before the workshop.")
    return check.describe()


def _workshop_id(session: Session) -> str:
    return validate.label_value(session.settings.run_id)


def card_path(workshop_id: str) -> str:
    return f"{WORKSHOP_FILES}/{validate.run_id(workshop_id)}/{CARD_FILE}"


def _expiry(hours: float) -> str:
    return time.strftime(settings.EXPIRY_FORMAT, time.gmtime(time.time() + hours * 3600))


def _workshop_endpoint(session: Session, plan: WorkshopPlan) -> Any:
    """The workshop's dedicated endpoint, made here with the workshop label and expiry (deploy
    then finds it by the run's labels and deploys to it), or the one an earlier `up` made."""
    from google.cloud import aiplatform

    key = plan.deployment.model.slug
    wid = _workshop_id(session)
    query = (f"{session.settings.label_filter()} AND labels.{settings.LABEL_MODEL}={key} AND "
             f"labels.{LABEL_WORKSHOP}={wid}")
    found = aiplatform.Endpoint.list(filter=query)
    if found:
        return found[0]
    labels = session.settings.labels(**{settings.LABEL_MODEL: key, LABEL_WORKSHOP: wid,
                                        settings.LABEL_EXPIRES: _expiry(plan.hours)})
    return aiplatform.Endpoint.create(
        display_name=validate.display_name(f"workshop-{wid}")[:128], labels=labels,
        dedicated_endpoint_enabled=True)


def up(session: Session, plan: WorkshopPlan) -> dict[str, Any]:
    """Checks the quota, deploys the workshop's model to its dedicated endpoint (or reuses
    the live one), and writes the workshop card; returns the card."""
    if not isinstance(plan, WorkshopPlan):
        raise ConfigError(f"plan must be what plan_workshop() returns, got {shown(plan)}")
    print(f"Serving quota for the workshop at its most replicas: {check_quota(session, plan)}.")
    try:  # before anything bills: the role grant() gives attendees by default
        attendee_role(session)
    except ConfigError as err:
        print(f"Note: {err}. `grant` then needs role= (--role) of your organisation's.")
    endpoint = _workshop_endpoint(session, plan)
    deployment = deploy(session, plan.deployment)
    if deployment.endpoint_name != endpoint.resource_name:
        raise DeploymentError(f"the workshop's model went to endpoint {deployment.endpoint_id}, "
                              f"not to the workshop's endpoint {endpoint.name}; run `down`")
    card = {
        "workshop": _workshop_id(session), "project": session.settings.project,
        "region": session.settings.region, "endpoint": deployment.endpoint_name,
        "model": deployment.model_name, "dedicated_endpoint": deployment.dedicated_endpoint,
        "attendees": plan.attendees, "replicas": plan.scaling.describe(),
        "expires_utc": dict(endpoint.labels).get(settings.LABEL_EXPIRES, ""),
        "organiser": session.settings.identity,
    }
    blob = _card_blob(session, card["workshop"])
    blob.upload_from_string(json.dumps(card, indent=2), content_type="application/json")
    session.record(workshop_card=f"gs://{blob.bucket.name}/{blob.name}")
    print(f"Workshop {card['workshop']} serves {card['model']} on endpoint "
          f"{deployment.endpoint_id} until {card['expires_utc']} UTC; card: "
          f"gs://{blob.bucket.name}/{blob.name}")
    return card


def _card_blob(session: Session, workshop_id: str) -> Any:
    bucket = session.storage_client().bucket(session.settings.bucket_name)
    return bucket.blob(card_path(workshop_id))


def read_card(session: Session, workshop_id: str) -> dict[str, Any]:
    """The workshop's card from the bucket of the session's project and region."""
    from google.api_core import exceptions

    checks.text("workshop", workshop_id)
    blob = _card_blob(session, workshop_id.strip())
    uri = f"gs://{blob.bucket.name}/{blob.name}"
    try:
        card = json.loads(blob.download_as_bytes())
    except exceptions.NotFound:
        raise ConfigError(
            f"no workshop {workshop_id.strip()!r}: there is no card at {uri}. Check WORKSHOP "
            "(the organiser gives it), and that the project and region are the workshop's"
        ) from None
    except exceptions.Forbidden:
        raise ConfigError(
            f"{session.settings.identity} may not read the workshop card {uri}: ask the "
            "organiser to grant you the workshop (`python -m nbhelpers workshop grant`)"
        ) from None
    return dict(card)


def attendee_members(attendees: Sequence[str]) -> list[str]:
    """IAM members for attendees: `user:EMAIL`, `group:EMAIL` or a bare e-mail (a user). Every
    one must be a Google identity; allUsers and the like are refused."""
    items = checks.sequence("attendees", attendees, low=1, high=MAX_ATTENDEES,
                            of="e-mail addresses or group:/user: members")
    members = []
    for item in items:
        checks.text("attendee", item, max_chars=254 + 6)
        kind, _, email = item.strip().lower().rpartition(":")
        kind = kind or "user"
        if kind not in MEMBER_KINDS or not _EMAIL.fullmatch(email):
            raise ConfigError(
                f"attendee {shown(item)} is not a Google identity: give an e-mail address "
                f"(a user) or 'group:' and a Google group's address; kinds: "
                f"{', '.join(MEMBER_KINDS)} (allUsers, domains and service accounts are not "
                "attendees)")
        members.append(f"{kind}:{email}")
    return sorted(set(members))


def _endpoint_iam_client(session: Session) -> Any:
    """The v1beta1 endpoint service (where an endpoint's IAM policy is), as aiplatform.init
    configured it for this session."""
    from google.cloud.aiplatform import initializer, utils

    client = initializer.global_config.create_client(
        client_class=utils.EndpointClientWithOverride, credentials=session.credentials,
        location_override=session.settings.region)
    return client.select_version("v1beta1")


def _read_modify_write(read: Any, write: Any, change: Any, what: str) -> list[str]:
    """IAM's read-modify-write at version 3 with the read's etag, repeated (with backoff) when
    another write lands in between, as the setup notebook's project grants are."""
    from google.api_core import exceptions

    for attempt in range(1, IAM_ATTEMPTS + 1):
        policy = read()
        changed = change(policy)
        if not changed:
            return []
        try:
            write(policy)
            return changed
        except (exceptions.Conflict, exceptions.PreconditionFailed) as err:
            if attempt == IAM_ATTEMPTS:
                raise ConfigError(f"could not change the IAM policy of {what}: it changed "
                                  f"under each of {IAM_ATTEMPTS} attempts ({err.message})"
                                  ) from None
            time.sleep(IAM_BACKOFF_S * 2 ** (attempt - 1) * (1 + random.random()))
    raise AssertionError("unreachable: the loop returns or raises")


def _iam_call(http: Any, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    """One IAM REST call; an error reply becomes google.api_core's exception for its status,
    with Google's message."""
    from google.api_core import exceptions

    response = http.request(method, url, timeout=60, **kwargs)
    if response.status_code >= 400:
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.reason
        raise exceptions.from_http_status(response.status_code, message, response=response)
    return dict(response.json())


def attendee_role(session: Session) -> str:
    """The project's custom role `nbhWorkshopAttendee`, made to hold exactly
    ATTENDEE_PERMISSIONS, and its name `projects/P/roles/nbhWorkshopAttendee`. Idempotent: read
    first; created when missing, undeleted when deleted (within IAM's 7 days), patched back when
    someone changed it; each read-modify-write carries the role's etag and starts again when
    another write lands in between (IAM v1 projects.roles create/get/patch/undelete)."""
    from google.api_core import exceptions
    from google.auth.transport.requests import AuthorizedSession

    project = session.settings.project
    name = f"projects/{project}/roles/{ATTENDEE_ROLE_ID}"
    wanted: dict[str, Any] = {"title": ATTENDEE_ROLE_TITLE,
                              "description": ATTENDEE_ROLE_DESCRIPTION,
                              "includedPermissions": sorted(ATTENDEE_PERMISSIONS), "stage": "GA"}
    root = (session.client_options() or {}).get("api_endpoint", IAM_API).rstrip("/") + "/v1/"
    http = AuthorizedSession(session.credentials)
    try:
        for _ in range(IAM_ATTEMPTS):
            try:
                role = _iam_call(http, "GET", root + name)
            except exceptions.NotFound:
                try:
                    _iam_call(http, "POST", f"{root}projects/{project}/roles",
                              json={"roleId": ATTENDEE_ROLE_ID, "role": wanted})
                except exceptions.Conflict:  # another organiser's create landed first
                    continue
                print(f"Created the custom role {name} ({', '.join(ATTENDEE_PERMISSIONS)}).")
                return name
            done = []
            if role.get("deleted"):
                role = _iam_call(http, "POST", f"{root}{name}:undelete",
                                 json={"etag": role.get("etag", "")})
                done.append("undeleted it")
            stale = [field for field, value in wanted.items() if (
                sorted(role.get(field) or []) if field == "includedPermissions"
                else role.get(field)) != value]
            if stale:
                try:
                    _iam_call(http, "PATCH", root + name, params={"updateMask": ",".join(stale)},
                              json={**wanted, "etag": role.get("etag", "")})
                except exceptions.Conflict:  # changed since the read: read it again
                    continue
                done.append(f"set its {', '.join(stale)} back")
            if done:
                print(f"Custom role {name}: {' and '.join(done)}.")
            return name
    except exceptions.Forbidden as err:
        raise ConfigError(
            f"{session.settings.identity} may not manage the custom role {name} ({err.message}); "
            "ask for roles/iam.roleAdmin on the project, or grant a role of your organisation's "
            f"that holds only {' and '.join(ATTENDEE_PERMISSIONS)}") from None
    except exceptions.BadRequest as err:  # e.g. an id deleted more than 7 days ago
        raise ConfigError(
            f"the custom role {name} cannot be made now: {err.message} (IAM keeps a deleted "
            "role's id for up to 37 days); grant a role of your organisation's that holds only "
            f"{' and '.join(ATTENDEE_PERMISSIONS)}") from None
    raise ConfigError(f"the custom role {name} changed under each of {IAM_ATTEMPTS} attempts; "
                      "run again")


def grant(session: Session, attendees: Sequence[str], *, role: str = ATTENDEE_ROLE) -> list[str]:
    """Lets `attendees` (e-mails, `group:` members) call the workshop's endpoint: `role` on
    the endpoint alone (by default the project's custom role that only calls it, made when
    missing), and read access to the workshop's card (its folder of the bucket only, by an IAM
    condition). Nothing on the project; returns the members granted now."""
    members = attendee_members(attendees)
    checks.text("role", role)
    if role != ATTENDEE_ROLE and not role.startswith(("roles/", "projects/", "organizations/")):
        raise ConfigError(f"role {role!r} is not an IAM role name: {ATTENDEE_ROLE!r} (the "
                          "default: the project's custom role that only calls the endpoint), "
                          "roles/..., or a custom role's projects/P/roles/R")
    card = read_card(session, _workshop_id(session))
    if role == ATTENDEE_ROLE:
        role = attendee_role(session)
    elif role.startswith("roles/"):
        print(f"Note: {role} is a predefined role; it may allow more than calling the endpoint "
              "(roles/aiplatform.user also undeploys and deletes it). The default role holds "
              f"only {' and '.join(ATTENDEE_PERMISSIONS)}.")
    client = _endpoint_iam_client(session)
    resource = card["endpoint"]

    def add_to_endpoint(policy: Any) -> list[str]:
        binding = next((b for b in policy.bindings if b.role == role
                        and not b.HasField("condition")), None)
        if binding is None:
            binding = policy.bindings.add(role=role)
        new = [m for m in members if m not in binding.members]
        binding.members.extend(new)
        policy.version = IAM_POLICY_VERSION
        return new

    granted = _read_modify_write(
        lambda: client.get_iam_policy(request={
            "resource": resource, "options": {"requested_policy_version": IAM_POLICY_VERSION}}),
        lambda policy: client.set_iam_policy(request={"resource": resource, "policy": policy}),
        add_to_endpoint, f"endpoint {resource}")
    _grant_card_reading(session, members)
    print(f"Granted {role} on endpoint {resource.split('/')[-1]} to {len(granted)} new "
          f"member(s) ({len(members) - len(granted)} had it), and {CARD_READER_ROLE} on "
          f"gs://{session.settings.bucket_name}/{WORKSHOP_FILES}/{card['workshop']}/ only.")
    return granted


def _card_condition(session: Session) -> dict[str, str]:
    folder = f"{WORKSHOP_FILES}/{_workshop_id(session)}/"
    return {"title": f"nbh workshop {_workshop_id(session)} card",
            "expression": (f'resource.name.startsWith("projects/_/buckets/'
                           f'{session.settings.bucket_name}/objects/{folder}")')}


def _grant_card_reading(session: Session, members: list[str]) -> None:
    """Attendees read the card, and nothing else of the bucket (a conditional binding: it
    needs the bucket's uniform bucket-level access)."""
    bucket = session.storage_client().bucket(session.settings.bucket_name)
    condition = _card_condition(session)

    def add(policy: Any) -> list[str]:
        binding = next((b for b in policy.bindings if b["role"] == CARD_READER_ROLE
                        and b.get("condition") == condition), None)
        if binding is None:
            binding = {"role": CARD_READER_ROLE, "members": set(), "condition": condition}
            policy.bindings.append(binding)
        new = [m for m in members if m not in binding["members"]]
        binding["members"] = set(binding["members"]) | set(new)
        policy.version = IAM_POLICY_VERSION
        return new

    _read_modify_write(lambda: bucket.get_iam_policy(requested_policy_version=IAM_POLICY_VERSION),
                       bucket.set_iam_policy, add, f"bucket {session.settings.bucket_name}")


def _revoke_card_reading(session: Session) -> None:
    bucket = session.storage_client().bucket(session.settings.bucket_name)
    condition = _card_condition(session)

    def remove(policy: Any) -> list[str]:
        before = len(policy.bindings)
        policy.bindings[:] = [b for b in policy.bindings if not (
            b["role"] == CARD_READER_ROLE and b.get("condition") == condition)]
        policy.version = IAM_POLICY_VERSION
        return ["removed"] if len(policy.bindings) != before else []

    _read_modify_write(lambda: bucket.get_iam_policy(requested_policy_version=IAM_POLICY_VERSION),
                       bucket.set_iam_policy, remove, f"bucket {session.settings.bucket_name}")


def _revoke_endpoint_grants(session: Session, endpoint: str) -> int:
    """Empties the workshop endpoint's own IAM policy (every binding on it is a grant to the
    room); returns how many members lost access. An endpoint already gone has none."""
    from google.api_core import exceptions

    client = _endpoint_iam_client(session)
    removed: list[str] = []

    def clear(policy: Any) -> list[str]:
        members = [m for b in policy.bindings for m in b.members]
        del policy.bindings[:]
        policy.version = IAM_POLICY_VERSION
        return members

    try:
        removed = _read_modify_write(
            lambda: client.get_iam_policy(request={
                "resource": endpoint,
                "options": {"requested_policy_version": IAM_POLICY_VERSION}}),
            lambda policy: client.set_iam_policy(request={"resource": endpoint,
                                                          "policy": policy}),
            clear, f"endpoint {endpoint}")
    except exceptions.NotFound:
        return 0
    return len(removed)


def down(session: Session) -> Inventory:
    """Tears the workshop down: first the attendees' grants on its endpoint (so a teardown that
    stops half-way leaves nobody calling), then the endpoint and model, the run's files, the
    card, and the attendees' reading of it. Only the organiser named on the card may; without
    a card (a half-made workshop) the run's labels still find everything.

    The project's custom role nbhWorkshopAttendee stays: it grants nothing unless bound, other
    workshops of the project may be using it (a deleted role's bindings stop working at once),
    and a deleted role's id is blocked for up to 37 days."""
    from google.api_core import exceptions

    wid = _workshop_id(session)
    try:
        card: dict[str, Any] | None = read_card(session, wid)
    except ConfigError:
        card = None
    if card is not None and card.get("organiser") != session.settings.identity:
        raise ConfigError(
            f"workshop {wid} is {card.get('organiser')}'s: only its organiser tears it down "
            f"(you are {session.settings.identity}); attendees just stop using it")
    revoked = _revoke_endpoint_grants(session, card["endpoint"]) if card else 0
    removed = cleanup(session, dry_run=False)
    try:
        _card_blob(session, wid).delete()
    except exceptions.NotFound:
        pass
    _revoke_card_reading(session)
    print(f"Workshop {wid} is down: {revoked} attendee grant(s) removed from its endpoint, "
          f"{len(removed)} resource(s) deleted, card and card access removed. The project's "
          f"custom role {ATTENDEE_ROLE_ID} is kept for the next workshop (it grants nothing "
          "unless bound; deleting it would cut off any other workshop using it).")
    return removed


def join(session: Session, workshop_id: str) -> Deployment:
    """An attendee's connection to the workshop's shared endpoint, from its card: nothing is
    deployed and nothing of the attendee's is billed."""
    from google.api_core import exceptions
    from google.cloud import aiplatform

    card = read_card(session, workshop_id)
    try:
        endpoint = aiplatform.Endpoint(card["endpoint"])
        served = list(endpoint.gca_resource.deployed_models)
    except (exceptions.Forbidden, exceptions.PermissionDenied):  # REST's 403, gRPC's
        raise ConfigError(
            f"{session.settings.identity} may not call workshop {card['workshop']}'s "
            f"endpoint: ask its organiser ({card.get('organiser')}) to grant you "
            "(`python -m nbhelpers workshop grant`)") from None
    except exceptions.NotFound:
        raise ConfigError(f"workshop {card['workshop']} is over: its endpoint is gone"
                          ) from None
    if not served:
        raise DeploymentError(f"workshop {card['workshop']}'s endpoint serves no model now; "
                              f"ask its organiser ({card.get('organiser')})")
    if settings.is_expired({settings.LABEL_EXPIRES: str(card.get("expires_utc", ""))}):
        print(f"Note: workshop {card['workshop']} ended at {card['expires_utc']} UTC; its "
              "endpoint may be deleted at any moment.")
    spec = catalog.get_model(card["model"])
    chosen = served[0]
    print(f"Joined workshop {card['workshop']}: {spec.name} on the shared endpoint "
          f"{endpoint.name}, until {card.get('expires_utc') or '?'} UTC (nothing deployed "
          "by you).")
    return Deployment(key=spec.slug, model_name=spec.name, endpoint_name=endpoint.resource_name,
                      model_resource=chosen.model.split("@")[0], deployed_model_id=chosen.id,
                      machine_type=chosen.dedicated_resources.machine_spec.machine_type,
                      dedicated_endpoint=bool(endpoint.gca_resource.dedicated_endpoint_enabled))
