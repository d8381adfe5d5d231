"""A local stand-in for Vertex AI, Cloud Storage and the setup APIs, spoken to over HTTP by the
unmodified Google SDKs. Nothing it serves is a real Llama: replies come from a rehearsal engine,
or (engine "vllm") from the real vLLM server on a tiny random-weight model."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbhelpers.emulator.server import VertexEmulator


@dataclass
class RunningEmulator:
    vertex: VertexEmulator
    storage: Any  # gcp_storage_emulator server, or None

    @property
    def url(self) -> str:
        return self.vertex.url

    @property
    def storage_url(self) -> str | None:
        return self.vertex.storage_url

    def stop(self) -> None:
        self.vertex.stop()
        if self.storage is not None:
            self.storage.stop()


def start(
    host: str = "127.0.0.1",
    port: int = 0,
    state_file: str | Path | None = None,
    *,
    storage: bool = True,
    deploy_seconds: float | None = None,
    service_seconds: float = 0.0,
    engine: str | None = None,
) -> RunningEmulator:
    """Starts the emulator in this process (threads); with `state_file`, resources persist so
    other processes and restarted kernels see them. `engine` is what replicas answer from:
    "rehearsal" (the default) or "vllm" (the real vLLM server on a tiny model, installed in
    .venv-vllm); None reads NBHELPERS_ENGINE."""
    from nbhelpers.emulator.vllm_engine import configured_engine

    engine = configured_engine(engine)
    if deploy_seconds is None:
        deploy_seconds = float(os.environ.get("NBHELPERS_EMULATOR_DEPLOY_SECONDS", "0.5"))
    tls_dir = Path(state_file).parent if state_file else Path(tempfile.mkdtemp(prefix="nbh-"))
    vertex = VertexEmulator(state_file, deploy_seconds=deploy_seconds,
                            service_seconds=service_seconds, engine=engine).start(host, port,
                                                                                  tls_dir)
    storage_server = None
    if storage:
        from nbhelpers.emulator.storage import start_storage

        data_dir = Path(state_file).with_suffix(".storage") if state_file else None
        storage_server, vertex.storage_url = start_storage(host, 0, data_dir=data_dir)
    return RunningEmulator(vertex, storage_server)


__all__ = ["RunningEmulator", "VertexEmulator", "start"]
