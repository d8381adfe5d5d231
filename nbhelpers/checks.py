"""One rule per kind of parameter value: whole numbers, finite numbers, flags, text, choices.
Every refusal is a ConfigError that names the parameter, its valid range and the bad value
(shortened, and redacted by the error itself). Imports nothing of ours but errors and redaction.

Python's bool is an int, so `True` would pass as a count of 1: each rule here refuses it where
a number is asked for, and refuses 0/1 where a flag is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from nbhelpers.errors import ConfigError, choices
from nbhelpers.redaction import looks_like_secret

SHOWN_CHARS = 80  # of a bad value in a message: enough to recognise it, never a page of it


def shown(value: Any) -> str:
    """A bad value as a message shows it: its repr, shortened."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails still gets a message
        text = f"<{type(value).__name__}>"
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS - 20]}... ({len(text):,} chars)"


def _type(value: Any) -> str:
    return type(value).__name__


def whole(name: str, value: Any, *, low: int, high: int, why: str = "") -> int:
    """A whole number in [low, high] (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        got = shown(value) if isinstance(value, int) and not isinstance(value, bool) \
            else f"{shown(value)} ({_type(value)})"
        raise ConfigError(f"{name} must be a whole number from {low} to {high}"
                          f"{f' ({why})' if why else ''}, got {got}")
    return value


def number(name: str, value: Any, *, low: float, high: float = math.inf,
           low_open: bool = False, why: str = "") -> float:
    """A finite number (int or float, not a bool) in [low, high], or (low, high] with
    `low_open`."""
    below = "above" if low_open else "of at least"
    upto = f" and at most {high:g}" if high != math.inf else ""
    problem = ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problem = f"{shown(value)} ({_type(value)})"
    else:
        try:
            ok = math.isfinite(value) and (value > low if low_open else value >= low) \
                and value <= high
        except OverflowError:  # an int too large for a float
            ok = False
        if not ok:
            problem = shown(value)
    if problem:
        raise ConfigError(f"{name} must be a finite number {below} {low:g}{upto}"
                          f"{f' ({why})' if why else ''}, got {problem}")
    return float(value)


def flag(name: str, value: Any) -> bool:
    """True or False, nothing that merely converts to one (0, 'no', None)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {shown(value)} ({_type(value)})")
    return value


def text(name: str, value: Any, *, empty_ok: bool = False, max_chars: int | None = None,
         secret_ok: bool = False) -> str:
    """Text that can be sent (UTF-8), not blank unless `empty_ok`, and never a token: a
    Hugging Face token belongs in the HF_TOKEN environment variable, not a parameter, which is
    saved with the notebook and shown in its outputs."""
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be text, got {shown(value)} ({_type(value)})")
    if not empty_ok and not value.strip():
        raise ConfigError(f"{name} must not be empty, got {shown(value)}")
    if max_chars is not None and len(value) > max_chars:
        raise ConfigError(f"{name} must have at most {max_chars:,} characters, got "
                          f"{len(value):,}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConfigError(f"{name} holds {shown(value[err.start:err.end])} at character "
                          f"{err.start}, which is not a character UTF-8 can carry (a lone "
                          "surrogate): remove it") from None
    if not secret_ok and looks_like_secret(value):
        raise ConfigError(
            f"{name} holds what looks like a Hugging Face token ({shown(value)}); it is "
            "refused and not shown. Put the token in the HF_TOKEN environment variable (Colab: "
            "the Secrets panel), never in a parameter, and revoke a token that was pasted.")
    return value


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = tuple(allowed)
    try:
        ok = any(type(value) is type(a) and value == a for a in allowed)
    except Exception:  # an exotic value that cannot be compared is not one of them
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be one of {choices(allowed)}, got {shown(value)}")
    return value


def sequence(name: str, value: Any, *, low: int, high: int, of: str) -> list[Any]:
    """A list or tuple of `low` to `high` items (`of` says what an item is, for the message);
    a lone string is refused, not read as a list of characters."""
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ConfigError(f"{name} must be a list of {of}, got {shown(value)} ({_type(value)})")
    if not low <= len(value) <= high:
        raise ConfigError(f"{name} must hold {low} to {high} {of}, got {len(value)}")
    return list(value)
