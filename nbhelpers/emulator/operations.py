"""Long-running operations, as every Google service that changes resources returns them: the
client polls `GET .../operations/{id}` until `done`, then reads `response` or `error`."""

from __future__ import annotations

from typing import Any

from nbhelpers.emulator.common import ApiError, Route, State


class Operations:
    """The operations store, kept in the state file under "operations"."""

    def __init__(self, state: State):
        self.state = state

    def routes(self) -> list[Route]:
        return [("GET", r"/(?:v1|v1beta1|ui)/(?P<name>(?:.+/)?operations/[^/]+)", self.get),
                ("GET", r"/(?:v1|v1beta1|ui)/(?P<resource>projects/[^:]+?/(?:endpoints|models)/"
                        r"[^/:]+)/operations", self.list)]

    def create(self, resource: str, response: dict[str, Any] | None = None, *,
               done: bool = True, error: dict[str, Any] | None = None,
               metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """An operation named under `resource` ("" for a global one, as Service Usage's)."""
        prefix = f"{resource}/" if resource else ""
        op: dict[str, Any] = {"name": f"{prefix}operations/{self.state.next_id()}",
                              "done": done}
        if metadata is not None:
            op["metadata"] = metadata
        if response is not None and done:
            op["response"] = response
        if error is not None:
            op["error"] = error
        with self.state.lock:
            self.state.data["operations"][op["name"]] = op
            self.state.save()
        return op

    def finish(self, name: str, *, response: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None) -> None:
        """Marks an operation done, with its error if it failed, else its response."""
        with self.state.lock:
            op = self.state.data["operations"][name]
            if error:
                op.update(done=True, error=error)
            else:
                op.update(done=True, response=response)
            self.state.save()

    def pending(self, resource: str) -> list[str]:
        """The names of `resource`'s operations that are not done."""
        return [name for name, op in self.state.data["operations"].items()
                if name.startswith(resource + "/operations/") and not op["done"]]

    def list(self, body: dict[str, Any], resource: str, **_: Any) -> dict[str, Any]:
        """ListOperations on a resource (no filter: the client reads `done` and `metadata`)."""
        found = [op for name, op in self.state.data["operations"].items()
                 if name.startswith(resource.replace("/ui/", "/") + "/operations/")]
        return {"operations": found} if found else {}

    def get(self, body: dict[str, Any], name: str, **_: Any) -> dict[str, Any]:
        operation = self.state.data["operations"].get(name)
        if operation is None:
            raise ApiError(404, f"Operation {name!r} not found.")
        return operation
