"""The serving transport for many requests: pooled, authorised HTTP to an endpoint's serving host.

The SDKs pay a per-call cost (aiplatform: a protobuf round trip and a new request object, and
on dedicated endpoints a plain `ValueError` instead of an HTTP error; openai: a typed object per
streamed chunk) that, with one prompt per request, keeps `predict_many` and `chat_many` well
under what the server can take. This module posts `:predict` and chat completions itself
through one urllib3 pool of kept-alive connections as large as the concurrency, with
google-auth credentials refreshed before they expire (as AuthorizedSession and the openai
client's token provider here do), to the host the SDKs use: the endpoint's dedicated DNS name
for a dedicated endpoint (aiplatform >= 1.92.0), else the shared regional host (or the
api_endpoint aiplatform was initialised with). Errors are the SDKs' own:
`google.api_core.exceptions` for `:predict`, as aiplatform's REST transport raises them for a
shared endpoint (on both endpoint types, so 429/503 retries do not depend on the type), and the
openai client's exceptions for chat.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from nbhelpers.limits import DEDICATED_MAX_INFERENCE_TIMEOUT_S, SHARED_INFERENCE_TIMEOUT_S

CONNECT_TIMEOUT_S = 30
# Seconds to wait for an answer: past the front end's own limit, so its error is what is seen.
READ_TIMEOUT_MARGIN_S = 30


def is_dedicated(target: Any) -> bool:
    """Whether a Deployment or aiplatform.Endpoint is served on its own dedicated DNS name."""
    recorded = getattr(target, "dedicated_endpoint", None)
    if isinstance(recorded, bool):
        return recorded
    endpoint = target.endpoint() if callable(getattr(target, "endpoint", None)) else target
    return bool(endpoint.gca_resource.dedicated_endpoint_enabled)


def serving_host(endpoint: Any) -> str:
    """https://{dedicated DNS} for a dedicated endpoint; else the shared regional host, or the
    api_endpoint aiplatform was initialised with (with its scheme, when it has one)."""
    from google.cloud.aiplatform import initializer

    resource = endpoint.gca_resource
    if resource.dedicated_endpoint_enabled:
        if not resource.dedicated_endpoint_dns:
            from nbhelpers.errors import DeploymentError

            raise DeploymentError(f"endpoint {endpoint.resource_name} is dedicated but has no "
                                  "DNS name yet; wait until its deployment has finished")
        return f"https://{resource.dedicated_endpoint_dns}"
    configured = initializer.global_config.api_endpoint or ""
    if configured.startswith(("http://", "https://")):
        return configured.rstrip("/")
    return f"https://{configured or endpoint.location + '-aiplatform.googleapis.com'}"


def http_error(*, status: int, data: bytes, headers: Any, url: str) -> Exception:
    """The google.api_core exception for an HTTP error answer (BadRequest, TooManyRequests,
    ServiceUnavailable, ...), built by api_core as for the SDK's REST transport."""
    import requests
    from google.api_core import exceptions

    response = requests.Response()
    response.status_code, response._content, response.url = status, data, url
    response.headers.update(headers)
    response.request = requests.Request("POST", url).prepare()
    return exceptions.from_http_response(response)


class _PooledSession:
    """One endpoint's serving calls over one urllib3 pool of kept-alive connections (one
    SSLContext, its CA bundle read once), authorised with credentials refreshed before they
    expire. Thread-safe: one session serves every worker of a batch. Lighter than requests'
    sessions, whose per-call work (environment look-ups, hooks, a bundle parsed again for each
    new TLS connection) is what kept the helpers under the server's limit."""

    def __init__(self, endpoint: Any, path: str, *, credentials: Any = None,
                 pool_size: int = 8):
        import os
        import ssl

        import certifi
        import requests.utils
        import urllib3
        from google.cloud.aiplatform import initializer

        self.dedicated = bool(endpoint.gca_resource.dedicated_endpoint_enabled)
        self.url = f"{serving_host(endpoint)}/{path.format(name=endpoint.resource_name)}"
        self._credentials: Any = credentials or initializer.global_config.credentials
        # The CA bundle requests would trust (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or certifi's).
        bundle = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                  or certifi.where())
        options: dict[str, Any] = {"maxsize": pool_size, "retries": False,
                                   "ssl_context": ssl.create_default_context(cafile=bundle)}
        proxy = requests.utils.get_environ_proxies(self.url).get(self.url.split(":")[0])
        self._pool = urllib3.ProxyManager(proxy, **options) if proxy \
            else urllib3.PoolManager(**options)
        inference_s = DEDICATED_MAX_INFERENCE_TIMEOUT_S if self.dedicated \
            else SHARED_INFERENCE_TIMEOUT_S
        self._timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT_S,
                                        read=inference_s + READ_TIMEOUT_MARGIN_S)
        # Refreshing a token from many threads at once would ask for several; one at a time.
        self._refresh_lock = threading.Lock()

    def _post(self, body: dict[str, Any], *, stream: bool = False) -> Any:
        import google.auth.transport.requests

        if not self._credentials.valid:
            with self._refresh_lock:
                if not self._credentials.valid:
                    self._credentials.refresh(google.auth.transport.requests.Request())
        headers = {"Content-Type": "application/json"}
        self._credentials.apply(headers)
        return self._pool.request("POST", self.url, body=json.dumps(body).encode(),
                                  headers=headers, timeout=self._timeout,
                                  preload_content=not stream)

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class PredictSession(_PooledSession):
    """`:predict` calls to one endpoint (the route the SDK's Endpoint.predict uses)."""

    def __init__(self, endpoint: Any, *, credentials: Any = None, pool_size: int = 8):
        super().__init__(endpoint, "v1/{name}:predict", credentials=credentials,
                         pool_size=pool_size)

    def predict(self, instances: list[dict[str, Any]]) -> list[Any]:
        """The predictions for these instances; an HTTP error raises its api_core exception."""
        response = self._post({"instances": instances})
        if response.status != 200:
            raise http_error(status=response.status, data=response.data,
                             headers=response.headers, url=self.url)
        return json.loads(response.data).get("predictions", [])


class ChatSession(_PooledSession):
    """OpenAI chat completions to one endpoint (the route the openai client uses), streamed or
    whole. Errors are the openai client's own exceptions and messages (BadRequestError,
    RateLimitError, ...), built by `errors_from`, the openai client of the endpoint."""

    def __init__(self, endpoint: Any, *, errors_from: Any, credentials: Any = None,
                 pool_size: int = 8):
        super().__init__(endpoint, "v1beta1/{name}/chat/completions", credentials=credentials,
                         pool_size=pool_size)
        self._openai = errors_from

    def complete(self, messages: list[dict[str, Any]], *, max_tokens: int,
                 stream: bool) -> tuple[str, float]:
        """The reply and the seconds to its first text (NaN when not streamed: a whole reply
        has no first token to time)."""
        body: dict[str, Any] = {"model": "", "messages": messages, "max_tokens": max_tokens}
        if stream:
            body["stream"] = True
        started = time.perf_counter()
        response = self._post(body, stream=stream)
        try:
            if response.status != 200:
                raise self._openai_error(response)
            if not stream:
                reply = json.loads(response.data)
                return reply["choices"][0]["message"]["content"] or "", math.nan
            first: float | None = None
            pieces: list[str] = []
            pending = b""
            for data in _arrivals(response):
                pending += data
                *events, pending = pending.split(b"\n\n")
                for text in _sse_texts(events):
                    if first is None:
                        first = time.perf_counter() - started
                    pieces.append(text)
        finally:
            response.release_conn()
        return "".join(pieces), first if first is not None else time.perf_counter() - started

    def _openai_error(self, response: Any) -> Exception:
        # The openai client builds its exception from the answer it would have read: the same
        # class for the status and the same "Error code: N - message" as through the SDK.
        answer = SimpleNamespace(status_code=response.status, headers=response.headers,
                                 text=response.data.decode(errors="replace"), is_closed=True,
                                 is_stream_consumed=True, request=None)
        build = getattr(self._openai, "_make_status_error_from_response", None)
        if build is None:  # an openai release without it: its base class, with the status
            import openai

            return openai.APIStatusError(f"Error code: {answer.status_code} - {answer.text}",
                                         response=answer, body=None)  # type: ignore[arg-type]
        error: Exception = build(answer)
        return error


def _arrivals(response: Any) -> Iterator[bytes]:
    """The body as it arrives, not in full buffers (urllib3 >= 2.3 has read1; older ones stream
    an HTTP/1.1 chunk at a time, or the whole body when it is not chunked)."""
    if hasattr(response, "read1"):
        while data := response.read1(65536):
            yield data
    else:
        yield from response.stream(None)


def _sse_texts(events: list[bytes]) -> list[str]:
    """The text pieces of server-sent chat completion chunks (`data: {...}`, `data: [DONE]`);
    an error event (vLLM's, mid-stream) raises with its message. The chunks that arrived
    together are decoded in one JSON array: one call per arrival, not per token."""
    payloads = [line[5:] for event in events for line in event.split(b"\n")
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]"]
    if not payloads:
        return []
    texts = []
    for chunk in json.loads(b"[" + b",".join(payloads) + b"]"):
        if "error" in chunk:
            raise RuntimeError(f"the stream ended with an error: {chunk['error']}")
        choices = chunk.get("choices") or []
        text = (choices[0].get("delta") or {}).get("content") if choices else None
        if text:
            texts.append(text)
    return texts
