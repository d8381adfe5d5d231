"""Cloud Storage for the emulator: the PyPI gcp-storage-emulator, with bucket insert made to
honour the requested location and labels (it answers "US" and drops labels otherwise)."""

from __future__ import annotations

import socket
from http import HTTPStatus
from pathlib import Path
from typing import Any


def _honour_request(insert: Any) -> Any:
    def insert_honouring_request(request: Any, response: Any, storage: Any, *args: Any,
                             **kwargs: Any) -> Any:
        result = insert(request, response, storage, *args, **kwargs)
        name, location = request.data.get("name"), request.data.get("location")
        bucket = storage.buckets.get(name)
        if bucket and response.status != HTTPStatus.CONFLICT:
            if location:
                bucket["location"] = location.upper()
                bucket["locationType"] = "region" if "-" in location else "multi-region"
            if request.data.get("labels"):
                bucket["labels"] = dict(request.data["labels"])
            storage._write_config_to_file()  # the library's own persistence
        return result

    insert_honouring_request.wrapped = insert  # type: ignore[attr-defined]
    return insert_honouring_request


def _patch_handlers() -> None:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import buckets

    for _, methods in server.HANDLERS:
        post = methods.get(server.POST)
        if post is buckets.insert:
            methods[server.POST] = _honour_request(post)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_storage(host: str = "127.0.0.1", port: int = 0, *, data_dir: Path | None = None,
                  project_number: str | None = None) -> tuple[Any, str]:
    """Starts the storage emulator in this process; returns (server, URL)."""
    from gcp_storage_emulator.server import create_server

    _patch_handlers()
    port = port or _free_port(host)
    server = create_server(host, port, in_memory=data_dir is None,
                           data_dir=str(data_dir.resolve()) if data_dir else None,
                           project_number=project_number)
    server.start()
    return server, f"http://{host}:{port}"
