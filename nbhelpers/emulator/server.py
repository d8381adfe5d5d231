"""The emulator's HTTP server: one module per Google service (see ../shared/docs/
vertex-rest-contract.md for the Vertex AI REST surface), composed here into one route table and
served on 127.0.0.1, with an HTTPS listener for dedicated endpoints."""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nbhelpers.emulator.batch_prediction import BatchPrediction
from nbhelpers.emulator.cloud_logging import CloudLogging
from nbhelpers.emulator.common import ApiError, State
from nbhelpers.emulator.controls import Controls
from nbhelpers.emulator.deployments import Deployments
from nbhelpers.emulator.httpbase import JsonHandler, Server
from nbhelpers.emulator.huggingface import HubReply, HuggingFaceHub
from nbhelpers.emulator.identity import TokenInfo
from nbhelpers.emulator.model_garden import ModelGarden
from nbhelpers.emulator.operations import Operations
from nbhelpers.emulator.quotas import Quotas
from nbhelpers.emulator.replica import Replica
from nbhelpers.emulator.secret_manager import SecretManager
from nbhelpers.emulator.serving import Proxy, Serving
from nbhelpers.emulator.setup_apis import SetupApis
from nbhelpers.emulator.vertex_ai import VertexAI


class VertexEmulator:
    """The HTTP server and the services behind it. `deploy_seconds` is how long a deployment
    takes before it is ready (real ones take up to an hour); `engine` is what replicas answer
    from: "rehearsal", or "vllm" for the real vLLM server on a tiny model (`vllm_engine`)."""

    def __init__(self, state_file: str | Path | None = None, deploy_seconds: float = 0.5,
                 service_seconds: float = 0.0, engine: str = "rehearsal"):
        self.state = State(Path(state_file) if state_file else None)
        self.operations = Operations(self.state)
        self.logging = CloudLogging(self.state)
        self.quotas = Quotas(self.state)
        self.deployments = Deployments(self.state, self.operations, self.logging,
                                       deploy_seconds=deploy_seconds,
                                       service_seconds=service_seconds, engine=engine)
        self.vertex_ai = VertexAI(self.state, self.operations, busy=self.deployments.busy)
        self.serving = Serving(self.state, self.deployments.replicas)
        self.setup_apis = SetupApis(self.state, self.operations)
        self.token_info = TokenInfo(self.serving.expired_tokens)
        self.secret_manager = SecretManager(self.state)
        self.model_garden = ModelGarden(self.state, self.operations, self.vertex_ai,
                                        self.deployments)
        self.huggingface = HuggingFaceHub(self.state)
        self.batch_prediction = BatchPrediction(self.state, self.operations, self.logging,
                                                self.deployments, lambda: self.storage_url)
        self.controls = Controls(deployments=self.deployments, serving=self.serving,
                                 quotas=self.quotas, logging=self.logging,
                                 describe=self._describe)
        self._server: Server | None = None
        self._tls_server: Server | None = None
        self.ca_file: str | None = None
        self.storage_url: str | None = None
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [
            (method, re.compile(pattern + r"$"), func)
            for service in (self.vertex_ai, self.deployments, self.serving, self.operations,
                            self.setup_apis, self.quotas, self.logging, self.controls,
                            self.token_info, self.secret_manager, self.huggingface,
                            self.model_garden, self.batch_prediction)
            for method, pattern, func in service.routes()]
        self.deployments.restart_replicas()

    # Settings and state the tests read or change at run time, kept by the services.
    @property
    def deploy_seconds(self) -> float:
        return self.deployments.deploy_seconds

    @deploy_seconds.setter
    def deploy_seconds(self, value: float) -> None:
        self.deployments.deploy_seconds = value

    @property
    def service_seconds(self) -> float:
        return self.deployments.service_seconds

    @service_seconds.setter
    def service_seconds(self, value: float) -> None:
        self.deployments.service_seconds = value

    @property
    def replicas(self) -> dict[str, Replica]:
        return self.deployments.replicas

    @property
    def dedicated_dns(self) -> str | None:
        return self.vertex_ai.dedicated_dns

    def _describe(self) -> dict[str, Any]:
        """What clients need to reach the emulator's other listeners (/emulator/info)."""
        return {"storage_url": self.storage_url, "ca_file": self.ca_file,
                "dedicated_dns": self.dedicated_dns}

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0,
              tls_dir: Path | None = None) -> VertexEmulator:
        """Serves HTTP on (host, port); with `tls_dir`, also HTTPS on 127.0.0.1 for dedicated
        endpoints, with a self-signed certificate kept in that folder."""
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._server = Server((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="vertex-emulator").start()
        if tls_dir is not None:
            from nbhelpers.emulator.tls import make_certificate, server_context

            class DedicatedHandler(_Handler):
                owner = emulator
                dedicated_host = True  # this listener stands in for dedicated DNS names

                def setup(self) -> None:
                    # The TLS handshake runs in the connection's own thread: done in accept(),
                    # it would make every new client wait for all the handshakes before it.
                    self.request.do_handshake()
                    super().setup()

            cert, key = make_certificate(tls_dir)
            self._tls_server = Server(("127.0.0.1", 0), DedicatedHandler)
            self._tls_server.socket = server_context(cert, key).wrap_socket(
                self._tls_server.socket, server_side=True, do_handshake_on_connect=False)
            threading.Thread(target=self._tls_server.serve_forever, daemon=True,
                             name="vertex-emulator-tls").start()
            self.ca_file = str(cert)
            self.vertex_ai.serve_dedicated_at(f"127.0.0.1:{self._tls_server.server_address[1]}")
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        return self._server.url

    def stop(self) -> None:
        self.deployments.stop_replicas()
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._server = self._tls_server = None


class _Handler(JsonHandler):
    owner: VertexEmulator
    # Whether requests arrive through a dedicated endpoint's DNS name (the HTTPS listener) or
    # the shared regional host: serving refuses an endpoint called through the wrong one.
    dedicated_host = False

    def _dispatch(self, method: str) -> None:
        """Runs the first route that matches, and replies with its JSON, its error in Google's
        shape, or the replica's response streamed through."""
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
            for route_method, pattern, func in self.owner.routes:
                match = pattern.match(path)
                if match and route_method == method:
                    result = func(body, query=query, raw_length=len(raw),
                                  headers=self.headers, dedicated_host=self.dedicated_host,
                                  **match.groupdict())
                    break
            else:
                raise ApiError(404, f"The requested URL {path} was not found on this server "
                               "(nbhelpers emulator).")
        except ApiError as err:
            return self.send_json(err.http_status, {"error": {
                "code": err.http_status, "message": err.message, "status": err.status}})
        except json.JSONDecodeError as err:
            return self.send_json(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                                   "message": f"Invalid JSON payload: {err}"}})
        if isinstance(result, Proxy):
            return self._proxy(result)
        if isinstance(result, HubReply):  # the Hugging Face Hub's own error headers
            return result.send(self)
        self.send_json(200, result)

    def _proxy(self, proxy: Proxy) -> None:
        """Passes the replica's answer through: JSON whole, server-sent events as they come, in
        HTTP/1.1 chunks so the client's (TLS) connection stays open for its next request."""
        parts = urlsplit(proxy.url)
        upstream = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                              timeout=120)
        try:
            upstream.request("POST", parts.path, json.dumps(proxy.body).encode(),
                             {"Content-Type": "application/json"})
            response = upstream.getresponse()
            content_type = response.getheader("Content-Type", "application/json")
            self.send_response(response.status)
            self.send_header("Content-Type", content_type)
            if not content_type.startswith("text/event-stream"):
                data = response.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while data := response.read1(65536):  # what has arrived, not line by line
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        finally:
            upstream.close()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # update_mask writes: labels on endpoints and models
        self._dispatch("PATCH")
