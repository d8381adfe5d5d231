"""The serving transport for many requests: pooled, authorised HTTP to an endpoint's serving host.

The aiplatform SDK pays a per-call overhead (a protobuf round trip, a new request object, and
on dedicated endpoints a plain `ValueError` instead of an HTTP error) that, with one prompt per
request, keeps `predict_many` well under what the server can take. This module posts `:predict`
itself through one google-auth `AuthorizedSession` (a `requests` session whose credentials
refresh themselves) with a connection pool as large as the concurrency, to the host the SDK
would use: the endpoint's dedicated DNS name for a dedicated endpoint (SDK >= 1.92.0), else the
shared regional host (or the api_endpoint aiplatform was initialised with). Errors become the
same `google.api_core.exceptions` the SDK's REST transport raises for a shared endpoint, on both
endpoint types, so 429/503 retries and messages do not depend on the endpoint's type.
"""

from __future__ import annotations

import json
import threading
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


def http_error(response: Any) -> Exception:
    """The google.api_core exception for an HTTP error answer (BadRequest, TooManyRequests,
    ServiceUnavailable, ...), as the SDK's REST transport builds it."""
    from google.api_core import exceptions

    return exceptions.from_http_response(response)


def _one_context_adapter(pool_size: int) -> Any:
    """A requests adapter whose connections share one SSLContext, with the CA bundle requests
    would use (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or certifi's) loaded once: requests otherwise
    parses the whole bundle again for every new connection, tens of milliseconds of CPU each,
    which stalls a batch that opens a pool of TLS connections at once."""
    import os
    import ssl

    import certifi
    import requests.adapters

    bundle = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
              or certifi.where())
    context = ssl.create_default_context(cafile=bundle)

    class OneContextAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = context
            super().init_poolmanager(*args, **kwargs)

        def build_connection_pool_key_attributes(self, request: Any, verify: Any,
                                                 cert: Any = None) -> Any:
            host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
            pool.pop("ca_certs", None)  # in the context already
            pool.pop("ca_cert_dir", None)
            return host, pool

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            super().cert_verify(conn, url, verify, cert)
            conn.ca_certs = conn.ca_cert_dir = None

    return OneContextAdapter(pool_connections=1, pool_maxsize=pool_size)


class PredictSession:
    """`:predict` calls to one endpoint over a pool of kept-alive connections. Thread-safe:
    one session is shared by every worker of a batch (requests' pool hands each its own
    connection)."""

    def __init__(self, endpoint: Any, *, credentials: Any = None, pool_size: int = 8):
        import google.auth.transport.requests
        from google.cloud.aiplatform import initializer

        self.dedicated = bool(endpoint.gca_resource.dedicated_endpoint_enabled)
        self.url = f"{serving_host(endpoint)}/v1/{endpoint.resource_name}:predict"
        credentials = credentials or initializer.global_config.credentials
        self._session = google.auth.transport.requests.AuthorizedSession(credentials)
        adapter = _one_context_adapter(pool_size)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        inference_s = DEDICATED_MAX_INFERENCE_TIMEOUT_S if self.dedicated \
            else SHARED_INFERENCE_TIMEOUT_S
        self._timeout = (CONNECT_TIMEOUT_S, inference_s + READ_TIMEOUT_MARGIN_S)
        # Refreshing a token from many threads at once would ask for several; one at a time.
        self._refresh_lock = threading.Lock()
        self._credentials = credentials

    def predict(self, instances: list[dict[str, Any]]) -> list[Any]:
        """The predictions for these instances; an HTTP error raises its api_core exception."""
        import google.auth.transport.requests

        if not self._credentials.valid:
            with self._refresh_lock:
                if not self._credentials.valid:
                    self._credentials.refresh(google.auth.transport.requests.Request())
        response = self._session.post(
            self.url, data=json.dumps({"instances": instances}),
            headers={"Content-Type": "application/json"}, timeout=self._timeout)
        if response.status_code != 200:
            raise http_error(response)
        return response.json().get("predictions", [])

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PredictSession:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
