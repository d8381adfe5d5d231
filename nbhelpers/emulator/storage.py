"""Cloud Storage for the emulator: the PyPI gcp-storage-emulator, with what it leaves out of
Google's behaviour put back: bucket insert honours the requested location and labels (it
answers "US" and drops labels otherwise); object listings come in pages of at most 1,000 with
page tokens; a batch carries at most 100 calls; deleting a bucket that still holds objects is
refused with Google's 409 body. (`bucket.delete(force=True)` refusing more than 256 objects
is the SDK's own client-side check: the server only has to list correctly.) Sources in
docs/google-contract.md."""

from __future__ import annotations

import base64
import json
import socket
from http import HTTPStatus
from pathlib import Path
from typing import Any

MAX_LIST_PAGE = 1000  # objects.list's largest (and default) maxResults
MAX_BATCH_CALLS = 100  # calls Cloud Storage accepts in one batch request
BUCKET_NOT_EMPTY = "The bucket you tried to delete is not empty."


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


def _error(response: Any, status: HTTPStatus, message: str, reason: str) -> None:
    """Google's JSON error body, which the SDK turns into the exception's message."""
    response.status = status
    response.json({"error": {"code": status.value, "message": message, "errors": [
        {"domain": "global", "reason": reason, "message": message}]}})


def _paged(list_objects: Any) -> Any:
    def list_objects_in_pages(request: Any, response: Any, storage: Any, *args: Any,
                              **kwargs: Any) -> Any:
        result = list_objects(request, response, storage, *args, **kwargs)
        if response.status != HTTPStatus.OK:
            return result
        listing = json.loads(response._content)
        query = request.query
        try:
            size = min(int((query.get("maxResults") or [MAX_LIST_PAGE])[0]), MAX_LIST_PAGE)
        except ValueError:
            return _error(response, HTTPStatus.BAD_REQUEST, "Invalid maxResults.", "invalid")
        items = sorted(listing.get("items") or [], key=lambda item: item["name"])
        token = (query.get("pageToken") or [""])[0]
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else None
        if after is not None:
            items = [item for item in items if item["name"] > after]
            listing.pop("prefixes", None)  # the first page carried them
        page = items[:max(size, 1)]
        listing["items"] = page
        if len(items) > len(page):
            listing["nextPageToken"] = base64.urlsafe_b64encode(
                page[-1]["name"].encode()).decode()
        response.json(listing)
        return result

    list_objects_in_pages.wrapped = list_objects  # type: ignore[attr-defined]
    return list_objects_in_pages


def _at_most_100_calls(batch: Any) -> Any:
    def batch_of_at_most_100(request: Any, response: Any, storage: Any, *args: Any,
                             **kwargs: Any) -> Any:
        calls = len(request.data or [])
        if calls > MAX_BATCH_CALLS:
            return _error(response, HTTPStatus.BAD_REQUEST,
                          f"A batch request may carry at most {MAX_BATCH_CALLS} calls; this "
                          f"one carries {calls}.", "invalid")
        storage.batch_calls = [*getattr(storage, "batch_calls", []), calls]
        return batch(request, response, storage, *args, **kwargs)

    batch_of_at_most_100.wrapped = batch  # type: ignore[attr-defined]
    return batch_of_at_most_100


def _refuse_if_not_empty(delete: Any) -> Any:
    def delete_empty_bucket(request: Any, response: Any, storage: Any, *args: Any,
                            **kwargs: Any) -> Any:
        result = delete(request, response, storage, *args, **kwargs)
        if response.status == HTTPStatus.CONFLICT:
            _error(response, HTTPStatus.CONFLICT, BUCKET_NOT_EMPTY, "conflict")
        return result

    delete_empty_bucket.wrapped = delete  # type: ignore[attr-defined]
    return delete_empty_bucket


def _patch_handlers() -> None:
    """Wraps the library's handlers once (a second start finds them wrapped)."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import buckets, objects

    wrappers = {(server.POST, buckets.insert): _honour_request,
                (server.GET, objects.ls): _paged,
                (server.POST, objects.batch): _at_most_100_calls,
                (server.DELETE, buckets.delete): _refuse_if_not_empty}
    for _, methods in server.HANDLERS:
        for method, handler in list(methods.items()):
            wrap = wrappers.get((method, handler))
            if wrap is not None:
                methods[method] = wrap(handler)


def batch_calls(storage_server: Any) -> list[int]:
    """How many calls each batch request served so far carried (for tests)."""
    return list(getattr(storage_server._storage, "batch_calls", []))


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
