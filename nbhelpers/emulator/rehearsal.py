"""The rehearsal engine: text that says what the server received, never a model's answer.

A "token" here is a whitespace-separated word; the counts are honest about that.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

VLLM_DEFAULT_MAX_TOKENS = 16  # vLLM's SamplingParams default
REHEARSAL_TEXT = "rehearsal"  # what a free-text field of a rehearsed JSON answer says


@dataclass(frozen=True)
class Generation:
    tokens: list[str]
    prompt_tokens: int
    finish_reason: str  # "stop", "length" or "tool_calls"
    # A structured answer instead of words: JSON text that fits the request's schema, or tool
    # calls ({"id", "type", "function": {"name", "arguments"}}) that fit the tools' schemas.
    json_text: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.json_text if self.json_text is not None else " ".join(self.tokens)


def count_tokens(text: str) -> int:
    return len(text.split())


def generate(
    model_id: str,
    prompt: str,
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    extra: str = "",
) -> Generation:
    limit = VLLM_DEFAULT_MAX_TOKENS if max_tokens is None else max(0, int(max_tokens))
    # What was received comes first, so even a small max_tokens shows it.
    description = (
        f"[rehearsal engine, not {model_id}] received {len(prompt)} characters "
        f"({count_tokens(prompt)} words){extra}; sampling max_tokens={limit} "
        f"temperature={temperature} top_p={top_p} top_k={top_k}; no model ran and nothing "
        "was deployed."
    )
    words = description.split()
    return Generation(
        tokens=words[:limit],
        prompt_tokens=count_tokens(prompt),
        finish_reason="length" if limit < len(words) else "stop",
    )


def schema_example(schema: Any) -> Any:
    """A value that fits a JSON schema (the subset OpenAI tools and response formats use):
    the first of an enum or a const, the smallest number in range, False, the fewest items,
    required properties only, and strings that say "rehearsal" where a pattern allows it."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_example(schema[key][0])
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part)
        return schema_example(merged)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {name: schema_example(properties.get(name, {}))
                for name in schema.get("required", [])}
    if kind == "array":
        return [schema_example(schema.get("items", {}))
                for _ in range(int(schema.get("minItems", 0)))]
    if kind in ("integer", "number"):
        value: float = 0
        if schema.get("minimum") is not None:
            value = float(schema["minimum"])
        elif schema.get("exclusiveMinimum") is not None:
            value = float(schema["exclusiveMinimum"]) + 1
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string_example(schema)


def _string_example(schema: dict[str, Any]) -> str:
    low, high = int(schema.get("minLength", 0)), int(schema.get("maxLength", 10**6))
    pattern = schema.get("pattern")
    for candidate in (REHEARSAL_TEXT, REHEARSAL_TEXT.capitalize(), "a" * max(1, low), ""):
        if low <= len(candidate) <= high and (pattern is None or re.search(pattern, candidate)):
            return candidate
    return REHEARSAL_TEXT[:high].ljust(low, "a")


def structured(generation: Generation, body: dict[str, Any]) -> Generation:
    """The rehearsal's answer to a chat request that asks for a tool call (tool_choice naming a
    function, or "required") or JSON (response_format json_schema or json_object): the same
    OpenAI shape vLLM gives, with values that fit the schemas and say nothing."""
    tools = [t.get("function", {}) for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    chosen = [t for t in tools if t.get("name") == named] if named else \
        (tools[:1] if choice == "required" else [])
    if chosen:
        call = {"id": f"chatcmpl-tool-{uuid.uuid4().hex}", "type": "function",
                "function": {"name": chosen[0].get("name", ""), "arguments": json.dumps(
                    schema_example(chosen[0].get("parameters") or {"type": "object"}))}}
        return replace(generation, json_text="", tool_calls=[call],
                       finish_reason="tool_calls" if named is None else "stop")
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return replace(generation, json_text=json.dumps(schema_example(schema)),
                       finish_reason="stop")
    if response_format.get("type") == "json_object":
        return replace(generation, json_text=json.dumps({REHEARSAL_TEXT: True}),
                       finish_reason="stop")
    return generation
