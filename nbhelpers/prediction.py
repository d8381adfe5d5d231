"""Text generation through the Vertex AI predict route of the vLLM container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbhelpers.deployments import endpoint_of
from nbhelpers.errors import ConfigError

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
                   top_k: int, raw_response: bool, lora_id: str = "") -> dict[str, Any]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"prompt must be non-empty text, got {prompt!r}")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"max_tokens must be a positive whole number, got {max_tokens!r}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if not isinstance(top_k, int) or (top_k < 1 and top_k != -1):
        raise ConfigError(f"top_k must be a positive whole number or -1 (all), got {top_k!r}")
    instance: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens,
                                "temperature": temperature, "top_p": top_p, "top_k": top_k,
                                "raw_response": raw_response}
    if lora_id:
        instance["dynamic-lora"] = lora_id
    return instance


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
    endpoint = endpoint_of(endpoint)
    batch = [prompts] if isinstance(prompts, str) else list(prompts)
    instances = [build_instance(p, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                top_k=top_k, raw_response=raw_response, lora_id=lora_id)
                 for p in batch]
    response = endpoint.predict(instances=instances)
    return [Completion(p, parse_output(str(raw)), str(raw))
            for p, raw in zip(batch, response.predictions, strict=True)]


def vision_prompt(question: str, *, instruct: bool) -> str:
    """Llama 3.2 Vision's prompt format: the image token, then the text (Instruct models wrap
    it in their chat headers)."""
    if instruct:
        return ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>"
                f"{question}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    return f"<|begin_of_text|><|image|>{question}"


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
    from nbhelpers import images

    model = deployment.model
    if model.modality != "vision":
        raise ConfigError(f"{model.name} is a text model; deploy a Llama 3.2 Vision model to "
                          "ask about images")
    prompt = vision_prompt(question, instruct=model.instruct)
    instance = build_instance(prompt, max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p, top_k=top_k, raw_response=raw_response)
    instance["multi_modal_data"] = {
        "image": images.to_data_url(image, image_format=image_format, quality=quality)}
    images.check_payload({"instances": [instance]})
    response = deployment.endpoint().predict(instances=[instance])
    raw = str(response.predictions[0])
    return Completion(prompt, parse_output(raw), raw)
