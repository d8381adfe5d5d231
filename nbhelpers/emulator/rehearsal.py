"""The rehearsal engine: text that says what the server received, never a model's answer.

A "token" here is a whitespace-separated word; the counts are honest about that.
"""

from __future__ import annotations

from dataclasses import dataclass

VLLM_DEFAULT_MAX_TOKENS = 16  # vLLM's SamplingParams default


@dataclass(frozen=True)
class Generation:
    tokens: list[str]
    prompt_tokens: int
    finish_reason: str  # "stop" or "length"

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


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
