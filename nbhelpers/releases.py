"""The Model Garden vLLM serving container's images: each dated tag and the vLLM release inside
it, and the port and routes the image serves. A fact table: imports nothing of ours but errors."""

from __future__ import annotations

from nbhelpers.errors import ConfigError, choices

IMAGE_REPOSITORY = (
    "us-docker.pkg.dev/vertex-ai/vertex-vision-model-garden-dockers/pytorch-vllm-serve"
)

# Dated x86 tags and the vLLM release inside them (Google's container release notes).
# 20241001_0916_RC00 is not in those notes; the Llama 3.2 notebooks of that month used it and
# vLLM 0.6.2 was the first release with Llama 3.2 Vision, so that is what it is listed as.
RELEASES: dict[str, str] = {
    "20241001_0916_RC00": "0.6.2",
    "20241016_0916_RC00_maas": "0.6.2",
    "20241112_0916_RC00_maas": "0.6.2",
    "20241202_0916_RC00_maas": "0.6.4.post1",
    "20250114_0916_RC00_maas": "0.6.4.post1",
    "20250304_0916_RC01": "0.7.2",
    "20250321_0916_RC01": "0.8.1",
    "20250401_0916_RC01": "0.8.1",
    "20250417_0916_RC01": "0.8.4",
    "20250429_0916_RC01": "0.8.4",
    "20250506_0916_RC01": "0.8.5.post1",
    "20250601_0916_RC01": "0.9.0",
    "20250611_0916_RC01": "0.9.1",
    "20250710_0916_RC01": "0.9.2",
}
DEFAULT_TAG = "20250710_0916_RC01"
PORT = 8080
PREDICT_ROUTE = "/generate"
HEALTH_ROUTE = "/ping"
SHARED_MEMORY_MB = 16 * 1024
DEPLOYMENT_TIMEOUT_S = 7200  # large models download for most of an hour


def image_uri(tag: str = DEFAULT_TAG) -> str:
    if tag not in RELEASES:
        raise ConfigError(f"unknown vLLM container tag {tag!r}; choose one of {choices(RELEASES)}")
    return f"{IMAGE_REPOSITORY}:{tag}"


def vllm_release(image: str) -> str:
    """The vLLM release inside an image URI, by its tag; the default image's for other tags."""
    return RELEASES.get(image.rpartition(":")[2], RELEASES[DEFAULT_TAG])
