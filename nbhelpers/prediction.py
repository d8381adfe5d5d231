"""Text generation through the Vertex AI predict route of the vLLM container. Every value is
checked by `request_rules` (the rules the plan checks a notebook's requests with) before the
endpoint is touched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbhelpers import checks, images, request_rules
from nbhelpers.catalog import ModelSpec
from nbhelpers.deployments import endpoint_of
from nbhelpers.predict_http import is_dedicated
from nbhelpers.request_rules import vision_prompt

__all__ = ["Completion", "build_instance", "parse_output", "predict", "predict_image",
           "vision_prompt"]

OUTPUT_MARKER = "\nOutput:\n"


@dataclass(frozen=True)
class Completion:
    prompt: str
    text: str  # the generated part only
    raw: str  # what the container returned

    def __str__(self) -> str:
        return self.text


def parse_output(raw: str) -> str:
    """The container answers "Prompt:\\n...\\nOutput:\\n..." unless raw_response is set."""
    head, marker, tail = raw.partition(OUTPUT_MARKER)
    return tail if marker and head.startswith("Prompt:\n") else raw


def build_instance(prompt: str, *, max_tokens: int, temperature: float, top_p: float,
                   top_k: int, raw_response: bool, lora_id: str = "",
                   model: ModelSpec | None = None) -> dict[str, Any]:
    """One predict instance; raises ConfigError naming a bad value."""
    return request_rules.instance(prompt, max_tokens=max_tokens, temperature=temperature,
                                  top_p=top_p, top_k=top_k, raw_response=raw_response,
                                  lora_id=lora_id, model=model)


def predict(
    endpoint: Any,
    prompts: str | list[str],
    *,
    max_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 1,
    raw_response: bool = False,
    lora_id: str = "",
) -> list[Completion]:
    """Sends prompts to a deployed text model; `endpoint` is a Deployment or aiplatform.Endpoint.

    `lora_id` names a LoRA adapter (a gs:// or Hugging Face path) for a server started with
    enable_lora.
    """
    model = request_rules.served_model(endpoint, "endpoint")
    batch = [checks.text("prompts", prompts)] if isinstance(prompts, str) \
        else request_rules.check_prompts("prompts", prompts)
    instances = [build_instance(p, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                top_k=top_k, raw_response=raw_response, lora_id=lora_id,
                                model=model)
                 for p in batch]
    target = endpoint_of(endpoint)
    images.check_payload({"instances": instances}, dedicated=is_dedicated(endpoint))
    response = target.predict(instances=instances)
    return [Completion(p, parse_output(str(raw)), str(raw))
            for p, raw in zip(batch, response.predictions, strict=True)]


def predict_image(
    deployment: Any,
    image: Any,
    question: str,
    *,
    max_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 1,
    raw_response: bool = False,
    image_format: str = "JPEG",
    quality: int = 90,
) -> Completion:
    """Asks a Llama 3.2 Vision deployment about one image through the predict route; the image
    (URL, path, bytes or PIL) is sent as a data URL in `multi_modal_data`, encoded as JPEG
    (`quality`) or PNG (lossless, larger: for diagrams and text)."""
    model = request_rules.deployment_model(deployment)
    request_rules.require_vision(model)
    checks.text("question", question)
    images.check_encoding(image_format=image_format, quality=quality)
    prompt = vision_prompt(question, instruct=model.instruct)
    instance = build_instance(prompt, max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p, top_k=top_k, raw_response=raw_response, model=model)
    instance["multi_modal_data"] = {
        "image": images.to_data_url(image, image_format=image_format, quality=quality)}
    images.check_payload({"instances": [instance]}, dedicated=is_dedicated(deployment))
    response = deployment.endpoint().predict(instances=[instance])
    raw = str(response.predictions[0])
    return Completion(prompt, parse_output(raw), raw)
