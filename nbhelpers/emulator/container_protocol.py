"""The predict route of Google's vLLM serving container, as both engines behind a replica serve
it: a body of `{"instances": [{"prompt": ..., ...}]}`, and each answer written as
`Prompt:\\n{prompt}\\nOutput:\\n{text}` unless the instance asks for `raw_response`."""

from __future__ import annotations

from typing import Any


class BadPredictBody(ValueError):
    """A predict body the container refuses with 400; the message is its reply."""


def instances_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body's instances, each with a string prompt; BadPredictBody otherwise."""
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadPredictBody("request must be {\"instances\": [...]} with one or more")
    for instance in instances:
        if not isinstance(instance, dict) or not isinstance(instance.get("prompt"), str):
            raise BadPredictBody("each instance needs a string 'prompt'")
    return instances


def prediction(instance: dict[str, Any], text: str) -> str:
    """One answer as the container writes it."""
    return text if instance.get("raw_response") else \
        f"Prompt:\n{instance['prompt']}\nOutput:\n{text}"
