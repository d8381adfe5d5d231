"""The owner is the Google identity the suite runs as: two people never label, find or clean up
each other's resources, whatever their login names and however their names fold. Against the
emulator over HTTP with the real SDKs; its token-info endpoint says who each client is."""

from __future__ import annotations

import getpass
import json
import re
import urllib.error
import urllib.request

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import aiplatform
from hypothesis import assume, given
from hypothesis import strategies as st

import nbhelpers
from nbhelpers import identity, openai_chat, validate
from nbhelpers.errors import ConfigError
from nbhelpers.state import RunState

ZOE_DIAERESIS, ZOE_ACUTE = "zoë@example.com", "zoé@example.com"
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def _connect_as(env, who: str, run_id: str = "run-a", **kwargs):
    env.setenv("NBHELPERS_EMULATOR_IDENTITY", who)
    return nbhelpers.connect(project="test-project", run_id=run_id, quiet=True, **kwargs)


def _create_labelled(session, name: str) -> None:
    """An endpoint and a model labelled as `session`'s, as deploy() labels them."""
    labels = session.settings.labels()
    aiplatform.Endpoint.create(display_name=name, labels=labels)
    aiplatform.Model.upload(display_name=name, labels=labels,
                            serving_container_image_uri="us-docker.pkg.dev/x/vllm:tag")


def _names() -> tuple[set[str], set[str]]:
    return ({e.display_name for e in aiplatform.Endpoint.list()},
            {m.display_name for m in aiplatform.Model.list()})


def _token_info(emulator, token: str) -> tuple[int, dict]:
    url = f"{emulator.url}/tokeninfo?access_token={token}"
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# --- the lookup ---------------------------------------------------------------------------
def test_emulator_answers_token_info_in_googles_shape(env, emulator):
    session = _connect_as(env, ZOE_DIAERESIS)
    status, info = _token_info(emulator, session.credentials.token)
    assert status == 200
    assert info["email"] == ZOE_DIAERESIS and info["email_verified"] == "true"
    assert "userinfo.email" in info["scope"] and int(info["expires_in"]) > 0
    assert info["sub"].isdigit()
    status, _ = _token_info(emulator, "not-a-token")
    assert status == 400


def test_owner_is_the_identity_and_its_label_is_safe(env):
    session = _connect_as(env, "Alice.Smith@Example.com")
    assert session.settings.identity == "alice.smith@example.com"
    assert session.settings.owner == validate.label_value("alice.smith@example.com")
    assert session.settings.owner.startswith("alice-smith-example-com-")
    assert session.state.get("identity") == "alice.smith@example.com"
    assert session.state.get("owner") == session.settings.owner


def test_service_account_credentials_are_their_own_email():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    from google.oauth2 import service_account

    credentials = service_account.Credentials.from_service_account_info({
        "type": "service_account", "client_email": "Runner@My-Project.iam.gserviceaccount.com",
        "private_key": pem, "token_uri": "https://oauth2.googleapis.com/token",
        "project_id": "my-project"})
    assert identity.google_identity(credentials) == "runner@my-project.iam.gserviceaccount.com"


def test_compute_engine_default_account_is_read_after_a_refresh():
    class MetadataCredentials:  # what google.auth.compute_engine.Credentials does on refresh
        service_account_email = "default"
        token, valid = None, False

        def refresh(self, request):
            self.service_account_email = "123-compute@developer.gserviceaccount.com"
            self.token, self.valid = "ya29.secret", True

    assert (identity.google_identity(MetadataCredentials())
            == "123-compute@developer.gserviceaccount.com")


def test_no_identity_says_how_to_sign_in(env, emulator):
    with pytest.raises(ConfigError, match="name no e-mail address.*gcloud auth "
                                          "application-default login.*userinfo.email"):
        _connect_as(env, "")  # a token without the e-mail scope
    assert emulator.vertex.state.data["endpoints"] == {}
    assert not RunState("run-a").path.exists()  # connect stopped before it


def test_a_refused_token_never_appears_in_the_error(env, emulator):
    session = _connect_as(env, "ana@example.com")
    token = session.credentials.token
    urllib.request.urlopen(urllib.request.Request(
        f"{emulator.url}/emulator/expired-tokens", json.dumps({"token": token}).encode(),
        {"Content-Type": "application/json"})).close()
    with pytest.raises(ConfigError, match="refused the access token") as caught:
        identity.google_identity(session.credentials, tokeninfo_url=emulator.url + "/tokeninfo")
    assert token not in str(caught.value) and "access_token=" not in str(caught.value)


def test_connect_prints_the_identity_never_the_token(env, capsys):
    env.setenv("NBHELPERS_EMULATOR_IDENTITY", "ana@example.com")
    session = nbhelpers.connect(project="test-project", run_id="run-a")
    printed = capsys.readouterr().out
    assert "owner=ana@example.com" in printed and session.credentials.token not in printed


def test_openai_token_provider_sends_the_rehearsal_token(env):
    session = _connect_as(env, "ana@example.com")
    assert openai_chat.token_provider(session.credentials)() == session.credentials.token


# --- nobody acts as someone else ----------------------------------------------------------
def test_an_owner_other_than_the_identity_is_refused_before_any_cloud_call(env):
    with pytest.raises(ConfigError, match=r"owner 'bob@example.com' is not who the credentials "
                                          r"are \('ana@example.com'\).*NBHELPERS_OWNER"):
        _connect_as(env, "ana@example.com", owner="bob@example.com")
    env.setenv("NBHELPERS_OWNER", "root")
    with pytest.raises(ConfigError, match="owner 'root' is not who the credentials are"):
        _connect_as(env, "ana@example.com")
    assert not RunState("run-a").path.exists()  # connect stopped before it
    env.setenv("NBHELPERS_OWNER", "ANA@Example.com")  # the identity, in another case: fine
    assert _connect_as(env, "ana@example.com").settings.identity == "ana@example.com"
    assert aiplatform.Endpoint.list() == [] and aiplatform.Model.list() == []


def test_owners_whose_names_fold_alike_clean_up_only_their_own(env):
    zoe1 = _connect_as(env, ZOE_DIAERESIS)
    _create_labelled(zoe1, "zoe-diaeresis")
    zoe2 = _connect_as(env, ZOE_ACUTE)
    _create_labelled(zoe2, "zoe-acute")
    assert zoe1.settings.owner != zoe2.settings.owner
    assert re.sub(r"[^a-z0-9_-]+", "-", ZOE_DIAERESIS) == re.sub(r"[^a-z0-9_-]+", "-",
                                                                 ZOE_ACUTE)  # the old rule
    zoe1 = _connect_as(env, ZOE_DIAERESIS)
    removed = nbhelpers.cleanup(zoe1, dry_run=False, whole_owner=True)
    assert len(removed.endpoints) == 1 and len(removed.models) == 1
    assert _names() == ({"zoe-acute"}, {"zoe-acute"})
    zoe2 = _connect_as(env, ZOE_ACUTE)
    nbhelpers.cleanup(zoe2, dry_run=False, whole_owner=True)
    assert _names() == (set(), set())


def test_two_colab_users_both_called_root_keep_apart(env):
    env.setattr(getpass, "getuser", lambda: "root")
    for name in ("USER", "LOGNAME", "USERNAME"):
        env.setenv(name, "root")
    for who in ("ana@example.com", "ben@example.com"):
        for run in ("run-1", "run-2"):
            _create_labelled(_connect_as(env, who, run_id=run), f"{who[:3]}-{run}")
    ana = _connect_as(env, "ana@example.com", run_id="run-1")
    ben = _connect_as(env, "ben@example.com", run_id="run-1")
    assert "root" not in (ana.settings.owner, ben.settings.owner)
    assert len(nbhelpers.find_resources(ana, whole_owner=True)) == 4
    ana = _connect_as(env, "ana@example.com", run_id="run-1")
    nbhelpers.cleanup(ana, dry_run=False, whole_owner=True)
    expected = {"ben-run-1", "ben-run-2"}
    assert _names() == (expected, expected)
    assert len(nbhelpers.find_resources(ana, whole_owner=True)) == 0
    assert len(nbhelpers.find_resources(ben, whole_owner=True)) == 4


# --- run ids and label values -------------------------------------------------------------
def test_run_ids_that_are_not_label_safe_are_refused(env):
    for bad in ("Run.7", "Run-7", "-run", "r" * 64, "run 7", ""):
        with pytest.raises(ConfigError, match="invalid run id.*lowercase letters, digits"):
            validate.run_id(bad)
    with pytest.raises(ConfigError, match="invalid run id 'Run.7'"):
        _connect_as(env, "ana@example.com", run_id="Run.7")


def test_run_7_and_run_underscore_7_stay_distinct(env):
    dash = _connect_as(env, "ana@example.com", run_id="run-7")
    _create_labelled(dash, "dash")
    underscore = _connect_as(env, "ana@example.com", run_id="run_7")
    _create_labelled(underscore, "underscore")
    assert dash.settings.labels()["nbh-run"] == "run-7"
    assert underscore.settings.labels()["nbh-run"] == "run_7"
    nbhelpers.cleanup(_connect_as(env, "ana@example.com", run_id="run-7"), dry_run=False)
    assert _names() == ({"underscore"}, {"underscore"})


SAMPLE = [ZOE_DIAERESIS, ZOE_ACUTE, "zo", "Zo", "Run.7", "run.7", "run-7", "run_7", "run 7",
          "x" * 63, "x" * 64, "x" * 100, "x" * 101, "a@b.c", "A@B.C", "a-b-c", "", "é", "è",
          "y" * 70 + "1", "y" * 70 + "2", "llama-3-1-8b-instruct", "Llama-3.1-8B-Instruct"]


def test_label_values_of_a_sample_fit_and_never_collide():
    values = [validate.label_value(text) for text in SAMPLE]
    assert all(LABEL_VALUE.match(v) for v in values)
    assert len(set(values)) == len(SAMPLE)
    assert validate.label_value("run-7") == "run-7"  # already label-safe: unchanged


@given(st.text(max_size=200), st.text(max_size=200))
def test_label_values_fit_and_distinct_originals_never_share_one(first, second):
    assume(first != second)
    one, other = validate.label_value(first), validate.label_value(second)
    assert LABEL_VALUE.match(one) and LABEL_VALUE.match(other)
    assert one != other
    if LABEL_VALUE.match(first):
        assert one == first
