"""Secrets out of anything shown: the one pattern of a Hugging Face token and the one redaction,
below every other module so that `errors` can scrub each message it carries (and `tokens`, the
log records). Imports nothing of ours."""

from __future__ import annotations

import re

HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{6,}")
HIDDEN = "<hidden>"
_known: set[str] = set()  # secrets this process has read (a token need not look like one)


def remember(secret: str) -> str:
    """Adds a secret to those `redact` hides, wherever it later appears; returns it."""
    if secret:
        _known.add(secret)
    return secret


def looks_like_secret(value: object) -> bool:
    return isinstance(value, str) and (bool(HF_TOKEN_RE.search(value))
                                       or any(secret in value for secret in _known))


def redact(text: str) -> str:
    """Replaces Hugging Face tokens and any secret this process has read."""
    for secret in _known:
        text = text.replace(secret, HIDDEN)
    return HF_TOKEN_RE.sub(f"hf_{HIDDEN}", text)
