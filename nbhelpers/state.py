"""The run's state file: how separate notebooks and restarted kernels find what a run made.

One JSON file per run under the state directory ($NBHELPERS_STATE_DIR, else ~/.nbhelpers/runs),
plus a `current` file naming the latest run so later notebooks can leave run_id empty. A runtime
that is recycled (Colab) loses that directory, so every save is also mirrored to the run's folder
of the staging bucket, from where a new runtime restores it (`BucketMirror`).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LATEST = "latest"  # the run id that means "my newest run", looked up in the bucket
MIRROR_FILE = "state.json"  # the mirror's name in the run's folder of the bucket
# One try, bounded: the mirror is best effort and must not hold a notebook cell for minutes.
MIRROR_TIMEOUT_S = 20


def state_dir() -> Path:
    configured = os.environ.get("NBHELPERS_STATE_DIR")
    path = Path(configured).expanduser() if configured else Path.home() / ".nbhelpers" / "runs"
    return path.resolve()


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def current_run_id(directory: Path | None = None) -> str | None:
    pointer = (directory or state_dir()) / "current"
    return pointer.read_text().strip() or None if pointer.exists() else None


def run_or_latest() -> str:
    """The run meant when none is named: $NBHELPERS_RUN_ID, else this runtime's current run,
    else LATEST (a recycled runtime has none: the owner's newest run mirrored to the bucket)."""
    return (os.environ.get("NBHELPERS_RUN_ID") or "").strip() or current_run_id() or LATEST


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class BucketMirror:
    """The copy of one run's state in its folder of the staging bucket (`blob_name`), written on
    every save. Mirroring is best effort: the local file stays the working copy, a failure is
    said once and never stops the notebook, and a bucket that does not exist yet (the setup
    notebook connects before it creates it) is waited for quietly."""

    def __init__(self, client: Callable[[], Any], bucket: str, blob_name: str):
        self._client_factory = client
        self._client: Any = None
        self.bucket, self.blob_name = bucket, blob_name
        self.failed_once = False

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.blob_name}"

    def _blob(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client.bucket(self.bucket).blob(self.blob_name)

    def upload(self, text: str) -> bool:
        """Writes `text` to the bucket; False (said once) when it could not."""
        from google.api_core import exceptions

        try:
            self._blob().upload_from_string(text, content_type="application/json",
                                            retry=None, timeout=MIRROR_TIMEOUT_S)
            return True
        except exceptions.NotFound:
            return False  # no bucket yet: the next save tries again
        except (exceptions.GoogleAPIError, OSError, ValueError) as err:
            if not self.failed_once:
                self.failed_once = True
                print(f"Note: could not copy the run state to {self.uri} "
                      f"({type(err).__name__}: {str(err)[:160]}); it stays only on this "
                      "runtime, so a recycled runtime will not find it there (the cleanup "
                      "notebook still finds the run's resources by their labels).", flush=True)
            return False

    def download(self) -> dict[str, Any] | None:
        """The mirrored state, or None when there is none (or it cannot be read)."""
        from google.api_core import exceptions

        try:
            data = json.loads(self._blob().download_as_bytes(retry=None,
                                                             timeout=MIRROR_TIMEOUT_S))
        except (exceptions.GoogleAPIError, OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def is_mirror(blob_name: str, owner_prefix: str) -> bool:
    """Whether a file of the bucket is a run's state mirror (OWNER_PREFIX/RUN/state.json)."""
    rest = blob_name[len(owner_prefix):] if blob_name.startswith(owner_prefix) else ""
    return rest.count("/") == 1 and rest.endswith("/" + MIRROR_FILE)


def latest_mirrored_run(client: Any, bucket: str, owner_prefix: str) -> str | None:
    """The run id of the newest state mirrored under `owner_prefix` (one owner's folder of the
    bucket, `nbhelpers-runs/OWNER/`), by when it was last written; None when there is none."""
    from google.api_core import exceptions

    try:
        blobs = [b for b in client.list_blobs(bucket, prefix=owner_prefix,
                                              timeout=MIRROR_TIMEOUT_S)
                 if is_mirror(b.name, owner_prefix)]
    except (exceptions.GoogleAPIError, OSError):  # no bucket yet, or unreadable: none found
        return None
    if not blobs:
        return None
    newest = max(blobs, key=lambda b: (b.updated, b.name))
    return newest.name[len(owner_prefix):].split("/")[0]


class RunState:
    """A small JSON document of one run; every change is written through at once, to the local
    file and, when a `mirror` is given, to the bucket. With a mirror and no local file (a new
    runtime), the mirrored copy is restored."""

    def __init__(self, run_id: str, directory: Path | None = None, *,
                 mirror: BucketMirror | None = None):
        self.run_id = run_id
        self.directory = directory or state_dir()
        self.path = self.directory / run_id / "state.json"
        self.mirror = mirror
        self.restored_from: str | None = None  # the mirror's URI when restored from it
        self.data: dict[str, Any] = {"run_id": run_id}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
        elif mirror is not None:
            copy = mirror.download()
            if copy is not None and copy.get("run_id") == run_id:
                self.data, self.restored_from = copy, mirror.uri
                _atomic_write(self.path, json.dumps(copy, indent=2, sort_keys=True))

    def save(self) -> None:
        text = json.dumps(self.data, indent=2, sort_keys=True)
        _atomic_write(self.path, text)
        _atomic_write(self.directory / "current", self.run_id + "\n")
        if self.mirror is not None:
            self.mirror.upload(text)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    @property
    def deployments(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("deployments", {})

    def record_deployment(self, key: str, record: dict[str, Any]) -> None:
        self.deployments[key] = record
        self.save()

    def forget_deployment(self, key: str) -> None:
        self.deployments.pop(key, None)
        self.save()
