import getpass
import logging
import time

import pytest

from nbhelpers import settings, tokens, validate
from nbhelpers.errors import ConfigError

BOB = "bob@example.com"
BOB_LABEL = validate.label_value(BOB)


def _as(identity):
    """An identify() for settings.resolve: who the credentials are, whatever the backend."""
    return lambda backend: identity


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("NBHELPERS_BACKEND", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_REGION",
                 "NBHELPERS_RUN_ID", "NBHELPERS_OWNER", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NBHELPERS_STATE_DIR", str(tmp_path))
    return monkeypatch


def test_environment_overrides_backend(clean_env):
    clean_env.setenv("NBHELPERS_BACKEND", "emulator")
    assert settings.resolve_backend("vertex", "p") == "emulator"
    clean_env.setenv("NBHELPERS_BACKEND", "cloud")
    with pytest.raises(ConfigError, match="unknown backend 'cloud'; choose one of 'auto'"):
        settings.resolve_backend()


def test_auto_without_project_is_emulator(clean_env):
    assert settings.resolve_backend("auto", "") == "emulator"


def test_resolve_defaults_and_labels(clean_env):
    clean_env.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    clean_env.setenv("NBHELPERS_BACKEND", "emulator")
    s = settings.resolve(run_id="run-7", owner="Bob@Example.com", identify=_as(BOB))
    assert (s.project, s.region, s.backend) == ("my-project", "us-central1", "emulator")
    assert s.bucket_uri == "gs://my-project-llama-us-central1"
    assert (s.identity, s.owner) == (BOB, BOB_LABEL)
    labels = s.labels(**{"nbh-model": "llama-3-1-8b"})
    expires = labels.pop("nbh-expires")
    assert labels == {"nbh-suite": "vertex-llama", "nbh-run": "run-7",
                      "nbh-owner": BOB_LABEL, "nbh-model": "llama-3-1-8b"}
    assert not settings.is_expired({"nbh-expires": expires})
    assert settings.is_expired({"nbh-expires": expires}, now=time.time() + 25 * 3600)
    assert s.label_filter() == ("labels.nbh-suite=vertex-llama AND "
                                f"labels.nbh-owner={BOB_LABEL} AND labels.nbh-run=run-7")


def test_owner_is_the_identity_never_the_login_name(clean_env):
    clean_env.setenv("NBHELPERS_BACKEND", "emulator")
    clean_env.setattr(getpass, "getuser", lambda: "root")
    s = settings.resolve(run_id="run-7", identify=_as(BOB))
    assert (s.identity, s.owner) == (BOB, BOB_LABEL)
    clean_env.setenv("NBHELPERS_OWNER", "root")
    with pytest.raises(ConfigError, match="owner 'root' is not who the credentials are "
                                          "\\('bob@example.com'\\)"):
        settings.resolve(run_id="run-7", identify=_as(BOB))
    with pytest.raises(ConfigError, match="no Google identity"):
        settings.resolve(run_id="run-7", identify=_as(""))


def test_resolve_rejects_bad_values(clean_env):
    clean_env.setenv("NBHELPERS_BACKEND", "emulator")
    with pytest.raises(ConfigError, match="unknown region"):
        settings.resolve(region="mars-1", identify=_as(BOB))
    with pytest.raises(ConfigError, match="malformed Cloud Storage URI"):
        settings.resolve(bucket_uri="my-bucket", identify=_as(BOB))
    with pytest.raises(ConfigError, match="invalid run id 'Run 7'.*lowercase letters"):
        settings.resolve(run_id="Run 7", identify=_as(BOB))
    clean_env.setenv("NBHELPERS_BACKEND", "vertex")
    with pytest.raises(ConfigError, match="no project"):
        settings.resolve(identify=_as(BOB))


def test_token_from_environment_is_redacted_in_logs(clean_env, caplog):
    clean_env.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    assert tokens.hf_token(required=True) == "hf_abcdefghijklmnop"
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.sdk").info("sending %s", "hf_abcdefghijklmnop")
    assert "hf_abcdefghijklmnop" not in caplog.text and "<hidden>" in caplog.text
    assert tokens.redact("token hf_zzzzzzzzzz end") == "token hf_<hidden> end"


def test_missing_token_for_gated_model_says_what_to_do(clean_env):
    with pytest.raises(ConfigError, match="gated on Hugging Face.*HF_TOKEN.*weights_uri"):
        tokens.hf_token(required=True, model_name="Llama-3.1-8B", ask=True)
    assert tokens.hf_token(required=False) is None


def test_expiry_follows_the_ttl(clean_env):
    clean_env.setenv("NBHELPERS_TTL_HOURS", "2")
    label = settings.expiry_label(now=0)
    assert label == "19700101-0200"
    assert settings.is_expired({"nbh-expires": label}, now=2 * 3600)
    assert not settings.is_expired({"nbh-expires": label}, now=2 * 3600 - 60)
    assert not settings.is_expired({}) and not settings.is_expired({"nbh-expires": "soon"})
