"""Where Google's behaviour is easy to get wrong on both sides (issue #16): project IAM policy
versions and etags, serving quota in use, buckets of more than 256 objects, and the contract
table that says where each modelled behaviour comes from. Real SDKs over HTTP, as elsewhere."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import resourcemanager_v3

import nbhelpers
from nbhelpers import prepare

BOB_ROLE = "roles/aiplatform.user"
BOB_CONDITION = {"title": "until 2027", "description": "Bob's temporary access",
                 "expression": "request.time < timestamp('2027-01-01T00:00:00Z')"}


def _projects(session):
    return session.rest_client(resourcemanager_v3.ProjectsClient)


def _policy(session, version=None):
    request = {"resource": f"projects/{session.settings.project}"}
    if version is not None:
        request["options"] = {"requested_policy_version": version}
    return _projects(session).get_iam_policy(request=request)


def _bob_binding():
    return {"role": BOB_ROLE, "members": ["user:bob@example.com"], "condition": BOB_CONDITION}


def _add_bobs_condition(session):
    """Bob, another administrator, adds a conditional binding with a version-3 write."""
    policy = _policy(session, version=3)
    policy.bindings.add(**_bob_binding())
    policy.version = 3
    _projects(session).set_iam_policy(request={"resource": f"projects/{session.settings.project}",
                                               "policy": policy})


def test_version_1_read_hides_conditions_and_unsafe_writes_are_refused(session):
    _add_bobs_condition(session)
    plain = _policy(session)  # no requestedPolicyVersion: what the client used to do
    assert plain.version == 1
    [hidden] = plain.bindings
    assert hidden.role.startswith(BOB_ROLE + "_withcond_") and not hidden.HasField("condition")
    full = _policy(session, version=3)
    assert full.version == 3 and full.bindings[0].condition.expression == \
        BOB_CONDITION["expression"]

    resource = f"projects/{session.settings.project}"
    plain.bindings.add(role="roles/storage.admin", members=["serviceAccount:x@example.com"])
    with pytest.raises(exceptions.BadRequest, match="Policy version 1 cannot be used"):
        _projects(session).set_iam_policy(request={"resource": resource, "policy": plain})
    stale = _policy(session, version=3)
    _add_bobs_condition(session)  # the policy changes after `stale` was read
    stale.bindings.add(role="roles/storage.admin", members=["serviceAccount:x@example.com"])
    with pytest.raises(exceptions.Conflict, match="concurrent policy changes"):
        _projects(session).set_iam_policy(request={"resource": resource, "policy": stale})
    after = _policy(session, version=3)  # Bob's two writes, nothing of the refused ones
    assert [(b.role, b.condition.title) for b in after.bindings] == [(BOB_ROLE, "until 2027")] * 2


def test_setup_grants_keep_others_conditions_and_retry_a_concurrent_change(session, emulator):
    _add_bobs_condition(session)
    carol = {"role": "roles/viewer", "members": ["user:carol@example.com"],
             "condition": {**BOB_CONDITION, "title": "carol"}}
    # Carol writes between setup's read and its write: the first write is ABORTED, the retry
    # reads her binding and keeps it.
    emulator.vertex.setup_apis.interleave_write(
        lambda apis, project: apis.write_as_someone_else(project, carol))
    report = nbhelpers.prepare_project(session)
    member = f"serviceAccount:{report.service_account}"
    policy = _policy(session, version=3)
    by_role = {(b.role, b.condition.title): list(b.members) for b in policy.bindings}
    assert by_role[(BOB_ROLE, "until 2027")] == ["user:bob@example.com"]
    assert by_role[("roles/viewer", "carol")] == ["user:carol@example.com"]
    for role in prepare.PROJECT_ROLES:
        assert by_role[(role, "")] == [member]  # an unconditional binding of its own
    assert [g for g in report.granted if g.startswith("roles/aiplatform.user on projects/")]
    again = nbhelpers.prepare_project(session)
    assert again.granted == []
    assert _policy(session, version=3).bindings == policy.bindings


def test_quota_in_use_refuses_a_second_deployment_before_anything_exists(session, env,
                                                                          emulator):
    from google.cloud import aiplatform

    from nbhelpers.errors import ConfigError
    from nbhelpers.quota import quota_id, serving_quota

    env.setenv("HF_TOKEN", "hf_testTokenThatMustNeverLeak123")
    plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", family="llama3.1",
                                     ask_for_token=False)
    hardware = plan.hardware
    qid = quota_id(hardware.accelerator_type)
    emulator.vertex.quotas.set_limit(qid, "us-central1", hardware.accelerator_count)
    before = serving_quota(session, hardware)
    assert (before.limit, before.in_use, before.needed) == (hardware.accelerator_count, 0,
                                                            hardware.accelerator_count)
    nbhelpers.deploy(session, plan)  # fits: nothing in use yet
    after = serving_quota(session, hardware)
    assert after.in_use == hardware.accelerator_count and not after.enough
    endpoints = {e.resource_name for e in aiplatform.Endpoint.list()}
    models = {m.resource_name for m in aiplatform.Model.list()}
    assert len(endpoints) == len(models) == 1

    second = nbhelpers.connect(project="test-project", run_id="run-b", quiet=True)
    with pytest.raises(ConfigError) as refused:
        nbhelpers.deploy(second, plan)
    message = str(refused.value)
    n = hardware.accelerator_count
    assert f"limit {n}, in use {n}, this deployment needs {n}" in message
    assert "another region" in message and "iam-admin/quotas?project=test-project" in message
    # refused before anything was created: the emulator holds only the first run's resources
    assert {e.resource_name for e in aiplatform.Endpoint.list()} == endpoints
    assert {m.resource_name for m in aiplatform.Model.list()} == models
    # elsewhere the same GPUs are free: usage counts the region's deployments only
    europe = nbhelpers.connect(project="test-project", region="europe-west4", run_id="run-eu",
                               quiet=True)
    assert serving_quota(europe, hardware).in_use == 0



def test_quota_usage_that_cannot_be_read_is_said_and_the_limit_alone_decides(session):
    from types import SimpleNamespace

    from nbhelpers.quota import QuotaCheck, gpus_in_use

    closed = SimpleNamespace(settings=session.settings, credentials=session.credentials,
                             client_options=lambda: {"api_endpoint": "http://127.0.0.1:9"})
    used, why = gpus_in_use(closed, quota_metric="aiplatform.googleapis.com/"
                            "custom_model_serving_nvidia_l4_gpus", region="us-central1")
    assert used is None and why.startswith("Cloud Monitoring unreachable")
    check = QuotaCheck(quota_id="CustomModelServingL4GPUsPerProjectPerRegion",
                       region="us-central1", limit=1, needed=1, in_use=used, usage_note=why)
    assert check.enough and "in use unknown (Cloud Monitoring unreachable" in check.describe()
    assert not QuotaCheck(quota_id=check.quota_id, region="us-central1", limit=1, needed=2,
                          in_use=None).enough

def test_run_files_beyond_256_are_deleted_in_batches(session, emulator):
    from nbhelpers.emulator.storage import MAX_BATCH_CALLS, batch_calls

    nbhelpers.prepare_project(session)
    client = session.storage_client()
    bucket = client.bucket(session.settings.bucket_name)
    ours = session.settings.files_prefix()
    names = [f"{ours}staging/part-{i:04d}.txt" for i in range(257)]  # one over the SDK's 256
    others = "nbhelpers-runs/someone/else/keep.txt"
    seed = bucket.blob(others)
    seed.upload_from_string(b"theirs")
    for start in range(0, len(names), 100):  # server-side copies, 100 per batch: fast
        with client.batch():
            for name in names[start:start + 100]:
                bucket.copy_blob(seed, bucket, name)

    # The listing is paged as Google pages it, so the SDK's own check sees every object:
    total = len(list(client.list_blobs(bucket)))  # one page of up to 1,000
    assert total >= len(names) + 1
    pages = client.list_blobs(bucket, page_size=120).pages
    sizes = [len(list(page)) for page in pages]
    assert sizes[:2] == [120, 120] and sum(sizes) == total and 0 < sizes[-1] <= 120
    with pytest.raises(ValueError, match="more than 256 objects"):
        bucket.delete(force=True)  # the SDK refuses, client-side, before any delete
    with pytest.raises(exceptions.Conflict, match="The bucket you tried to delete is not empty"):
        bucket.delete()  # and the server refuses a bucket that still holds objects

    with pytest.raises(exceptions.BadRequest, match="at most 100 calls"):
        with client.batch():
            for name in names[:MAX_BATCH_CALLS + 1]:
                bucket.blob(name).delete()

    before = len(batch_calls(emulator.storage))
    removed = len(nbhelpers.cleanup(session, dry_run=False).files)  # the run's state file too
    assert removed >= len(names)
    left = {b.name for b in client.list_blobs(bucket)}
    assert others in left and not left & set(names)
    batches = [100] * (removed // 100) + ([removed % 100] if removed % 100 else [])
    assert batch_calls(emulator.storage)[before:] == batches


def _contract_rows():
    """The contract table's rows as lists of cells (the header and rule rows left out)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "google-contract.md").read_text()
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ")]
    assert rows[0][:2] == ["id", "area"], "the table's header row comes first"
    return rows[1:], (root / "README.md").read_text()


def test_every_contract_row_has_a_source_or_says_assumption():
    import re

    rows, readme = _contract_rows()
    assert len(rows) >= 60
    problems = []
    for number, row in enumerate(rows, start=1):
        if len(row) != 6:
            problems.append(f"row {number}: {len(row)} cells, expected 6: {row[:2]}")
            continue
        row_id, _area, behaviour, where, source, read = row
        if row_id != f"C{number}":
            problems.append(f"row {number}: id {row_id!r}, expected C{number}")
        if not behaviour or not where:
            problems.append(f"{row_id}: behaviour and where may not be empty")
        if source.lower().startswith("assumption"):
            if read != "-":
                problems.append(f"{row_id}: an assumption has no date read, got {read!r}")
        elif not re.search(r"https://|\.\./shared/docs/|[\w/]+\.(py|json|proto)\b", source):
            problems.append(f"{row_id}: the source names no page, file or shared doc: "
                            f"{source[:60]!r}")
        elif not re.fullmatch(r"(shared docs )?20\d\d-\d\d-\d\d", read):
            problems.append(f"{row_id}: the date read must be YYYY-MM-DD, got {read!r}")
        elif "../shared/docs/" in source and "shared docs" not in read and \
                "https://" not in source and ".py" not in source:
            problems.append(f"{row_id}: a fact from ../shared/docs says so in its date")
    assert problems == []
    assumptions = sum(row[4].lower().startswith("assumption") for row in rows)
    sourced = len(rows) - assumptions
    sentence = re.search(r"(\d+) of its (\d+) rows have a source.*?and (\d+) are\s+assumptions",
                         readme, flags=re.DOTALL)
    assert sentence, "README states the contract's counts"
    assert tuple(map(int, sentence.groups())) == (sourced, len(rows), assumptions)
