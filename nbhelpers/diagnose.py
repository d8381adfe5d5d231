"""Name the cause of a failed deployment or request from its text, show the line that proves it,
and give the setting to change.

`diagnose_text` reads any log or error text (vLLM V0 and V1 wordings, Python tracebacks, Vertex AI
API errors, Hugging Face errors). When several signals appear, the root cause wins: an OOM or a
gated repository, not the "model server exited" that follows it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from nbhelpers import checks
from nbhelpers.limits import LOG_RETENTION_DAYS

KINDS = ("oom", "max_model_len", "hf_auth", "chat_template", "quota", "timeout",
         "unsupported_model", "bad_request", "other")


@dataclass(frozen=True, kw_only=True)
class Rule:
    kind: str
    patterns: tuple[str, ...]
    explanation: str
    fix: str


# In priority order: the first kind with a matching line is the root cause.
RULES: tuple[Rule, ...] = (
    Rule(kind="hf_auth", patterns=(
        r"GatedRepoError", r"gated repo", r"Cannot access gated repo",
        r"40[13] Client Error.*huggingface\.co", r"huggingface\.co.*40[13] Client Error",
        r"Forbidden for url: https://huggingface\.co", r"Invalid (user )?token",
        r"is restricted\. You must", r"Repository Not Found for url: https://huggingface",
    ),
        explanation=
        "The container could not download the weights from Hugging Face: the repository is "
        "gated and the token is missing, wrong, or has not been granted access.",
        fix=
        "Accept the licence on the model's Hugging Face page with the account that owns the "
        "token, then set HF_TOKEN to a token with read access (never as a parameter); or deploy "
        "the Model Garden copy by setting WEIGHTS_URI to its gs:// path."),
    Rule(kind="unsupported_model", patterns=(
        r"[Mm]odel architectures? \[.*\] (are|is) not supported",
        r"are not supported for now", r"[Uu]nrecognized model in",
        r"model type `?\w+`? (is )?not (recognized|supported)",
        r"is not supported by (this version of )?vLLM",
    ),
        explanation=
        "The vLLM inside the container does not support this model's architecture (or could "
        "not import it).",
        fix=
        "Use a container tag whose vLLM supports the model (Llama 3.2 Vision needs vLLM "
        "0.6.2-0.10.x), or a model from the catalog."),
    Rule(kind="quota", patterns=(
        r"quota metrics exceed quota limits", r"[Qq]uota exceeded", r"quotas are exceeded",
        r"exceeds? (the )?quota", r"Rate of traffic exceeds (serving )?capacity",
        r"custom_model_serving_\w+", r"CustomModelServing\w+PerProjectPerRegion",
    ),
        explanation=
        "The project has no quota left for these GPUs (or this request rate) in this region.",
        fix=
        "Request more 'Custom model serving' GPU quota for this accelerator and region "
        "(IAM & Admin > Quotas), deploy to a region or GPU type with quota, or use fewer GPUs. "
        "For a 429 on traffic, retry with backoff (predict_many does) or add replicas."),
    Rule(kind="oom", patterns=(
        r"OutOfMemoryError", r"CUDA out of memory", r"CUDA error: out of memory",
        r"No available memory for the cache blocks", r"\bOOM\b", r"out of memory",
    ),
        explanation=
        "The GPU ran out of memory while vLLM loaded the weights, profiled activations or "
        "captured CUDA graphs.",
        fix=
        "Lower max_num_seqs (Llama 3.2 Vision: 12-16) and max_model_len, set enforce_eager to "
        "skip CUDA graphs, or use more or larger GPUs (tensor_parallel_size = GPU count)."),
    Rule(kind="max_model_len", patterns=(
        r"max seq len \(\d+\) is larger than the maximum number of tokens that can be stored "
        r"in KV cache",
        r"To serve at least one request with the models?'s max seq len",
        r"estimated maximum model length is \d+",
        r"larger than the available KV cache memory",
        r"is greater than the derived max_model_len",
    ),
        explanation=
        "The KV cache left after the weights cannot hold even one sequence of max_model_len "
        "tokens.",
        fix=
        "Lower max_model_len to what the KV cache holds (below), raise gpu_memory_utilization "
        "a little (0.9 -> 0.95), or use more or larger GPUs."),
    Rule(kind="chat_template", patterns=(
        r"default chat template is no longer allowed", r"chat_template is not set",
        r"ChatTemplateResolutionError", r"does not define one", r"no chat template",
    ),
        explanation=
        "Chat completions need a chat template, and base (non-Instruct) Llama models have none.",
        fix=
        "Deploy the Instruct variant for chat, or send a plain prompt through predict()."),
    Rule(kind="bad_request", patterns=(
        r"maximum context length is \d+ tokens", r"max_tokens must be at least",
        r"is too long and exceeds limit", r"Request payload size exceeds the limit",
        r"At most \d+ image\(s\) may be provided", r"\b400\b.*INVALID_ARGUMENT",
        r"InvalidArgument: 400", r"Invalid JSON payload",
    ),
        explanation=
        "The server refused this request as malformed or too large; the deployment is fine.",
        fix=
        "Shorten the prompt or lower max_tokens so prompt + completion fit max_model_len; keep "
        "predict payloads under 1.5 MB (smaller images); send one image per request."),
    Rule(kind="timeout", patterns=(
        r"DEADLINE_EXCEEDED", r"Deadline Exceeded", r"Deadline of [\d.]+s exceeded",
        r"[Dd]eadline exceeded", r"[Tt]ook too long", r"timed out", r"504 Gateway Time-?out",
        r"ReadTimeout", r"deployment timed out",
    ),
        explanation=
        "The request (or the deployment) ran past its time limit: online predictions are cut "
        "off after about 60 seconds.",
        fix=
        "Lower max_tokens, stream the reply (chat with stream=True), or split the work; for "
        "deployments, wait longer (large models take up to an hour) and read the logs."),
)

OTHER = Rule(
    kind="other", patterns=(),
    explanation="No known cause was recognised in this text.",
    fix="Read the evidence lines; the debugging notebook shows the endpoint's newest logs. Errors "
    "such as NCCL failures usually mean a broken multi-GPU start: retry, or use fewer GPUs.",
)
_GENERIC = re.compile(r"Model server (exited unexpectedly|never became ready)|Traceback|"
                      r"Error|ERROR|failed", re.IGNORECASE)


@dataclass(kw_only=True)
class Diagnosis:
    kind: str
    evidence: list[str]
    explanation: str
    fix: str
    details: dict[str, Any] = field(default_factory=dict)
    deploy_parameters: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"cause: {self.kind}", f"why:   {self.explanation}", f"fix:   {self.fix}"]
        if self.deploy_parameters:
            lines.append(f"deploy parameters to try: {self.deploy_parameters}")
        lines += ["evidence:"] + [f"  {line}" for line in self.evidence]
        return "\n".join(lines)


def _details(kind: str, text: str) -> dict[str, Any]:
    """Numbers worth acting on: KV capacity, the estimate vLLM prints, the allocation."""
    found: dict[str, Any] = {}
    if kind == "max_model_len":
        if m := re.search(r"max seq len \((\d+)\) is larger than .*?KV cache \((\d+)\)", text):
            found.update(max_model_len=int(m.group(1)), kv_cache_tokens=int(m.group(2)))
        if m := re.search(r"max seq len \((\d+)\)", text):
            found.setdefault("max_model_len", int(m.group(1)))
        if m := re.search(r"estimated maximum model length is (\d+)", text):
            found["estimated_max_model_len"] = int(m.group(1))
    elif kind == "oom":
        if m := re.search(r"Tried to allocate ([\d.]+ [GMK]iB)", text):
            found["tried_to_allocate"] = m.group(1)
        if m := re.search(r"total capacit?y of ([\d.]+ GiB)", text):
            found["gpu_capacity"] = m.group(1)
    return found


def _suggest(kind: str, details: dict[str, Any]) -> dict[str, Any]:
    if kind == "max_model_len":
        room = details.get("kv_cache_tokens") or details.get("estimated_max_model_len")
        if room:
            return {"MAX_MODEL_LEN": max(256, room // 256 * 256)}
    if kind == "oom":
        return {"MAX_NUM_SEQS": 12}
    return {}


def diagnose_text(text: str, *, max_evidence: int = 3) -> Diagnosis:
    """Classifies log or error text; the evidence is the lines that matched the root cause."""
    # Error text may quote a token: it is read, never echoed by a refusal, and evidence is
    # redacted where it is shown (diagnose_endpoint, the debugging notebook).
    checks.text("text", "" if text is None else text, empty_ok=True, secret_ok=True)
    checks.whole("max_evidence", max_evidence, low=1, high=100)
    lines = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    for rule in RULES:
        compiled = [re.compile(p) for p in rule.patterns]
        hits = [line for line in lines if any(p.search(line) for p in compiled)]
        if hits:
            details = _details(rule.kind, text)
            return Diagnosis(kind=rule.kind, evidence=_unique(hits)[:max_evidence],
                             explanation=rule.explanation, fix=rule.fix, details=details,
                             deploy_parameters=_suggest(rule.kind, details))
    hits = [line for line in lines if _GENERIC.search(line)] or lines[-1:]
    return Diagnosis(kind=OTHER.kind, evidence=_unique(hits)[-max_evidence:],
                     explanation=OTHER.explanation, fix=OTHER.fix)


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


# --- endpoints ----------------------------------------------------------------------------
@dataclass(kw_only=True)
class EndpointReport:
    endpoint_name: str
    display_name: str
    deployed_models: list[dict[str, Any]]
    log_lines: list[str]  # newest first
    diagnosis: Diagnosis
    recorded_error: str = ""

    @property
    def healthy(self) -> bool:
        return bool(self.deployed_models) and self.diagnosis.kind == "other" \
            and not self.recorded_error

    def summary(self) -> str:
        state = (f"{len(self.deployed_models)} deployed model(s): "
                 + ", ".join(f"{d['id']} on {d['machine']}" for d in self.deployed_models)
                 if self.deployed_models else "no deployed model (a failed or finished deploy)")
        return f"endpoint {self.endpoint_name} ({self.display_name}): {state}"


def _planned_fix(diagnosis: Diagnosis, planner_inputs: dict[str, Any]) -> None:
    """Replaces the rule of thumb with what the planner finds fits the failed deployment's own
    model, GPUs and settings (when the planner also predicts the failure)."""
    from nbhelpers import planner
    from nbhelpers.errors import ConfigError

    try:
        plan = planner.plan_memory(**planner_inputs)
    except (ConfigError, TypeError):
        return
    usable = [(fix, parameters) for fix in plan.fixes
              if (parameters := fix.notebook_parameters())]
    if plan.ok or not usable:
        return
    diagnosis.details["planner_fixes"] = [fix.summary for fix in plan.fixes]
    diagnosis.deploy_parameters = usable[0][1]


def recent_logs(session: Any, endpoint_id: str, *, limit: int = 50) -> list[str]:
    """The endpoint's newest log lines from Cloud Logging, newest first, at most `limit`."""
    from google.cloud import logging as cloud_logging

    client = cloud_logging.Client(project=session.settings.project,
                                  credentials=session.credentials, _use_grpc=False,
                                  client_options=session.client_options())
    # An explicit window: without one the SDK reads only the last 24 hours, and a deployment
    # that failed yesterday would show no lines at all.
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                          time.gmtime(time.time() - LOG_RETENTION_DAYS * 86400))
    query = (f'resource.type="aiplatform.googleapis.com/Endpoint" AND '
             f'resource.labels.endpoint_id="{endpoint_id}" AND timestamp>="{since}"')
    entries = client.list_entries(filter_=query, order_by=cloud_logging.DESCENDING,
                                  max_results=limit)
    lines = []
    for entry in entries:
        payload = entry.payload
        if isinstance(payload, dict):
            payload = payload.get("message") or str(payload)
        lines.append(str(payload))
    return lines


def _endpoint_id(value: str) -> str:
    return value.rstrip("/").split("/")[-1]


def diagnose_endpoint(session: Any, endpoint: Any = None, *, limit: int = 50) -> EndpointReport:
    """State, newest logs and diagnosis of an endpoint (an id, a resource name, a Deployment or
    an aiplatform.Endpoint); without one, the run's most recent deployment."""
    from google.cloud import aiplatform

    from nbhelpers.tokens import redact

    records = session.state.deployments
    if endpoint is None or endpoint == "":
        if not records:
            from nbhelpers.errors import ConfigError

            raise ConfigError(f"run {session.settings.run_id} has no deployment to diagnose; "
                              "give an endpoint id, or paste the error text instead")
        endpoint = list(records.values())[-1]["endpoint_name"]
    name = getattr(endpoint, "endpoint_name", None) or getattr(endpoint, "resource_name", None) \
        or str(endpoint)
    resource = aiplatform.Endpoint(_endpoint_id(name)).gca_resource
    deployed = [{"id": d.id, "model": d.model,
                 "machine": f"{d.dedicated_resources.machine_spec.machine_type} "
                            f"({d.dedicated_resources.machine_spec.accelerator_count} x "
                            f"{d.dedicated_resources.machine_spec.accelerator_type.name})"}
                for d in resource.deployed_models]
    record: dict[str, Any] = next((r for r in records.values()
                   if _endpoint_id(r.get("endpoint_name", "")) == _endpoint_id(name)), {})
    recorded = record.get("error", "")
    lines = [redact(line) for line in recent_logs(session, _endpoint_id(name), limit=limit)]
    # Oldest first reads like a log; the root cause usually precedes the exit message.
    diagnosis = diagnose_text("\n".join([*reversed(lines), recorded]))
    if diagnosis.kind in ("oom", "max_model_len") and record.get("memory_plan"):
        _planned_fix(diagnosis, record["memory_plan"])
    return EndpointReport(endpoint_name=resource.name, display_name=resource.display_name,
                          deployed_models=deployed, log_lines=lines, diagnosis=diagnosis,
                          recorded_error=recorded)
