"""The Model Garden vLLM serving container's images: every tag Google documents or uses for Llama,
the vLLM release inside each (or that Google publishes none), its architecture, the Google-only
flags it takes, and the port and routes the image serves. A fact table: imports nothing of ours
but errors.

Sources, each cited on its rows:
- TUTORIAL: Google's tutorial "vLLM serving for text-only and multimodal language models on Cloud
  GPUs" (cloud.google.com/vertex-ai/generative-ai/docs/open-models/vllm/use-vllm), section "Model
  Garden vLLM container release notes" (read 2026-11-26): release date, architecture and vLLM
  version of every standard tag, and the two optimized-image tags (no vLLM version given).
- SAMPLES: GoogleCloudPlatform/vertex-ai-samples, notebooks/community/model_garden at its
  2026-08-19 state (commit cc0d791): tags and flags the Llama notebooks pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbhelpers.errors import ConfigError, choices

REGISTRY = "us-docker.pkg.dev"
STANDARD_IMAGE = "vertex-ai/vertex-vision-model-garden-dockers/pytorch-vllm-serve"
# The optimized image lives in Google's restricted project, not beside the standard one.
OPTIMIZED_IMAGE = ("vertex-ai-restricted/vertex-vision-model-garden-dockers/"
                   "pytorch-vllm-optimized-serve")
IMAGE_REPOSITORY = f"{REGISTRY}/{STANDARD_IMAGE}"

TUTORIAL = ("Google's vLLM tutorial, 'Model Garden vLLM container release notes' "
            "(cloud.google.com/vertex-ai/generative-ai/docs/open-models/vllm/use-vllm, read "
            "2026-11-26)")
SAMPLES = "GoogleCloudPlatform/vertex-ai-samples notebooks/community/model_garden (2026-08-19)"

# Google-only options of the standard image, and the first tag a Google notebook passed each
# with (SAMPLES): a tag from that date on takes it. `model-type` since the Llama 3.2 multimodal
# tutorial (20241001_0916_RC00, model_type="llama3.1"); the `vertex-llama-3` tool-call parser
# since the Llama 3.2 notebook (20241202_0916_RC00_maas, enable_llama_tool_parser=True); the
# host-memory prefix KV cache since commit 9ed8896 "vLLM supports GPU HBM + host memory prefix
# kv caching" moved the Llama 3.1 notebook to 20241210_0916_RC00 (target 0.7); its minimum
# length since the advanced-features notebook (20250116_0916_RC00, min_len 1024).
TOOL_PARSER_VERTEX = "tool-call-parser=vertex-llama-3"
GOOGLE_FLAGS_SINCE: dict[str, str] = {
    "model-type": "20241001",
    TOOL_PARSER_VERTEX: "20241202",
    "host-prefix-kv-cache-utilization-target": "20241210",
    "host-prefix-kv-cache-min-len": "20250116",
}
# Llama 3.2 Vision (mllama) arrived in vLLM 0.6.2 and ran only on the V0 engine; vLLM removed it
# in 0.11.0 (PR 24907). See ../shared/docs/anchors.md.
VISION_VLLM = ((0, 6, 2), (0, 11))


@dataclass(frozen=True, kw_only=True)
class Release:
    """One image tag: what is inside it and where that is known from."""

    tag: str
    released: str  # YYYY-MM-DD (the tutorial's release date, else the tag's own date)
    vllm: str | None  # the vLLM release Google publishes for it; None: none published
    planned_as: str  # the release the planner and argument checks assume (= vllm when known)
    arch: str = "x86"  # "x86" or "arm"
    optimized: bool = False  # the discontinued pytorch-vllm-optimized-serve image
    source: str = TUTORIAL
    note: str = ""

    @property
    def uri(self) -> str:
        return f"{REGISTRY}/{OPTIMIZED_IMAGE if self.optimized else STANDARD_IMAGE}:{self.tag}"

    @property
    def vllm_text(self) -> str:
        """The vLLM release as the plan says it: the published one, or that none is published
        and what is assumed instead."""
        if self.vllm:
            return self.vllm
        return f"unknown (Google publishes none; planned as {self.planned_as}: {self.note})"

    @property
    def google_flags(self) -> frozenset[str]:
        """Google-only options this image takes (only the standard image is known to)."""
        if self.optimized:
            return frozenset()
        day = self.tag[:8]
        return frozenset(flag for flag, since in GOOGLE_FLAGS_SINCE.items() if day >= since)

    @property
    def serves_vision(self) -> bool:
        """Whether its vLLM serves Llama 3.2 Vision. An image whose vLLM is not published
        counts only when its neighbours in time bracket it inside the supported range (planned
        as such); the optimized image does not count, as nothing says what it runs."""
        if self.optimized:
            return False
        low, high = VISION_VLLM
        return low <= _version(self.planned_as) < high

    def describe(self) -> str:
        arch = " (ARM)" if self.arch == "arm" else ""
        kind = "optimized vLLM" if self.optimized else "vLLM"
        return f"{self.tag}{arch}: {kind} {self.vllm_text}"


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c in "0123456789")
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _table(*rows: tuple[str, str, str | None]) -> list[Release]:
    """Rows of the tutorial's table: (tag, release date, vLLM release)."""
    return [Release(tag=tag, released=day, vllm=vllm, planned_as=vllm or "")
            for tag, day, vllm in rows]


_PAST = "the tutorial says 'past v{0}, commit {1}': planned as {0}"
TABLE: list[Release] = [
    *_table(
        ("20241016_0916_RC00_maas", "2024-10-16", "0.6.2"),
        ("20241112_0916_RC00_maas", "2024-11-12", "0.6.2"),
        ("20241202_0916_RC00_maas", "2024-12-02", "0.6.4.post1"),
        ("20250114_0916_RC00_maas", "2025-01-14", "0.6.4.post1"),
        ("20250304_0916_RC01", "2025-03-03", "0.7.2"),
        ("20250321_0916_RC01", "2025-03-21", "0.8.1"),
        ("20250324_0916_RC01", "2025-03-23", "0.8.1"),
        ("20250327_0916_RC01", "2025-03-26", "0.8.1"),
        ("20250401_0916_RC01", "2025-03-31", "0.8.1"),
        ("20250404_0916_RC01", "2025-04-07", "0.8.1"),
        ("20250407_0917_RC01", "2025-04-07", "0.8.3"),
        ("20250417_0916_RC01", "2025-04-17", "0.8.4"),
        ("20250429_0916_RC01", "2025-04-29", "0.8.4"),
        ("20250430_0916_RC00_maas", "2025-04-29", "0.8.4"),
        ("20250506_0916_RC01", "2025-05-06", "0.8.5.post1"),
        ("20250601_0916_RC01", "2025-06-02", "0.9.0"),
        ("20250611_0916_RC01", "2025-06-11", "0.9.1"),
        ("20250710_0916_RC01", "2025-07-10", "0.9.2"),
    ),
    Release(tag="20250717_0916_arm_RC01", released="2025-07-17", vllm="0.9.2",
            planned_as="0.9.2", arch="arm"),
    # Builds between releases: the tutorial names the vLLM commit they were built from.
    Release(tag="20250312_0916_RC01", released="2025-03-11", vllm=None, planned_as="0.7.3",
            note=_PAST.format("0.7.3", "f6bb18f")),
    Release(tag="20250405_1205_RC01", released="2025-04-05", vllm=None, planned_as="0.8.2",
            note=_PAST.format("0.8.2", "55acf86")),
    Release(tag="20250410_0917_RC01", released="2025-04-10", vllm=None, planned_as="0.8.3",
            note=_PAST.format("0.8.3", "098900d")),
    Release(tag="20250620_0916_RC01", released="2025-06-20", vllm=None, planned_as="0.9.1",
            note=_PAST.format("0.9.1", "5e666f7")),
    # The tutorial's 2025-04-07 v0.8.3 row runs two tags together
    # ("20250407_0917_RC0120250429_0916_RC00_maas"); the second is read as this one.
    Release(tag="20250429_0916_RC00_maas", released="2025-04-07", vllm="0.8.3",
            planned_as="0.8.3", note="read from a tutorial cell that runs two tags together"),
    # Tags Google's Llama notebooks use that the tutorial's table lacks (SAMPLES).
    Release(tag="20241001_0916_RC00", released="2024-10-01", vllm=None, planned_as="0.6.2",
            source=f"{SAMPLES}: model_garden_vllm_multimodal_tutorial.ipynb (Llama 3.2 Vision)",
            note="Google ran Llama 3.2 Vision on it, and 0.6.2 (2024-09-25) was the first vLLM "
                 "with it"),
    Release(tag="20241210_0916_RC00", released="2024-12-10", vllm=None, planned_as="0.6.4.post1",
            source=f"{SAMPLES}: model_garden_pytorch_llama3_1_deployment.ipynb",
            note="the tags before and after it (20241202, 20250114) are both 0.6.4.post1"),
    Release(tag="20250116_0916_RC00", released="2025-01-16", vllm=None, planned_as="0.6.4.post1",
            source=f"{SAMPLES}: model_garden_pytorch_llama3_1_finetuning.ipynb, "
                   "model_garden_advanced_features.ipynb",
            note="between 20250114 (0.6.4.post1) and 20250304 (0.7.2), before vLLM 0.7.0 "
                 "(2025-01-27): a 0.6.x, planned as its predecessor's"),
    # The optimized image (TUTORIAL: "Deprecated: development is discontinued"); no vLLM
    # version is published for it.
    Release(tag="20241029_0835_RC00", released="2024-10-29", vllm=None, planned_as="0.6.2",
            optimized=True, source=f"{TUTORIAL}; {SAMPLES}: "
            "model_garden_pytorch_llama3_1_deployment.ipynb (Llama 3.1 8B and 70B)",
            note="planned as the standard image of its month"),
    Release(tag="20250121_0835_RC00", released="2025-01-21", vllm=None, planned_as="0.6.4.post1",
            optimized=True, note="planned as the standard image of its month"),
]
IMAGES: dict[str, Release] = {r.tag: r for r in sorted(TABLE, key=lambda r: r.tag)}
# The vLLM release each tag is planned with (published, or assumed as its row says).
RELEASES: dict[str, str] = {tag: r.planned_as for tag, r in IMAGES.items()}

DEFAULT_TAG = "20250710_0916_RC01"
PORT = 8080
PREDICT_ROUTE = "/generate"
HEALTH_ROUTE = "/ping"
SHARED_MEMORY_MB = 16 * 1024
DEPLOYMENT_TIMEOUT_S = 7200  # large models download for most of an hour


def release(tag: str) -> Release:
    if not isinstance(tag, str) or tag not in IMAGES:
        raise ConfigError(f"unknown vLLM container tag {tag!r}; choose one of {choices(IMAGES)}")
    return IMAGES[tag]


def image_uri(tag: str = DEFAULT_TAG) -> str:
    return release(tag).uri


def release_of(image: str) -> Release:
    """The release of an image URI, by its tag; the default tag's for a tag not listed."""
    return IMAGES.get(image.rpartition(":")[2], IMAGES[DEFAULT_TAG])


def vllm_release(image: str) -> str:
    """The vLLM release an image URI is planned with, by its tag; the default image's for
    other tags."""
    return release_of(image).planned_as


def vision_tags() -> list[str]:
    """The x86 tags whose vLLM serves Llama 3.2 Vision."""
    return [tag for tag, r in IMAGES.items() if r.serves_vision and r.arch == "x86"]


def require_vision(tag: str, model_name: str) -> None:
    """Refuses a Llama 3.2 Vision model on an image whose vLLM has no mllama, naming those that
    do: the container would otherwise exit at start-up, after the GPUs are billed."""
    found = release(tag)
    if found.serves_vision:
        return
    why = ("the optimized image publishes no vLLM release and no Google notebook serves "
           "Llama 3.2 Vision with it" if found.optimized else
           f"its vLLM {found.vllm_text} has no Llama 3.2 Vision (mllama runs on vLLM 0.6.2 "
           "up to 0.10.x; 0.11.0 removed it)")
    raise ConfigError(f"{model_name} cannot run on container tag {tag}: {why}. Choose one of "
                      f"{choices(vision_tags())}")


# Tool calling for Llama 3.1/3.2 JSON tool calls. Upstream vLLM's parser, `llama3_json`, came
# with 0.6.3: 0.6.2 refuses it ("invalid choice: 'llama3_json' (choose from 'mistral',
# 'hermes')", vllm-project/vllm issue 9312). Google's notebooks pass their fork's
# `vertex-llama-3` with `--enable-auto-tool-choice` on images that take it (GOOGLE_FLAGS_SINCE).
UPSTREAM_TOOL_PARSER = "llama3_json"
UPSTREAM_TOOL_PARSER_SINCE = (0, 6, 3)


def tool_call_parser(tag: str) -> str | None:
    """The --tool-call-parser for Llama 3.1/3.2 on an image: Google's where the image takes it,
    else upstream vLLM's from 0.6.3 on, else None (no Llama tool parser in the image)."""
    found = release(tag)
    if TOOL_PARSER_VERTEX in found.google_flags:
        return TOOL_PARSER_VERTEX.partition("=")[2]
    if _version(found.planned_as) >= UPSTREAM_TOOL_PARSER_SINCE:
        return UPSTREAM_TOOL_PARSER
    return None


def tool_calling_tags() -> list[str]:
    """The x86 tags whose vLLM has a Llama tool-call parser."""
    return [tag for tag, r in IMAGES.items() if r.arch == "x86" and tool_call_parser(tag)]


def require_machine_arch(tag: str, machine_type: str) -> None:
    """An ARM image runs only on ARM machines; every machine type here is x86."""
    found = release(tag)
    if found.arch != "x86":
        raise ConfigError(
            f"container tag {tag} is an {found.arch.upper()} image and {machine_type} an x86 "
            "machine: the container would not start. Choose an x86 tag, e.g. "
            f"{DEFAULT_TAG} (vLLM {RELEASES[DEFAULT_TAG]}, the same release)")
