"""The emulator's HTTP server: one module per Google service (see ../shared/docs/
vertex-rest-contract.md for the Vertex AI REST surface), composed here into one route table and
served on 127.0.0.1, with an HTTPS listener of its own for each dedicated endpoint (its
"dedicated DNS name": Google routes a dedicated endpoint's calls by that name)."""

from __future__ import annotations

import http.client
import json
import re
import ssl
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
from nbhelpers.emulator.serving import Proxy, Serving, deadline_exceeded
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
        self._tls_context: ssl.SSLContext | None = None
        self._dedicated_servers: dict[str, Server] = {}  # endpoint name -> its own listener
        self._dedicated_lock = threading.Lock()
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
    def replicas(self) -> dict[str, list[Replica]]:
        return self.deployments.replicas

    def dedicated_addresses(self) -> dict[str, str]:
        """Each dedicated endpoint's listener ("127.0.0.1:PORT"), by endpoint name."""
        with self._dedicated_lock:
            return {name: f"127.0.0.1:{server.server_address[1]}"
                    for name, server in self._dedicated_servers.items()}

    def _describe(self) -> dict[str, Any]:
        """What clients need to reach the emulator's other listeners (/emulator/info)."""
        return {"storage_url": self.storage_url, "ca_file": self.ca_file,
                "dedicated_endpoints": self.dedicated_addresses()}

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

            cert, key = make_certificate(tls_dir)
            self._tls_context = server_context(cert, key)
            self.ca_file = str(cert)
            self.vertex_ai.serve_dedicated_with(self._open_dedicated, self._close_dedicated)
        return self

    def _open_dedicated(self, endpoint_name: str) -> str:
        """Opens the HTTPS listener that stands in for one dedicated endpoint's DNS name (one
        certificate for 127.0.0.1 serves every port); returns its address."""
        assert self._tls_context is not None, "dedicated endpoints need the TLS folder"
        emulator = self

        class DedicatedHandler(_Handler):
            owner = emulator
            dedicated_host = endpoint_name  # the one endpoint this address serves

            def setup(self) -> None:
                # The TLS handshake runs in the connection's own thread: done in accept(),
                # it would make every new client wait for all the handshakes before it.
                self.request.do_handshake()
                super().setup()

        server = Server(("127.0.0.1", 0), DedicatedHandler)
        server.socket = self._tls_context.wrap_socket(server.socket, server_side=True,
                                                      do_handshake_on_connect=False)
        with self._dedicated_lock:
            previous = self._dedicated_servers.pop(endpoint_name, None)
            self._dedicated_servers[endpoint_name] = server
        if previous is not None:
            _close_servers([previous])
        threading.Thread(target=server.serve_forever, daemon=True,
                         name=f"vertex-emulator-dedicated-{endpoint_name.split('/')[-1]}").start()
        return f"127.0.0.1:{server.server_address[1]}"

    def _close_dedicated(self, endpoint_name: str) -> None:
        """Closes a deleted endpoint's listener, without waiting (shutdown() waits for the
        listener's next poll, up to half a second, which cleanup of many endpoints would pay)."""
        with self._dedicated_lock:
            server = self._dedicated_servers.pop(endpoint_name, None)
        if server is not None:
            threading.Thread(target=_close_servers, args=([server],), daemon=True).start()

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        return self._server.url

    def stop(self) -> None:
        self.deployments.stop_replicas()
        with self._dedicated_lock:
            servers = list(self._dedicated_servers.values())
            self._dedicated_servers.clear()
        _close_servers([*servers, *([self._server] if self._server else [])])
        self._server = None


def _close_servers(servers: list[Server]) -> None:
    """Stops listeners together: each shutdown() waits for its own poll (0.5 s), so one at a
    time would add up."""
    stoppers = [threading.Thread(target=server.shutdown, daemon=True) for server in servers]
    for thread in stoppers:
        thread.start()
    for thread, server in zip(stoppers, servers, strict=True):
        thread.join()
        server.server_close()


class _Handler(JsonHandler):
    owner: VertexEmulator
    # The endpoint whose dedicated DNS name (its own HTTPS listener) the requests arrive
    # through, or None for the shared regional host: serving refuses an endpoint called
    # through another's name or through the wrong kind of host.
    dedicated_host: str | None = None

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
        # The endpoint's inference timeout bounds the wait for the replica (and each pause
        # of a stream); past it the front end answers 504, as for :predict (serving.py).
        upstream = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                              timeout=proxy.timeout_s)
        try:
            try:
                upstream.request("POST", parts.path, json.dumps(proxy.body).encode(),
                                 {"Content-Type": "application/json"})
                response = upstream.getresponse()
                content_type = response.getheader("Content-Type", "application/json")
                streamed = content_type.startswith("text/event-stream")
                data = b"" if streamed else response.read()
            except TimeoutError:
                err = deadline_exceeded(proxy.timeout_s)
                return self.send_json(err.http_status, {"error": {
                    "code": err.http_status, "message": err.message, "status": err.status}})
            self.send_response(response.status)
            self.send_header("Content-Type", content_type)
            if not streamed:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while data := response.read1(65536):  # what has arrived, not line by line
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            except TimeoutError:  # stalled past the timeout: cut off, not a clean end
                self.close_connection = True
                return
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
