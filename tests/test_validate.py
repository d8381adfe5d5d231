import hashlib

import pytest

from nbhelpers import validate
from nbhelpers.errors import ConfigError


@pytest.mark.parametrize("name", ["my-bucket", "a.b.c", "abc", "x_y-z1"])
def test_valid_bucket_names(name):
    assert validate.bucket_name(name) == name


@pytest.mark.parametrize("name, reason", [
    ("ab", "3-63"), ("My-Bucket", "lowercase"), ("-abc", "start and end"),
    ("googlebucket", "goog"), ("my-google-x", "google"), ("192.168.1.1", "IP address"),
    ("a" * 64, "3-63"),
])
def test_invalid_bucket_names_say_why(name, reason):
    with pytest.raises(ConfigError, match=reason):
        validate.bucket_name(name)


def test_gs_uri_split_and_malformed():
    assert validate.gs_uri("gs://bucket-1/models/llama") == ("bucket-1", "models/llama")
    for bad in ("bucket-1", "gs:/bucket", "s3://b", "gs://"):
        with pytest.raises(ConfigError, match="gs://"):
            validate.gs_uri(bad)
    with pytest.raises(ConfigError, match="without a path"):
        validate.gs_uri("gs://bucket-1/x", bucket_only=True)


def test_region_lists_close_choices():
    assert validate.region("europe-west4") == "europe-west4"
    with pytest.raises(ConfigError, match="unknown region 'us-central9'.*'us-central1'"):
        validate.region("us-central9")


def test_project_id_rules():
    assert validate.project_id("my-project-1") == "my-project-1"
    for bad in ("abc", "1project", "project-", "My-Project", "a" * 31):
        with pytest.raises(ConfigError, match="project id"):
            validate.project_id(bad)


def test_label_folding_and_checks():
    digest = hashlib.sha256(b"Alice.Smith@Example.com").hexdigest()[:8]
    assert validate.label_value("Alice.Smith@Example.com") == f"alice-smith-example-com-{digest}"
    assert validate.label_value("run-7_b") == "run-7_b"  # label-safe: unchanged
    long = validate.label_value("x" * 100)
    assert len(long) == 63 and long != validate.label_value("x" * 101)
    with pytest.raises(ConfigError, match="label key"):
        validate.labels({"Bad": "x"})
    with pytest.raises(ConfigError, match="label value"):
        validate.labels({"ok": "Not OK"})
