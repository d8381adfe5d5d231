"""The vLLM server's command line as the container runs it: the options of vLLM 0.6-0.9 that the
Model Garden notebooks use, with their types, and a parser that reads arguments the way vLLM's
argparse does (same refusals, same wording). A fact table: imports nothing of ours.

The client checks its own container arguments with it before any cloud call; the emulator's
start-up model parses a deployed container's arguments with it."""

from __future__ import annotations

from typing import Any

API_SERVER = "vllm.entrypoints.api_server"  # what the Model Garden images start
OPENAI_SERVER = "vllm.entrypoints.openai.api_server"
SERVER_MODULES = (API_SERVER, OPENAI_SERVER)
PROG = "api_server.py"
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
DEFAULT_SWAP_SPACE_GIB = 4.0  # vLLM's default --swap-space
_FLAG = object()  # takes no value
_OPTIONAL_BOOL = object()  # `--flag` or `--flag=true/false`

OPTIONS: dict[str, Any] = {
    "host": str, "port": int, "model": str, "tokenizer": str, "revision": str,
    "served-model-name": str, "download-dir": str, "load-format": str, "seed": int,
    "tensor-parallel-size": int, "pipeline-parallel-size": int, "swap-space": float,
    "gpu-memory-utilization": float, "max-model-len": int, "max-num-seqs": int,
    "max-num-batched-tokens": int, "max-seq-len-to-capture": int, "block-size": int,
    "kv-cache-dtype": KV_CACHE_DTYPES, "dtype": DTYPES, "quantization": str,
    "cpu-offload-gb": float, "max-logprobs": int, "limit-mm-per-prompt": str,
    "chat-template": str, "tool-call-parser": str, "distributed-executor-backend": str,
    "max-loras": int, "max-lora-rank": int, "max-cpu-loras": int,
    "enforce-eager": _FLAG, "disable-log-stats": _FLAG, "disable-log-requests": _FLAG,
    "enable-prefix-caching": _FLAG, "enable-lora": _FLAG, "trust-remote-code": _FLAG,
    "enable-auto-tool-choice": _FLAG, "disable-custom-all-reduce": _FLAG,
    "enable-chunked-prefill": _OPTIONAL_BOOL,
}  # fmt: skip
# Options only Google's Model Garden images take (their vLLM is Google's fork), with their
# types; `releases.Release.google_flags` says which image takes which. The value of the
# `vertex-llama-3` tool-call parser is one of them: upstream vLLM's is `llama3_json`.
GOOGLE_OPTIONS: dict[str, Any] = {
    "model-type": str,
    "host-prefix-kv-cache-utilization-target": float,  # [0, 1): idle host memory for the cache
    "host-prefix-kv-cache-min-len": int,
}
GOOGLE_TOOL_PARSER = "vertex-llama-3"

# What each option the deployment plans set does, in a sentence a notebook prints under the
# plan (`explain_args`): the one place these explanations are written.
EXPLANATIONS: dict[str, str] = {
    "host": "address the server listens on inside the container (0.0.0.0: every interface)",
    "port": "port the server listens on; Vertex AI sends predict and health requests there",
    "model": "weights to load: a Hugging Face repository id, or a gs:// copy the image's "
             "launcher downloads first",
    "tensor-parallel-size": "GPUs each layer is split across; the machine's GPU count, so the "
                            "weights and KV cache are shared among them",
    "swap-space": "GiB of CPU memory per GPU for KV blocks of preempted sequences",
    "gpu-memory-utilization": "share of each GPU's memory vLLM may take for weights, activations "
                              "and KV cache; lower it if something else needs the GPU, raise it "
                              "(0.95) for a longer max_model_len",
    "max-model-len": "longest sequence (prompt + generated tokens) a request may reach; the KV "
                     "cache must hold at least one such sequence or vLLM refuses to start",
    "max-num-seqs": "sequences decoded together at most; each reserves room in the profile run "
                    "(an image each for Llama 3.2 Vision, hence 12 there)",
    "kv-cache-dtype": "storage type of the KV cache; fp8 halves it and doubles the tokens it holds",
    "disable-log-stats": "no periodic throughput lines in the logs (they bury the errors)",
    "enforce-eager": "run PyTorch eagerly, without CUDA graphs: slower decoding, but no graph "
                     "capture memory (the tutorial's setting for Llama 3.2 Vision)",
    "enable-prefix-caching": "reuse the KV cache of a prompt prefix seen before (system prompts)",
    "enable-lora": "serve LoRA adapters named per request (the predict route's dynamic-lora)",
    "max-loras": "LoRA adapters in one batch at most",
    "max-lora-rank": "highest adapter rank accepted; memory is reserved for it",
    "max-cpu-loras": "LoRA adapters kept in CPU memory at most (at least max-loras)",
    "chat-template": "Jinja template that turns chat messages into the prompt, replacing the "
                     "tokenizer's own (base models have none)",
    "enable-auto-tool-choice": "let the model decide to call a tool (tool_choice \"auto\")",
    "tool-call-parser": "how tool calls are read back from the generated text",
    "quantization": "quantization method of the weights (fp8 halves them)",
    "dtype": "data type of weights and activations (auto: the checkpoint's)",
    "enable-chunked-prefill": "split long prompts into chunks batched with decoding",
    "max-num-batched-tokens": "tokens processed in one forward pass at most",
    "limit-mm-per-prompt": "images (or other media) one prompt may carry",
    "seed": "seed of the random sampling",
    "trust-remote-code": "run Python code shipped with the model repository",
    "host-prefix-kv-cache-utilization-target": "Google's images: share of idle host memory used "
                                               "as a prefix KV cache",
    "host-prefix-kv-cache-min-len": "Google's images: shortest prefix kept in the host cache",
    "model-type": "Google's images: the model family the launcher prepares for",
}


def explain_args(args: list[str]) -> str:
    """One line per option of a server command line: the option as given and what it does;
    options without an explanation are said to have none here, not skipped."""
    lines = []
    for token in args:
        if not token.startswith("--"):
            continue
        name = token[2:].partition("=")[0].replace("_", "-")
        what = EXPLANATIONS.get(name, "(no explanation here: see vLLM's engine arguments)")
        lines.append(f"  {token}: {what}")
    return "\n".join(lines)
GOOGLE_TOOL_PARSER_FLAG = f"tool-call-parser={GOOGLE_TOOL_PARSER}"


class ArgsError(Exception):
    """The server would exit while parsing its arguments; `lines` are what it prints."""

    def __init__(self, lines: list[str]):
        super().__init__(lines[-1] if lines else "bad arguments")
        self.lines = lines


def parse(args: list[str], *, strict: bool = True,
          google_flags: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """Parses `python -m <vLLM server module> --option ...` into {option: value}; raises
    ArgsError with argparse's own lines for what vLLM would refuse. With `strict=False` it reads
    what it can and skips what vLLM would refuse (for reading settings, not for checking).
    `google_flags` are the Google-only options the image takes (GOOGLE_OPTIONS names, and
    GOOGLE_TOOL_PARSER_FLAG for the `vertex-llama-3` parser); without them they are unknown."""
    options = {**OPTIONS, **{name: kind for name, kind in GOOGLE_OPTIONS.items()
                             if name in google_flags or not strict}}
    usage = f"usage: {PROG} [-h] [--host HOST] [--port PORT] [--model MODEL] ..."
    if len(args) < 3 or args[:2] != ["python", "-m"]:
        if not strict:
            return {}
        raise ArgsError([f"container args must start with 'python -m {SERVER_MODULES[0]}', "
                         f"got {args[:3]!r}"])
    if args[2] not in SERVER_MODULES and strict:
        raise ArgsError([f"/usr/bin/python: No module named {args[2]}"])
    values: dict[str, Any] = {}
    unknown: list[str] = []
    rest = list(args[3:])

    def refuse(name: str, message: str) -> None:
        if strict:
            raise ArgsError([usage, f"{PROG}: error: argument --{name}: {message}"])

    while rest:
        token = rest.pop(0)
        name, has_value, value = token[2:].partition("=")
        name = name.replace("_", "-")
        kind = options.get(name) if token.startswith("--") else None
        if kind is None:
            unknown.append(token)
        elif kind is _FLAG:
            if has_value:
                refuse(name, f"ignored explicit argument {value!r}")
            else:
                values[name] = True
        elif kind is _OPTIONAL_BOOL:
            values[name] = (value.lower() in ("1", "true", "yes")) if has_value else True
        else:
            if not has_value:
                if not rest or rest[0].startswith("--"):
                    refuse(name, "expected one argument")
                    continue
                value = rest.pop(0)
            if isinstance(kind, tuple):
                if value in kind:
                    values[name] = value
                else:
                    allowed = ", ".join(repr(c) for c in kind)
                    refuse(name, f"invalid choice: {value!r} (choose from {allowed})")
                continue
            try:
                values[name] = kind(value)
            except ValueError:
                refuse(name, f"invalid {kind.__name__} value: {value!r}")
                continue
            if name == "tool-call-parser" and value == GOOGLE_TOOL_PARSER \
                    and GOOGLE_TOOL_PARSER_FLAG not in google_flags:
                refuse(name, f"invalid tool call parser: {value} (Google's parser, not in "
                             "upstream vLLM; upstream's for Llama 3.1/3.2 is llama3_json)")
                values.pop(name, None)
    if unknown and strict:
        raise ArgsError([usage, f"{PROG}: error: unrecognized arguments: {' '.join(unknown)}"])
    return values
