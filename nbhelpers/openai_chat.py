"""OpenAI chat completions against a Vertex AI endpoint (shared or dedicated), with Google
credentials that refresh themselves: an access token lives about an hour, a workshop longer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from nbhelpers import catalog, checks, images, predict_http, request_rules
from nbhelpers.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_RETRIES = 10  # of the openai client, each with its own backoff


def base_url(endpoint: Any) -> str:
    """The OpenAI base URL of an endpoint: its dedicated DNS name when it has one, else the
    regional API host (or the api_endpoint aiplatform was initialised with)."""
    return f"{predict_http.serving_host(endpoint)}/v1beta1/{endpoint.resource_name}"


def streams(deployment: Any) -> bool:
    """Whether the endpoint streams: only dedicated endpoints do (shared ones refuse streamed
    chat completions and streamRawPredict; see emulator/serving.py for the sources)."""
    return predict_http.is_dedicated(deployment)


_said_no_streaming: set[str] = set()
_said_lock = threading.Lock()


def say_not_streamed(deployment: Any) -> None:
    """Says once per endpoint and process (not per request) that its replies come whole."""
    from nbhelpers.deployments import endpoint_of

    endpoint = endpoint_of(deployment)
    name = endpoint.resource_name
    with _said_lock:
        if base_url(endpoint) in _said_no_streaming:  # the host too: names repeat elsewhere
            return
        _said_no_streaming.add(base_url(endpoint))
    note = (f"Note: endpoint {name.split('/')[-1]} is a shared endpoint, which does not stream; "
            "replies come whole (no time to first token is measured). Deploy with "
            "dedicated_endpoint=True to stream.")
    logger.info(note)
    print(note)


def token_provider(credentials: Any) -> Callable[[], str]:
    """Returns a function the openai client calls for every request; it refreshes the Google
    access token when it has expired (or is about to), so long sessions never see a 401."""
    import google.auth.transport.requests

    lock = threading.Lock()

    def current_token() -> str:
        with lock:
            if getattr(credentials, "token", None) is None and credentials.valid:
                return "anonymous"  # anonymous credentials: nothing to send
            if not credentials.valid:
                credentials.refresh(google.auth.transport.requests.Request())
            return credentials.token

    return current_token


def chat_client(deployment: Any, *, credentials: Any = None, max_retries: int = 2) -> Any:
    """An openai.OpenAI client for the deployment's endpoint."""
    import openai
    from google.cloud.aiplatform import initializer

    from nbhelpers.deployments import endpoint_of
    request_rules.served_model(deployment, "deployment")
    checks.whole("max_retries", max_retries, low=0, high=MAX_RETRIES,
                 why="the openai client's own retries of each request")
    endpoint = endpoint_of(deployment)
    credentials = credentials or initializer.global_config.credentials
    return openai.OpenAI(base_url=base_url(endpoint), api_key=token_provider(credentials),
                         max_retries=max_retries)


def build_messages(prompt: str | list[dict[str, Any]], *, system: str = "",
                   images_in: list[Any] | None = None,
                   history: list[dict[str, Any]] | None = None,
                   image_format: str = "JPEG") -> list[dict[str, Any]]:
    """Messages for one turn: optional system prompt, earlier turns, then the user's text with
    any images as data URLs (URLs and files are fetched and encoded here, not by the server).
    A list `prompt` is a whole conversation, sent as it is."""
    return request_rules.messages(prompt, system=system, images_in=images_in, history=history,
                                  image_format=image_format)


def check_request(model: catalog.ModelSpec, messages: list[dict[str, Any]], *,
                  template: bool | None = None) -> None:
    """Refuses, before the call, what vLLM would refuse after a round trip (`template`:
    request_rules.deployment_template's answer)."""
    request_rules.check_chat(model, messages, template=template)


def chat(
    deployment: Any,
    prompt: str | list[dict[str, Any]],
    *,
    system: str = "",
    images_in: list[Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    image_format: str = "JPEG",
    max_tokens: int = 256,
    temperature: float = 0.7,
    stream: bool = False,
    echo: bool = True,
    openai_client: Any = None,
) -> str:
    """One chat turn. With `stream`, prints tokens as they arrive (when `echo`) where the
    endpoint streams (dedicated endpoints); a shared endpoint answers whole, said once. Returns
    the whole reply either way. Every value is checked before the first call."""
    model = request_rules.deployment_model(deployment)
    template = request_rules.deployment_template(deployment)
    check_request(model, [], template=template)  # before any image is fetched
    request_rules.check_max_tokens(max_tokens, context=request_rules.context_of(model))
    request_rules.check_temperature(temperature)
    checks.flag("stream", stream)
    checks.flag("echo", echo)
    if openai_client is not None and not hasattr(openai_client, "chat"):
        raise ConfigError(f"openai_client must be an openai.OpenAI client (or None for one made "
                          f"here), got {type(openai_client).__name__}")
    if isinstance(images_in, list | tuple):
        request_rules.image_count(model, len(images_in), name="images_in")
    messages = build_messages(prompt, system=system, images_in=images_in, history=history,
                              image_format=image_format)
    check_request(model, messages, template=template)
    dedicated = predict_http.is_dedicated(deployment)
    images.check_payload({"messages": messages}, dedicated=dedicated)
    api = openai_client or chat_client(deployment)
    if stream and not dedicated:  # a shared endpoint would refuse the stream: ask for it whole
        say_not_streamed(deployment)
    if not stream or not dedicated:
        reply = api.chat.completions.create(model="", messages=messages, max_tokens=max_tokens,
                                            temperature=temperature)
        text = reply.choices[0].message.content or ""
        if stream and echo:
            print(text)
        return text
    text, _ = stream_reply(api, messages, max_tokens=max_tokens, temperature=temperature,
                           on_text=(lambda piece: print(piece, end="", flush=True)) if echo
                           else None)
    if echo:
        print()
    return text


def stream_reply(api: Any, messages: list[dict[str, Any]], *, max_tokens: int,
                 temperature: float | None = None,
                 on_text: Callable[[str], None] | None = None) -> tuple[str, float]:
    """Streams one chat completion: returns the whole reply and the seconds to its first text,
    calling `on_text` with each piece as it arrives."""
    options: dict[str, Any] = {"max_tokens": max_tokens}
    if temperature is not None:
        options["temperature"] = temperature
    started = time.perf_counter()
    first: float | None = None
    pieces = []
    for chunk in api.chat.completions.create(model="", messages=messages, stream=True,
                                             **options):
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            if first is None:
                first = time.perf_counter() - started
            pieces.append(delta)
            if on_text is not None:
                on_text(delta)
    return "".join(pieces), first if first is not None else time.perf_counter() - started
