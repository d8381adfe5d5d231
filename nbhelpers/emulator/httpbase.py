"""What the emulator's HTTP servers share: quiet request handling and JSON replies."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class JsonHandler(BaseHTTPRequestHandler):
    # Keep-alive: every reply carries Content-Length or closes the connection, so clients (and
    # the emulator's own hop to a replica) reuse connections instead of opening one per request.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms stalls

    def log_message(self, *args: Any) -> None:  # the emulator keeps its own logs
        pass

    def send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    """A thread per connection; a deep listen queue so bursts of clients are not dropped
    (the standard library's default backlog is 5)."""

    daemon_threads = True
    request_queue_size = 1024

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        """Looks for a shutdown every 50 ms (the standard library's 0.5 s made every replica
        stop, on undeploy and at the end of each test, wait that long)."""
        super().serve_forever(poll_interval)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up first (the front's 504 after an endpoint's inference timeout,
        a cancelled stream) is normal here: say nothing; anything else keeps the traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"


class ConnectionPool:
    """One kept-alive HTTP connection per thread and host, for the emulator's hop to replicas."""

    def __init__(self) -> None:
        self._local = threading.local()

    def post_json(self, url: str, body: Any, timeout: float = 120) -> tuple[int, Any]:
        parts = urlsplit(url)
        connections = self._local.__dict__.setdefault("connections", {})
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        for attempt in (1, 2):  # a kept connection may have been closed by the server
            connection = connections.get(parts.netloc)
            if connection is None:
                connection = connections[parts.netloc] = http.client.HTTPConnection(
                    parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
            try:
                connection.request("POST", parts.path, data, headers)
                response = connection.getresponse()
                payload = response.read()
                if response.will_close:
                    connection.close()
                    connections.pop(parts.netloc, None)
                return response.status, json.loads(payload or b"{}")
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                connections.pop(parts.netloc, None)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
