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
from nbhelpers.request_rules import LLAMA3_CHAT_TEMPLATE

KINDS = ("oom", "max_model_len", "hf_auth", "licence_pending", "chat_template", "quota",
         "timeout", "unsupported_model", "bad_request", "container_exited", "permission",
         "region_unavailable", "payload_too_large", "wrong_host", "other")

# How strongly a line names a cause. A root cause anywhere beats a weak signal, and a weak one
# beats a consequence: the OOM, not the "model server exited" it causes; a gated repository,
# not the "never became ready" that follows it. Within a tier the earliest line wins.
ROOT, WEAK, CONSEQUENCE = 0, 1, 2


@dataclass(frozen=True, kw_only=True)
class Rule:
    kind: str
    patterns: tuple[str, ...]
    explanation: str
    fix: str
    tier: int = ROOT
    # A line counts only if the whole text also matches this (e.g. a bare "401 Client Error"
    # is Hugging Face's only when its traceback runs through huggingface_hub).
    context: str = ""
    # A line does not count when the whole text matches this (a "repository not found" is a
    # typo unless the hub says the token itself was refused).
    unless: str = ""
    # Set on a more specific rule that names the same event as another kind: when both match,
    # wherever their lines are, the specific one wins (a pending licence is also a gated repo).
    refines: str = ""
    deploy_parameters: tuple[tuple[str, Any], ...] = ()


# The names servers give a sequence's context: vLLM's, TGI's, llama.cpp's, LMDeploy's, the
# model config's.
_CONTEXT_SETTING = (r"max[_ -]?input[_ -]?(length|tokens)|max[_ -]?total[_ -]?tokens|"
                    r"max[_ -]?model[_ -]?len|max[_ -]?seq(uence)?[_ -]?len(gth)?|"
                    r"n_ctx(_train|_per_seq)?|session[_ -]?len|context[_ -]?length|"
                    r"max[_ -]?position[_ -]?embeddings")

# The request fields that OpenAI-compatible servers (vLLM, TGI, llama.cpp, Ollama) validate and
# refuse by name: sampling, logprobs, stopping, structured output and tool calling. One list, so
# that every refusal wording below knows the same names.
REQUEST_PARAMETERS = (
    "max_tokens", "max_new_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "min_p", "typical_p", "n", "best_of", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "length_penalty", "logprobs", "top_logprobs", "prompt_logprobs",
    "logit_bias", "seed", "stop", "stop_token_ids", "response_format", "tool_choice", "tools",
    "guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs",
    "stream_options", "min_tokens",
)
_PARAMS = "|".join(REQUEST_PARAMETERS)
# Unquoted, only the names that cannot be a stray English word (n, stop, seed, tools), spelt
# with "_" or a space: vLLM's '"auto" tool choice requires --enable-auto-tool-choice'.
_PARAMS_UNQUOTED = "|".join(p.replace("_", "[ _]") for p in REQUEST_PARAMETERS
                            if "_" in p or p == "temperature")

# How a request for a gated model's licence stands when it is not granted (yet).
_ACCESS_VERDICT = (r"(pending|awaiting|rejected|denied|declined|refused|"
                   r"not (yet )?(been )?(approved|granted|accepted))")
# A size refusal: "413 Payload Too Large" says more than any "request ... rejected" beside it.
_SIZE_REFUSAL = r"\b413\b|(?i:payload too large|request entity too large)"
# Any unit of time a limit is stated in ("60 seconds", "120s", "5 min").
_DURATION = r"\d+(\.\d+)? ?(ms|s|secs?|seconds?|mins?|minutes?|h|hrs?|hours?)\b"

_HF_TOKEN_FIX = ("Accept the licence on the model's Hugging Face page with the account that owns "
                 "the token, then set HF_TOKEN to a token with read access (never as a "
                 "parameter); or deploy the Model Garden copy by setting WEIGHTS_URI to its "
                 "gs:// path.")

# In order: when one line matches several rules, the first one names it. Each kind lists the
# family of wordings it takes across vLLM releases (V0 and V1), transformers, huggingface_hub,
# Google's APIs (gRPC status names and HTTP texts), gcloud, Kubernetes, Docker and proxies, not
# only the excerpts it was written from. Bare status words (RESOURCE_EXHAUSTED, 400
# INVALID_ARGUMENT, BadRequestError) are WEAK: the message beside them names the cause better.
RULES: tuple[Rule, ...] = (
    Rule(kind="licence_pending", refines="hf_auth", unless=_SIZE_REFUSAL, patterns=(
        r"(?i)(awaiting|pending)( a)? review (from|by) the repo(sitory)?[\u2019']?s? "
        r"(authors|owners)",
        r"(?i)rejected by the repo(sitory)?[\u2019']?s? (authors|owners)",
        # Hugging Face answers 403 "not in the authorized list" to a token it accepted whose
        # account has not been granted the gated repo (401 is a missing or refused token).
        r"not in the authorized list", r"GatedRepoError: 403\b",
        # A request for access, in the Hub's words and users' own: "request to access this repo
        # is awaiting", "access requests ... were rejected", "request to access a gated model ...
        # is denied", "not yet approved".
        rf"(?i)\brequests? (to|for) access\b.{{0,80}}\b{_ACCESS_VERDICT}",
        rf"(?i)(access|licen[cs]e) requests?\b.{{0,80}}\b{_ACCESS_VERDICT}",
        r"(?i)\bstatus:\W{0,3}pending\b", r"(?i)waiting for (approval|access)",
        r"(?i)do not meet the criteria to obtain a licen[cs]e",
        # The gate itself, before any request is filed (the Hub's gated-model page).
        r"(?i)agree to share your contact information",
        r"(?i)\byou (need|must|have) to (accept|agree to) (the |its )?(model'?s? )?"
        r"(conditions|licen[cs]e|terms)",
    ),
        explanation=
        "The token is fine but the account has not been granted the model yet: the licence "
        "request on Hugging Face is still pending (Meta reviews them by hand; it can take "
        "hours, up to a day), was rejected, or was never filed for this model (each model "
        "family has its own licence).",
        fix=
        "Check the request at https://huggingface.co/settings/gated-repos (none listed: file "
        "one on the model's page) and wait for the "
        "approval e-mail before deploying again; a rejected request must be filed again with "
        "the details Meta asks for. To deploy now, use the Model Garden copy (accept the EULA "
        "on the model card) by setting WEIGHTS_URI to its gs:// path: it needs no HF token."),
    # Users' own words for the same wait: "I submitted a request for access", "how long does
    # approval take", "my status is still pending", "access not yet granted". WEAK and only
    # beside words of a gated model (approval, licence, Hugging Face, a gated repo): a pod's
    # "status: Pending" or a quota request is not a licence.
    Rule(kind="licence_pending", refines="hf_auth", tier=WEAK, unless=_SIZE_REFUSAL,
         context=r"(?i)\b(gated|approv\w*|licen[cs]e|hugging ?face|repo(s|sitory|sitories)?|"
         r"model (page|card)|request(ed)? (for )?access|access request)\b",
         patterns=(
        r"(?i)\b(submitted|filed|made|sent|put in|applied with) (a|an|my|the) (access )?"
        r"(request|application)\b", r"(?i)\b(requested|applied for|asked for) access\b",
        r"(?i)\bhow long\b[^\n]{0,40}\b(approv\w*|to (get|be) (granted|accepted))",
        r"(?i)\b(status|request|access|application)\b[^\n]{0,20}\b(is|are|remains?|still)\b"
        r"[^\n]{0,10}\bpending\b",
        r"(?i)\b(access|request|application)\b[^\n]{0,30}\bnot (yet )?(been )?(approved|"
        r"granted)\b", r"(?i)\b(still )?(awaiting|waiting (for|on)) (the )?(approval|access|"
        r"review|decision)\b",
        r"(?i)\b(denied|refused|rejected) access to (a |the |this )?gated\b",
        # A request (never a request body, payload or header) that was turned down.
        r"(?i)\brequests?\b(?!\s+(body|payload|entity|headers?|size|line|message|rate))"
        r".{0,40}\b(has|had|was|is|were|have) (been )?(rejected|declined)\b",
    ),
        explanation=
        "The account has asked for the model's licence on Hugging Face and it is not granted: "
        "the request is still pending (Meta reviews them by hand; it can take hours, up to a "
        "day) or was rejected.",
        fix=
        "Check the request at https://huggingface.co/settings/gated-repos and wait for the "
        "approval e-mail before deploying again; a rejected request must be filed again with "
        "the details Meta asks for. To deploy now, use the Model Garden copy (accept the EULA "
        "on the model card) by setting WEIGHTS_URI to its gs:// path: it needs no HF token."),
    # huggingface_hub raises RepositoryNotFoundError for an id that does not exist (or a private
    # repo): a typo, not a licence. Hugging Face hides a gated repo the same way from a caller
    # without a token, and every model this project serves is gated under meta-llama/, so a
    # meta-llama id that is "not found" stays hf_auth.
    Rule(kind="other", refines="hf_auth", unless=r"Invalid credentials in Authorization header",
         patterns=(
        r"RepositoryNotFoundError: 404",
        r"Repository Not Found for url: https://huggingface\.co/(api/models/)?(?!meta-llama/)",
    ),
        explanation=
        "Hugging Face has no repository by this id (a typo in the model id), or it is private "
        "and the token cannot see it; a licence is not the problem.",
        fix=
        "Check the model id's spelling against its page on huggingface.co (ids are "
        "owner/name, case-sensitive), or pick a model from nbhelpers' catalog."),
    Rule(kind="hf_auth", patterns=(
        r"GatedRepoError", r"gated repo", r"Cannot access gated repo", r"is gated\. You must",
        r"40[13] Client Error.*huggingface\.co", r"huggingface\.co.*40[13] Client Error",
        r"(Forbidden|Unauthorized) for url: https://huggingface\.co",
        r"Status\(40[13].*huggingface\.co", r"Invalid (user )?token",
        r"is restricted\. You must",
        r"Access to model \S+ is restricted", r"(?i)public gated repositories",
        r"(?i)fine-grained token", r"LocalTokenNotFoundError",
        r"Token is required \(`token=True`\), but no token found",
        r"Invalid credentials in Authorization header",
        # The Hub's 400 for a well-formed header carrying a revoked or mistyped token.
        r"(?i)Authorization header is correct, but the token",
        r"Repository Not Found for url: https://huggingface\.co/(api/models/)?meta-llama/",
    ),
        explanation=
        "The container could not download the weights from Hugging Face: the repository is "
        "gated and the token is missing, wrong, or has not been granted access.",
        fix=_HF_TOKEN_FIX),
    Rule(kind="hf_auth", patterns=(r"\b40[13] Client Error", r"\b401 Unauthorized\b",
                                   r"(?i)\btoken (is|was|has been) (not valid|invalid|expired|"
                                   r"revoked)", r"(?i)\b(expired|revoked) (access |auth |user )?"
                                   r"token\b", r"Invalid username or password"),
         # The Hub's words (its library, its models and datasets, an auth token for them);
         # google-auth's "Token has been expired or revoked" is Google's own credential.
         context=r"(?i)huggingface|hugging face|hf_raise_for_status|hf_hub|\bHF_TOKEN\b|"
         r"\b(auth|access|user) token\b[^\n]{0,80}\b(models?|datasets?|repos?)\b",
         unless=r"(?i)google\.auth|RefreshError|invalid_grant|gcloud auth",
         explanation=
         "The container could not download the weights from Hugging Face: the repository is "
         "gated and the token is missing, wrong, or has not been granted access.",
         fix=_HF_TOKEN_FIX),
    Rule(kind="container_exited", patterns=(
        r"Incorrect path_or_model_id: '(gs://|/gcs/)",
        r"Repo id must .{0,120}: '(gs://|/gcs/)",
        r"HFValidationError.{0,200}gs://",
    ),
        explanation=
        "vLLM was handed the gs:// path itself and tried to read it as a Hugging Face repo: "
        "the container's `command` was overridden, which skips the image's launcher that "
        "downloads gs:// weights before starting vLLM, so the model server exited.",
        fix=
        "Leave the container's command empty and put `python -m vllm.entrypoints.api_server` "
        "and its flags in the args (as nbhelpers.container_spec does), so the launcher still "
        "copies the weights from WEIGHTS_URI; or give a Hugging Face id instead of a gs:// "
        "path."),
    # The container's own start-up refused what it was told to run: the entrypoint got another
    # program's words (a `command` override), an image built for another CPU, unknown flags.
    Rule(kind="container_exited", patterns=(
        r"(?i)exec format error", r"executable file not found( in \$PATH)?",
        # Docker's and runc's words for an entrypoint or command that is not there (or a script
        # with Windows line ends): "exec /docker-entrypoint.sh: no such file or directory",
        # "exec user process caused", shells' "vllm: not found", python's "can't open file".
        r"(?i)\bexec:? [\"']?/?[\w./-]+[\"']?: (no such file or directory|permission denied)",
        r"(?i)\bexec user process caused\b", r"(?i)\bstarting container process caused\b",
        r"(?i)\b(entrypoint|entry point|command|executable|binary)\b[^\n]{0,40}\b(not found|"
        r"no such file or directory|does not exist)\b",
        r"(?i)(^|\s)(/bin/|/usr/bin/)?(ba|z)?sh(: line \d+|: \d+)?: [\w./-]+: (command )?not found",
        r"(?i): command not found\b", r"(?i)can't open file '[^']+': \[Errno 2\]",
        r"\bpython[\d.]*: No module named\b",
        r"OCI runtime (create|exec|start) failed", r"error: unrecognized arguments",
        r"\b(vllm serve|api_server(\.py)?) (tail|sleep|bash|sh|/bin/\w+)\b",
    ),
        explanation=
        "The container could not start its server as configured: its entrypoint was given "
        "something it cannot run (a `command` override that replaced or garbled the image's "
        "launcher, flags this vLLM release does not take, or an image built for another CPU "
        "architecture), so the model server exited at once.",
        fix=
        "Leave the container's command empty and put vLLM's module and flags in args (as "
        "nbhelpers.container_spec does), drop flags this release does not know (nbhelpers."
        "vllm_args lists them), and use the serving image tag nbhelpers.releases names."),
    Rule(kind="permission", patterns=(r"PermissionError: \[Errno 13\]",
                                      r"\[Errno 13\] Permission denied"),
         explanation=
         "A process in the container may not write or read a path it needs (a cache or "
         "download directory owned by another user, or a read-only mount).",
         fix=
         "Point the caches at a writable directory (HF_HOME=/tmp/hf, for example) or leave "
         "the image's own user and paths as they are; keep weights on gs:// (WEIGHTS_URI) "
         "rather than a mounted path."),
    Rule(kind="permission", patterns=(
        r"Permission denied on resource", r"PERMISSION_DENIED", r"PermissionDenied",
        r"(?i)Permission [`'\"\u2018\u2019]?[\w.]+[`'\"\u2018\u2019]? denied",
        r"does not have `?\[?storage\.\w+\.\w+",
        r"does not have [\w.]+ (access|permission)", r"AccessDenied(Exception)?\b",
        r"You need the [\w.]+ permission", r"Forbidden: 403 (GET|POST|PUT|PATCH|DELETE)",
        r"(?i)(do|does|did)(n't| not) have (the )?(required |necessary )?permissions?\b",
        r"(?i)\b(Permission|Access) denied\b", r"(?i)\b(is|are|am) not authorized to\b",
        r"AuthorizationFailed", r"(?i)does not have authorization to perform",
        r"is forbidden: User \S+ cannot \w+ resource",
        r"googleapi: Error 403\b(?![^\n]*(?i:quota|rate ?limit))",  # some quotas answer 403
        r"IAM permission\(s\)",
        r"Required '[\w.]+' permission", r"(?i)iam\.serviceAccounts\.actAs",
        r"(?i)missing (the )?(required )?(IAM )?permissions?\b",
        r"(?i)insufficient (IAM )?permissions?\b", r"ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        r"(?i)insufficient authentication scopes",
        # gcloud's service-account impersonation refusal, AWS's and registries' wordings.
        r"(?i)does not have access to (the )?service account",
        r"(?i)\b(user|caller|principal|identity|account)\b[^\n]{0,40}\bnot authorized to "
        r"(perform|access|use|call)\b", r"(?i)\bnot authorized to access\b",
        r"(?i)\bunauthorized: authentication required\b",
        r"(?i)\black(s|ing)? (the )?(required |necessary )?(IAM )?(role|permission)s?\b",
        r"(?i)(do|does|did)(n't| not) have (the |a |any )?(required |necessary )?(IAM )?"
        r"(role|roles/[\w.]+)\b",
    ),
        explanation=
        "Google refused the call for lack of an IAM permission: the account running the "
        "notebook lacks a Vertex AI role, or the service account that serves the model cannot "
        "read the bucket with the weights (or the project id is wrong).",
        fix=
        "Grant roles/aiplatform.user to the account that runs the notebooks, and "
        "roles/storage.objectViewer on the weights' bucket to the Vertex AI service agent "
        "(service-PROJECT_NUMBER@gcp-sa-aiplatform.iam.gserviceaccount.com) or to the service "
        "account the deployment runs as; check that the project id is the one you meant. "
        "Role changes take a minute or two to apply."),
    # Not a missing role but missing or stale credentials: google-auth's and the API's words
    # for a caller that is not signed in (401 UNAUTHENTICATED, expired or revoked grants).
    Rule(kind="permission", patterns=(
        r"Request had invalid authentication credentials", r"\bUNAUTHENTICATED\b",
        r"google\.api_core\.exceptions\.Unauthenticated", r"DefaultCredentialsError",
        r"(?i)default credentials were not found", r"\binvalid_grant\b",
        r"(?i)Reauthentication (is )?(needed|required)",
    ),
        explanation=
        "Google did not accept the caller's credentials at all: the notebook's account is not "
        "signed in, or its Application Default Credentials expired or were revoked; no role "
        "was checked yet.",
        fix=
        "Sign in again: in a terminal, `gcloud auth application-default login` (or the "
        "Colab/Workbench sign-in), then restart the kernel; a service-account key that was "
        "deleted must be replaced. Then check the roles as for any permission error."),
    Rule(kind="quota", patterns=(
        r"(?i)quota metrics exceed quota limits",
        r"(?i)\bquotas?\b[^.\n]{0,40}\b(exceed\w*|exhausted|violated|reached|insufficient)",
        r"(?i)\b(exceed\w*|exhausted|insufficient|out of|not enough|lack of)\b[^.\n]{0,60}"
        r"\bquota\b", r"(?i)\bno (more |remaining |available |free )?([\w-]+ )?quota\b",
        # Other clouds' and older APIs' words for the same refusal: Azure's "QuotaExceeded" and
        # "a total vCPU quota of 4 and cannot accommodate", AWS's account-level service limits,
        # AI Platform's "Quota failure" and accelerator maximums.
        r"(?i)quota_?exceeded", r"insufficient_quota", r"(?i)\bquota of \d+\b",
        r"(?i)\bquota failure\b", r"ResourceLimitExceeded", r"(?i)\bservice limit\b",
        r"(?i)\brequest an increase\b", r"LimitExceededException",
        r"(?i)\b\d+ [\w-]+ (accelerators?|GPUs?|vCPUs?|cores)\b[^.\n]{0,20}\bexceeds the "
        r"allowed maximum\b",
        r"(?i)(increase in|increase the|more) quota\b|quota increase",
        r"Rate of traffic exceeds (serving )?capacity",
        r"custom_model_serving_\w+", r"CustomModelServing\w+PerProjectPerRegion",
        r"(?i)\brate[ _-]?limit(ed|s)?\b[^.\n]{0,20}\b(exceeded|reached|hit)\b",
        r"RateLimitError", r"(?i)Too Many Requests", r"\((TPM|RPM)\)",
        r"ThrottlingException",
        # EC2's VcpuLimitExceeded ("more vCPU capacity than your current vCPU limit of 32"),
        # Compute Engine's "Exceeded limit 'NVIDIA_L4_GPUS' on resource".
        r"VcpuLimitExceeded", r"(?i)\bthan your current [\w-]+ limit\b",
        r"(?i)\bExceeded limit '[A-Z0-9_]+'",
        r"(?i)\b(request|requests|call|calls)\b[^\n]{0,20}\b(was|were|is|are|being) "
        r"throttled\b",
        r"(?i)\bexceeded (the )?(token |call |request )?rate limit", r"rate_limit_exceeded",
        r"(status|code|HTTP|Error)\W{0,4}429\b",
    ),
        explanation=
        "The project has no quota left for these GPUs (or this request rate) in this region.",
        fix=
        "Request more 'Custom model serving' GPU quota for this accelerator and region "
        "(IAM & Admin > Quotas), deploy to a region or GPU type with quota, or use fewer GPUs. "
        "For a 429 on traffic, retry with backoff (predict_many does) or add replicas."),
    Rule(kind="region_unavailable", patterns=(
        r"does not have enough resources available to fulfill the request",
        r"(?i)\btry a different (location|zone|region)\b",  # GKE's and GCE's stock-out advice
        r"(?i)\b(whitelist|allowlist)\w* (to use|for) (the )?(region|location|zone)\b",
        r"(?i)\b(other |the )?available (regions|locations|zones) (are|include)\b",
        r"(?i)\b(region|location|zone) [`'\"]?[\w-]+[`'\"]? is not (enabled|allowed|"
        r"permitted|available)\b", r"constraints/gcp\.resourceLocations",
        r"(?i)\btemporarily unavailable\b[^\n]{0,40}\b(zone|region|location)\b",
        # Capacity in any provider's words: GCE's "does not currently have sufficient capacity",
        # GKE's "GCE out of resources", SageMaker's CapacityError, a scheduler with no GPU node.
        r"(?i)\b(does|do)(n't| not)( currently)? have (sufficient|enough) ([\w.-]+ )?"
        r"(capacity|resources)\b", r"GCE out of resources", r"\bCapacityError\b",
        r"(?i)unable to provision (the )?requested\b", r"Insufficient nvidia\.com/gpu",
        r"(?i)\b(not enough|insufficient|no( more)?) (\w+ )?capacity\b",
        r"(?i)\bmachine type\b[^\n]{0,60}\bis not supported\b",
        r"ZONE_RESOURCE_POOL_EXHAUSTED", r"STOCKOUT", r"[Rr]esources are insufficient in region",
        r"(currently )?unavailable in the [\w-]+ (zone|region)",
        r"not available in the (location|region|zone)", r"[Uu]nsupported region",
        r"(is )?not supported for machine type", r"features are not compatible for creating",
        r"(not supported|not available|not offered) in (the |this |that )?(region|location|zone)",
        r"InsufficientInstanceCapacity", r"(?i)\b(out of|insufficient) capacity\b",
        r"(?i)\b(unsupported|invalid) (machine|accelerator) type\b",
        # dsub/Batch's "unsupported accelerator: \"nvidia-a100-80g\"", "invalid GPU type",
        # "unknown instance type", "accelerator X is not supported".
        r"(?i)\b(unsupported|invalid|unknown|unavailable) (accelerator|gpu|instance type|"
        r"machine type|accelerator type|gpu type)s?\b(?! (vendor|kwargs|board))",
        r"(?i)\b(accelerator|gpu|instance|machine)( type)? [`'\"]?[\w.-]+[`'\"]? (is )?(not|un)"
        r"(supported|available|offered)\b",
        r"(?i)accelerator count\W{0,3}\S* is not allowed",
        r"(?i)allowed (numbers?|counts?) of accelerators?",
        r"(?i)(machine type|accelerator|GPU type)\b[^\n]{0,80}\bnot (available|supported|"
        r"offered) (in|for|with|on)\b", r"(?i)only available (on|in) the regional endpoint",
        r"(?i)does not exist in zone",
        r"(?i)\b(accelerator|machine|GPU|instance) type\b[^\n]{0,60}\bnot found in (the )?"
        r"(zone|region|location)\b", r"(?i)\bout of stock\b",
        r"(?i)\b(try|choose|pick|select|use|deploy (to|in)) (a |an )?(different|another|other) "
        r"(region|zone|location)s?\b",
        # Vertex AI answers a publisher model that a location does not offer as not found at
        # that location (the model is served elsewhere, or only via the global endpoint).
        r"Publisher Model `?projects/[^/\s]+/locations/(?!global/)[\w-]+/publishers/\S+ (was )?"
        r"not found",
        r"(?i)(only|can only be) (be )?(accessed|available|served) (via|through|in) the global"
        r" (region|endpoint|location)",
        # Compute Engine names an accelerator or machine type a zone lacks as a missing resource.
        r"(zones|regions)/[\w-]+/(acceleratorTypes|machineTypes)/[\w.-]+'? was not found",
        r"(?i)not (currently )?(available|supported|offered) in (the |this |that |your )?"
        r"(current |requested |selected )?(region|location|zone|availability zone)",
        r"SkuNotAvailable", r"\b(Zonal)?AllocationFailed\b", r"OverconstrainedAllocationRequest",
        r"(?i)do not have sufficient [\w.-]+ capacity", r"(?i)requested (VM )?size\b[^\n]{0,60}"
        r"\bnot available\b",
        r"(?i)\b(no|not enough|insufficient) (capacity|resources)\b[^.\n]{0,30}\b(region|"
        r"zone|location)\b",
    ),
        explanation=
        "The machine type or GPU asked for is not offered here: not in this region (or none "
        "is free in it right now), or not with this machine type or count.",
        fix=
        "Deploy in a region that offers this GPU (set GOOGLE_CLOUD_REGION, e.g. us-central1 "
        "or europe-west4, and check quota there), or pick a machine type that comes with this "
        "accelerator and count (nbhelpers.hardware lists the pairs); for a stock-out, retry "
        "later or try another region."),
    Rule(kind="unsupported_model", patterns=(
        r"[Mm]odel architectures? \[.*\] (are|is) not supported",
        r"are not supported for now", r"[Uu]nrecognized model in",
        r"(?i)model type `?[\w-]+`? (is )?not (yet )?(recognized|supported)",
        r"is not supported by (this version of )?vLLM", r"failed to be inspected",
        r"Error in inspecting model architecture", r"_raise_for_unsupported",
        r"has model type `[\w-]+` but Transformers does not recognize",
        r"does not recognize this architecture", r"(?i)unrecognized configuration class",
        r"(?i)is not a registered model", r"(?i)architectures?\b[^\n]{0,60}\b(is|are) not "
        r"(yet )?supported",
        # Llama 3.1+ configs carry rope_type "llama3": transformers before 4.43 (and vLLM
        # releases built on it) refuse them.
        r"`?rope_scaling`? must be a dictionary", r"(?i)unknown rope[_ ]scaling type",
        r"(?i)upgrade (your )?transformers|requires transformers ?>=",
        r"(?i)vLLM does not (yet )?support (this |the )?(model|architecture)",
        # A config that needs code transformers does not ship (vLLM's and transformers' words).
        r"(?i)not yet available in the (Hugging ?Face )?transformers library",
        r"(?i)requires you to execute the configuration file in that repo",
        # llama.cpp's and Ollama's "unknown model architecture: 'x'", TGI's "Unsupported model
        # type phi-msft".
        r"(?i)\b(unknown|unsupported|unrecognized) model (architecture|type)\b",
    ),
        explanation=
        "The vLLM (or transformers) inside the container does not support this model's "
        "architecture or config: too old a release for the model, or a model vLLM cannot "
        "serve.",
        fix=
        "Use a container tag whose vLLM supports the model (Llama 3.1 needs transformers "
        ">= 4.43; Llama 3.2 Vision needs vLLM 0.6.2-0.10.x), or a model from the catalog."),
    Rule(kind="unsupported_model", patterns=(r"KeyError: '\w+'",),
         context=r"CONFIG_MAPPING|configuration_auto|model_type",
         explanation=
         "The transformers inside the container does not know this model type (too old a "
         "release for the model).",
         fix=
         "Use a container tag whose vLLM and transformers support the model (Llama 3.2 Vision "
         "needs vLLM 0.6.2-0.10.x), or a model from the catalog."),
    Rule(kind="oom", patterns=(
        r"OutOfMemoryError", r"(CUDA|HIP) out of memory", r"CUDA error: out of memory",
        r"No available memory for the cache blocks", r"\bOOM(Killed)?\b", r"(?i)out of memory",
        r"(?i)\boom[- _]?kill(ed|er)?\b",
        # Host memory in C++'s and allocators' words (PyTorch's DefaultCPUAllocator, glibc).
        r"(?i)\b(can't|cannot|could not|unable to|failed to) allocate (\S+ )?memory\b",
        r"std::bad_alloc", r"^MemoryError\b|\bbuiltins\.MemoryError\b",
        r"CUBLAS_STATUS_ALLOC_FAILED", r"cudaErrorMemoryAllocation",
        r"(?i)not enough (GPU |device |CUDA )?memory",
        # Memory limits of hosts and schedulers: Kubernetes' eviction ("The node was low on
        # resource: memory", "which exceeds its request of"), the kernel's OOM-killer line,
        # Cloud Run's "Memory limit of 512 MiB exceeded", YARN's and Ray's kills for memory.
        r"(?i)\blow on (resource: )?(host |system |node )?memory\b",
        r"\bKilled process \d+ \([^)]*\) total-vm:",
        r"(?i)\bmemory limit (of [\d.]+ ?\w+ )?(was )?(exceeded|reached)\b",
        r"(?i)\bexceed(s|ed|ing)? (the |its |their )?memory limits?\b",
        r"(?i)\bkilled\b[^\n]{0,40}\b(memory (limit|usage|pressure)s?|low memory)\b",
    ),
        explanation=
        "The GPU ran out of memory while vLLM loaded the weights, profiled activations or "
        "captured CUDA graphs.",
        fix=
        "Lower max_num_seqs (Llama 3.2 Vision: 12-16) and max_model_len, set enforce_eager to "
        "skip CUDA graphs, or use more or larger GPUs (tensor_parallel_size = GPU count)."),
    # Often reported as "an OOM": the KV-cache message names the fix, so it refines an oom.
    Rule(kind="max_model_len", refines="oom", patterns=(
        r"(?i)max seq(uence)? len(gth)? \(\d+\) is larger than the maximum number of tokens "
        r"that can be stored in KV cache",
        r"To serve at least one request with the models?'s max seq len",
        r"estimated maximum model length is \d+",
        r"larger than the available KV cache memory", r"KV cache is needed, which is larger",
        r"is greater than the derived max_model_len", r"max_model_len \(\d+\) is greater than",
        r"(?i)insufficient (memory for (the )?)?KV cache",
        r"max_num_batched_tokens \(\d+\) is smaller than max_model_len",
        # A backend or hardware that caps the context: "do not support max_model_len greater
        # than 32768", "max_model_len must be <= 8192 on this device".
        r"(?i)\b(do|does|can)(n't| not) (support|handle|serve) (a )?max[_-]model[_-]len "
        r"(greater|larger|higher|longer|more|above|over)\b",
        r"(?i)\bset (--)?max[_-]model[_-]len (to|=) ?\d+ or (lower|less|smaller)\b",
        # Other servers' context settings over what the model or the cache takes: TGI's
        # max_input_length/max_input_tokens over max_total_tokens, llama.cpp's n_ctx over
        # n_ctx_train, LMDeploy's session_len, any of them over max_position_embeddings.
        rf"(?i)\b({_CONTEXT_SETTING})`?\s*(\(\d+\)|=\s*\d+)?\s*(>=?|is (greater|larger|"
        r"higher|longer) than|exceeds?|must be (<=?|less than|smaller than|lower than|at most))"
        rf"\s*(the )?(derived |configured |model'?s? )?`?({_CONTEXT_SETTING}|max(imum)? "
        r"(sequence|context|model) length|trained context( length)?)\b",
        # A context asked of a model that cannot take it (Ollama, llama.cpp).
        r"(?i)\bcontext (size|length|window)\b[^\n]{0,20}\btoo (large|long|big) for (the |this )?"
        r"model\b",
    ),
        explanation=
        "The KV cache left after the weights cannot hold even one sequence of max_model_len "
        "tokens (or max_model_len is above what the model or the batch size allows).",
        fix=
        "Lower max_model_len to what the KV cache holds (below), raise gpu_memory_utilization "
        "a little (0.9 -> 0.95), or use more or larger GPUs."),
    Rule(kind="chat_template", patterns=(
        r"default chat template is no longer allowed", r"chat_template is not set",
        r"ChatTemplateResolutionError", r"does not define one", r"(?i)\bno chat[ _-]?template",
        # The method's own name beside a failure: "Error in apply_chat_template", "failed to
        # render_chat_template".
        r"(?i)\b(error|exception|failed|failure)\b[^\n]{0,30}\b(apply|render)\w*_chat_template\b",
        r"(?i)\b(apply|render)\w*_chat_template\b[^\n]{0,40}\b(error|exception|failed|raised)\b",
        r"Chat template error",
        # Jinja's own parse errors: the template itself is broken, not the request.
        r"TemplateSyntaxError", r"expected token '[^'\n]+', got '",
        r"(?i)unexpected (end of template|'(end|endfor|endif)\w*')",
        r"(?i)chat[ _]template\b[^\n]{0,60}\b(not set|not found|missing|is required|must be "
        r"provided)", r"(?i)(failed|unable) to (load|find|resolve)\b[^\n]{0,60}chat template",
        # Rendering failures in any engine's words: jinja2's exception classes, minijinja's
        # (TGI, llama.cpp, mistral.rs) "Template error: unknown test" / "template not found" /
        # "invalid operation", vLLM's "Error in applying chat template", llama.cpp's "Failed to
        # apply chat template". A template's raise_exception about the request's messages
        # ("roles must alternate") is the request's fault: bad_request, listed before this rule
        # as a line-level exclusion.
        r"jinja2\.exceptions\.(UndefinedError|TemplateNotFound|TemplateRuntimeError|"
        r"TemplateAssertionError|SecurityError)",
        r"(?i)^(?!.*\b(roles must alternate|conversation roles)\b).*\b(chat[ _-]?)?"
        r"template[ _]?error\b",
        r"(?i)\b(appl(y|ying)|render(ing)?|pars(e|ing)|format(ting)?|compil(e|ing))\b[^\n]{0,30}"
        r"\b(jinja|chat)[ _-]?template\b",
        r"(?i)\b(jinja|chat)[ _-]?template\b[^\n]{0,40}\b(error|exception|failed|invalid|"
        r"unsupported|not supported|could not be (parsed|rendered|applied))\b",
        r"(?i)\bjinja2?\b[^\n]{0,30}\b(error|exception)\b", r"(?i)\bTemplateNotFound\b",
        r"(?i)\btemplate not found\b", r"(?i)\bunknown (test|filter): (test|filter) \S+ is unknown",
        r"(?i)\bNo (test|filter) named '", r"(?i)\bEncountered unknown tag '",
        r"(?i)\b(does not|doesn't) (have|define|provide|ship) a chat template\b",
        # Go's text/template, which Ollama renders chat templates with: "template: :1:2:
        # executing ... at <.Messages>", "function \"x\" not defined".
        r"\btemplate: [\w.-]*:\d+(:\d+)?: (executing|unexpected|function \"\w+\" not defined|"
        r"bad character|unterminated)",
    ),
        explanation=
        "Chat completions need a chat template: base (non-Instruct) Llama models have none, "
        "and transformers (since 4.44) no longer supplies a default; or the template given "
        "does not parse as Jinja.",
        fix=
        "Pass a chat template with the deployment: CHAT_TEMPLATE in 01/02 (VllmOptions("
        "chat_template=...), vLLM's --chat-template), inline Jinja on one line such as Llama "
        "3's below, or the path of a template file inside the serving image; or deploy the "
        "Instruct variant, whose tokenizer has its own. Without chat, send a plain prompt "
        "through predict().",
        deploy_parameters=(("CHAT_TEMPLATE", LLAMA3_CHAT_TEMPLATE),)),
    Rule(kind="chat_template", patterns=(r"'[\w.]+' is undefined", r"\bis undefined \(in <string>"),
         context=r"(?i)jinja|template",
         explanation=
         "The chat template refers to a name the renderer does not provide (a function or "
         "variable of another engine's template dialect): the template does not render here.",
         fix=
         "Pass a chat template written for this engine with the deployment: CHAT_TEMPLATE in "
         "01/02 (vLLM's --chat-template), such as Llama 3's below; or deploy the Instruct "
         "variant, whose tokenizer has its own.",
         deploy_parameters=(("CHAT_TEMPLATE", LLAMA3_CHAT_TEMPLATE),)),
    Rule(kind="payload_too_large", patterns=(
        r"Request payload size exceeds the limit", r"(?i)payload too large",
        r"(?i)request entity too large", r"request_too_large", r"PayloadTooLargeError",
        r"Request exceeds the maximum (allowed number of bytes|size)",
        r"exceeds max allowed file size", r"(?i)maximum (request|body|payload) size",
        r"(?i)content[ -]length exceeded", r"(?i)too large body", r"client_max_body_size",
        r"(?i)\b(request|payload|body)( body)? (size )?(is )?too large\b(?! for)",
        r"(?i)\b(request|payload|body|message) size exceeds\b",
        r"(?i)received message larger than max",  # gRPC's own size limit
        # gRPC's other wordings (grpc-js "message exceeds maximum size 4194304: 5118829",
        # grpc-go "larger than max length allowed"), its options, S3's EntityTooLarge, GFE's
        # "request that was too large": a size, even when the status is RESOURCE_EXHAUSTED.
        r"(?i)\b(message|request|payload|body|frame|upload|entity|content|file|attachment)\b"
        r"[^\n]{0,30}\bexceed(s|ed)? "
        r"(the )?(max(imum)?|allowed|configured|permitted)? ?(message |request |payload |body )?"
        r"size\b", r"(?i)\b(message|request|payload|body|frame)\b[^\n]{0,20}\blarger than (the )?"
        r"max(imum)?\b", r"(?i)\bmax_(receive|send)_message_(length|size)\b",
        r"\bMax(Call)?(Recv|Send)Msg(Size)?\b", r"\bEntityTooLarge\b",
        # A size over a configured maximum (Tomcat's and commons-fileupload's "its size (N)
        # exceeds the configured maximum (M)"); a batch's, cache's or block's size is no body.
        r"(?i)(?<!batch )(?<!cache )(?<!block )(?<!page )(?<!pool )\bsize\b( \(\d+\))?[^\n]{0,10}"
        r"\bexceed(s|ed)? (the )?(configured |allowed |permitted )?(max(imum)?|limit)\b",
        # Headers over a proxy's limit (HTTP 431, nginx's 400 "Request Header Or Cookie Too
        # Large"): the request is too large, if not its body.
        r"(?i)\bRequest Header (Fields|Or Cookie) Too Large\b",
        r"(?i)\b(request|payload|body|upload|message)s? (that )?(was|were|is) too (large|big)\b",
        # SageMaker's "has oversize body"; axum/tower (TEI, TGI) "length limit exceeded" while
        # buffering the body; Express/body-parser's and nginx's body-size limits.
        r"(?i)\boversized? (request )?(body|payload|request)\b",
        r"(?i)\b(request )?body\b[^\n]{0,30}\b(length|size) limit (exceeded|reached)\b",
        r"(?i)\b(body|payload) (length|size) limit\b", r"(?i)\bbody limit exceeded\b",
        r"(?i)\b(request|payload|body)\b[^\n]{0,20}\bexceed(s|ed)? the (maximum|max|allowed)\b"
        r"[^\n]{0,30}\b(size|bytes|[KMG]i?B)\b",
        r"(?i)\b(request|payload|body)\b[^\n]{0,20}\bexceed(s|ed)? the [\d.]+ ?[KMG]i?B\b",
        r"(?i)(status|code|HTTP|Error|error occurred)\W{0,4}413\b", r"\b413 (Request|Payload)",
        # Size limits in any server's words: "payload reached size limit", "Exceeded limit on
        # max bytes to request body", axum's "Failed to buffer the request body", aiohttp's
        # "Maximum request body size 1048576 exceeded", Go's "http: request body too large",
        # Kestrel's "Request body too large", nginx's "client intended to send too large body",
        # API Gateway's "HTTP content length exceeded", Spring's "Maximum upload size exceeded".
        r"(?i)\b(request|payload|body|message|upload|content)\b[^\n]{0,30}\b(size|length|bytes?) "
        r"limit\b", r"(?i)\b(size|length|bytes?) limit\b[^\n]{0,30}\b(request|payload|body)\b",
        r"(?i)\bmax(imum)?[ _-]?bytes\b[^\n]{0,30}\b(request|payload|body)\b",
        r"(?i)\bfailed to (buffer|read) the request body\b",
        r"(?i)\bmax(imum)? (allowed )?(request |message |upload )?(body |payload |content )?"
        r"(size|length)\b"
        r"[^\n]{0,30}\bexceeded\b", r"(?i)\btoo large body\b|\bsend too large\b",
        r"(?i)\b(sent|received|trying to send) message larger than max",
        r"(?i)\bcontent[ -]length\b[^\n]{0,20}\bexceed", r"(?i)\bmaximum upload size\b",
        r"(?i)\b(request|payload|body) must be smaller than \d+ ?(bytes|[KMG]i?B)\b",
        r"(?i)\b(request|payload|body)( body| size)? (is )?(larger|bigger|greater|more) than "
        r"(the )?(max(imum)? |allowed |limit of )?[\d.,]+ ?([KMG]i?B|bytes)\b",
    ),
        explanation=
        "The request body is larger than the endpoint accepts; nothing reached the model. "
        "Shared endpoints take smaller predict payloads than dedicated ones.",
        fix=
        "Send less per call: smaller or fewer images (resize, or JPEG instead of PNG), a "
        "shorter prompt, fewer instances per predict; or deploy with DEDICATED_ENDPOINT=True, "
        "whose payload limit is larger.",
        deploy_parameters=(("DEDICATED_ENDPOINT", True),)),
    Rule(kind="wrong_host", patterns=(r"Streaming is not supported on the shared",),
         explanation=
         "Streaming (and long requests) are served by dedicated endpoints only, and this "
         "endpoint is a shared one.",
         fix=
         "Deploy with DEDICATED_ENDPOINT=True to stream, or call without stream=True.",
         deploy_parameters=(("DEDICATED_ENDPOINT", True),)),
    Rule(kind="wrong_host", patterns=(
        r"Dedicated Endpoint cannot be accessed through the shared",
        r"(?i)\bdedicated endpoints? (cannot|can ?not|can't|could not) be (accessed|reached|"
        r"called)\b", r"(?i)\bthrough (the|that|a) shared (regional )?(domain|host(name)?)\b",
        r"dedicated endpoint via CloudESF", r"cannot be accessed through the (Vertex AI API|"
        r"shared)", r"(?i)access the endpoint using its dedicated (dns|domain) name",
        r"only supported on dedicated endpoints", r"is not a dedicated endpoint",
        r"(Cannot connect to host|Could not resolve host:?) \S*prediction\.vertexai\.goog",
        r"prediction\.vertexai\.goog\S* .{0,60}(Name or service not known|nodename nor "
        r"servname|getaddrinfo failed)",
        r"Received http2 header with status: 404",
        r"unexpected HTTP status code received from server: 404",
    ),
        explanation=
        "The request went to the wrong host for this endpoint: a dedicated endpoint answers "
        "only on its own DNS name (ENDPOINT_ID.REGION-PROJECT_NUMBER.prediction.vertexai.goog) "
        "and refuses the shared REGION-aiplatform.googleapis.com, a shared endpoint has no "
        "dedicated name, and a client without the regional host reaches no endpoint at all.",
        fix=
        "Call the endpoint through nbhelpers (predict, chat_client), which reads the "
        "endpoint's dedicated_endpoint_dns and picks the host; by hand, use "
        "endpoint.gca_resource.dedicated_endpoint_dns for a dedicated endpoint and "
        "REGION-aiplatform.googleapis.com (client_options api_endpoint) for a shared one."),
    Rule(kind="bad_request", patterns=(
        r"maximum context length is \d+ tokens", r"max_tokens must be at least",
        r"is too long and exceeds limit", r"At most \d+ image\(s\) may be provided",
        r"However, you requested \d+ tokens", r"is too large: \d+\. This model",
        r"Prompt length of \d+ is longer than the maximum model length",
        r"tokens exceed n_ctx", r"exceeds the pre-allocated encoder cache size",
        r"cannot be greater than max_model_len",  # vLLM 0.32's words (the real engine)
        r"(?i)maximum context length\b", r"context_length_exceeded",
        r"(?i)please reduce the length of the (messages|prompt|input)",
        r"(?i)prompt (\(length \d+\) )?is longer than the maximum model length",
        rf"\b({_PARAMS})`? must be\b", r"Input validation error",
        r"Extra inputs are not permitted",
        # pydantic's range checks on request fields (OpenAI clients, vLLM's protocol models).
        r"(?i)\bInput should be (less|greater) than( or equal to)? -?\d",
        r"(?i)\bInput should be a valid (integer|number|string|boolean|list|dictionary)\b",
        r"(?i)\b'?max_(completion_)?tokens'?\b[^\n]{0,40}\bis too (large|long|big)\b",
        # A chat template's raise_exception on a request's message order.
        r"(?i)\broles must alternate\b", r"(?i)\bconversation roles must\b",
        # pydantic's error types as a request model reports them; OpenAI's and JSON Schema's
        # refusals of fields; transformers' generation-config checks.
        r"\[type=(missing|extra_forbidden|less_than_equal|greater_than_equal|less_than|"
        r"greater_than|int_parsing|float_parsing|string_type|literal_error|int_type|list_type|"
        r"json_invalid|bool_type|bool_parsing|dict_type)\b",
        r"Unrecognized request argument", r"'\w+' is a required property",
        r"Additional properties are not allowed",  # JSON Schema's "('foo' was unexpected)"
        # OpenAI's "Unknown parameter: 'x'", "Unsupported parameter: 'max_tokens' is not
        # supported with this model", "Unsupported value: 'temperature' does not support 0.5".
        r"(?i)\b(unknown|unsupported|unrecognized) (parameter|value|argument)s?: [`'\"]",
        r"(?i)\b(could not|couldn't|failed to|unable to) (parse|decode|deserialize) (the )?"
        r"(JSON )?(request )?body\b",
        r"`\w+` \(=[^)]*\) has to be a (strictly )?positive",
        # Range and parameter refusals of other APIs: DashScope's "InvalidParameter: Range of
        # max_tokens should be [1, 8192]", AWS's ValidationException/InvalidParameterValue, a
        # field "must be between 0 and 2", "should be in [0, 1]".
        r"\bInvalidParameter(Value|Exception|Combination)?\b",
        r"(?i)\brange of [`'\"]?\w+[`'\"]? (should|must) be\b",
        rf"(?i)\b({_PARAMS})[`'\"]?\b[^\n]{{0,30}}\b(should|must) "
        r"be (between|in|within|at (least|most)|less|greater|<|>|no (more|less)|a positive|"
        r"positive|non-?negative|set|one of|an? (integer|number|string|boolean|list))",
        # "Invalid top_logprobs and logprobs value", "unsupported value for response_format",
        # "Invalid value for 'tool_choice'", OpenAI's "Invalid type for 'messages[0].content'".
        rf"(?i)\b(invalid|out-of-range|unsupported|illegal|bad) (value |type )?(for )?(the )?"
        rf"(parameter |field |argument )?[`'\"]?({_PARAMS})\b",
        r"(?i)\binvalid (value|type) for [`'\"][\w.\[\]]+[`'\"]",
        # A named field with a refusal after it: "`tool_choice` ... requires --enable-auto-tool-
        # choice", "when using `top_logprobs`, `logprobs` must be set to true", "prompt_logprobs
        # are not available when stream=True", "response_format type ... is not supported".
        rf"(?i)[`'\"]({_PARAMS})[`'\"][^\n]{{0,60}}\b(must|should|cannot|can ?not|can't|can "
        r"only|is not (supported|allowed|available|valid)|are not (supported|allowed|available)|"
        r"requires?|only supports?)\b",
        rf"(?i)\b({_PARAMS_UNQUOTED})\b[^\n]{{0,60}}\b(cannot|can ?not|can't|can only|is not "
        r"(supported|allowed|available|valid)|are not (supported|allowed|available)|"
        r"requires?|only supports?)\b",
        # pydantic's report on an OpenAI-compatible request model ("1 validation error for
        # ChatCompletionRequest", "Value error, ...").
        r"\bvalidation errors? for \w*Request\b",
    ),
        explanation=
        "The server refused this request as malformed or too large; the deployment is fine.",
        fix=
        "Shorten the prompt or lower max_tokens so prompt + completion fit max_model_len; "
        "keep sampling parameters in range (temperature >= 0, 0 < top_p <= 1); send one "
        "image per request, smaller images."),
    # The client's (or image's) Python lacks a package; SDKs and proxies wrap this in their
    # own error classes (a BadRequestError that says "import failed"), which are not the cause.
    Rule(kind="other", patterns=(
        # Raised, not probed: vLLM logs "No module named 'libtpu'" while it looks for platforms.
        r"ModuleNotFoundError: No module named", r"(?i)\bimport (failed|error)\b",
        r"(?i)\bplease (run )?`?pip install\b",
    ),
        explanation=
        "A Python package that the client (or a custom image) needs is not installed, so "
        "the call failed before it reached a deployment.",
        fix=
        "Install the package the message names in the notebook's environment (for Vertex "
        "AI, `pip install -U google-cloud-aiplatform`) and restart the kernel."),
    Rule(kind="other", patterns=(
        r"(?i)\b(bfloat16|bf16|fp8|float8|fp4|\w+ ?dtype)\b[^\n]{0,40}\bsupported\b[^\n]{0,40}"
        r"\bcompute capability\b",
        r"(?i)\bcompute capability\b[^\n]{0,30}\b(of at least|>=|or (higher|above|newer)|is "
        r"required|required)\b",
        r"(?i)\b(GPU|device|hardware)\b[^\n]{0,30}\b(does not|doesn't|do not) support "
        r"(bfloat16|bf16|fp8|float8)\b",
        r"(?i)\bonly supports? (Ampere|Ada|Hopper|Turing)\b[^\n]{0,20}\b(GPUs?|or newer)\b",
    ),
        explanation=
        "The GPU is too old for what the model asked of it: bfloat16, FP8 or a kernel needs a "
        "newer compute capability than this card has (a V100 or T4 has no bfloat16).",
        fix=
        "Set dtype to float16 (vLLM's --dtype=half) or deploy on a newer GPU (L4, A100, H100; "
        "nbhelpers.hardware lists the pairs)."),
    Rule(kind="other", patterns=(r"NCCL error",),
         explanation=
         "The GPUs' collective communication (NCCL) failed while the engine started.",
         fix=
         "A broken multi-GPU start: retry, use fewer GPUs (tensor_parallel_size), or a "
         "machine whose GPUs are connected (a3/a2 rather than g2 for large tensor parallel)."),
    Rule(kind="other", patterns=(
        r"forward compatibility was attempted on non supported HW",
        r"CUDA driver version is insufficient", r"cudaGetDeviceCount",
        r"(?i)driver/library version mismatch",
    ),
        explanation=
        "The container's CUDA libraries and the machine's GPU driver do not fit together (an "
        "image built for a newer driver, or a GPU the image does not support).",
        fix=
        "Use the serving image tag nbhelpers.releases names for this GPU, or a machine type "
        "from nbhelpers.hardware; a custom image must match the host's driver."),
    Rule(kind="timeout", tier=WEAK, patterns=(
        r"DEADLINE_EXCEEDED", r"DeadlineExceeded", r"(?i)deadline (of [\d.]+s )?exceeded",
        r"[Tt]ook too long", r"(?i)timed[ -]?out", r"(?i)\b504 Gateway Time-?out",
        r"\b504 Timeout", r"\b(Read|Connect|Write|Pool)Timeout", r"APITimeoutError",
        r"\bTimeout(Error|Exception|Expired)\b", r"deployment timed out",
        r"(?i)\b(for|takes?|taking|took) (too|to) long\b",
        # Loading or start-up "takes longer than 60 seconds", past a limit of so many seconds.
        rf"(?i)\b(takes?|took|taking|needs?|needed|requires?) (longer|more) than (the |a |its )?"
        rf"{_DURATION.replace(' ?', '[ -]?')}",
        r"(?i)did not (become ready|respond|finish|complete) (with)?in\b",
        r"Gateway ?Time-?out", r"(?i)upstream request timeout", r"\bETIMEDOUT\b",
        # Servers and launchers that give up waiting: "failed to start within timeout", "in
        # time", "timeout of 30000ms exceeded", "Timed out waiting for", "WORKER TIMEOUT".
        r"(?i)\b(start|respond|finish|complete|ready|load|connect)\w*\s+(with)?in\s+(the\s+)?"
        r"(time(out)?|time limit|allotted time|deadline)\b",
        r"(?i)\btimeout\b[^\n]{0,20}\b(exceeded|expired|reached|elapsed)\b",
        r"(?i)\btime(d)?[ -]?out (waiting|while waiting|after)\b",
        r"(?i)\b(worker|request|startup|start-up|socket|read|connect|load) timeout\b",
        # A health check's or probe's time-out that was hit ("a hard-coded health check
        # time-out of 120s", "fails due to this healthcheck time-out"), not one that is named
        # as a setting ("the health check timeout can be extended").
        r"(?i)\b(health ?check|ping|probe|readiness|liveness|start-?up)[ -]?time[ -]?out (of "
        rf"{_DURATION}|\(|=|exceeded|expired|reached|elapsed)",
        r"(?i)\b(fail\w*|abort\w*|killed|stopped|gave up)\b[^\n]{0,40}\b(due to|because of|on) "
        r"(the |this |a |its )?[\w-]*[ -]?time[ -]?outs?\b",
        # vLLM's "Aborted request ...": the client gave up (its timeout) before the reply.
        r"\bAborted request\b",
        # A health check or probe that keeps failing while the model still loads.
        r"(?i)\b(health ?checks?|readiness|liveness|start-?up|ping)( probes?| checks?)?\b"
        r"[^\n]{0,30}\b(fail\w*|timing out|times out)\b[^\n]{0,40}\b(while|before|during|until)"
        r"\b[^\n]{0,30}\b(load\w*|download\w*|start\w*|warm\w*)",
        r"ProgressDeadlineExceeded", r"GetTimeoutError", r"(?i)exceeded its progress deadline",
        # Node's AbortSignal.timeout, Envoy's "reset reason: connection timeout", a load or
        # start that "exceeded the 1800 second limit" or "did not load in 600 seconds".
        r"(?i)\baborted due to timeout\b", r"(?i)\bconnection timeout\b",
        r"(?i)\bexceeded the \d+(\.\d+)? ?(ms|s|secs?|seconds?|mins?|minutes?|hours?)\b[^\n]{0,10}"
        r"\b(limit|timeout|deadline)\b",
        r"(?i)\bdid(n't| not) (load|start|become (ready|healthy)|respond|finish|complete) in "
        r"\d+(\.\d+)? ?(ms|s|secs?|seconds?|mins?|minutes?|hours?)\b",
        # "times out", "timing out"; google-api-core's unfinished long-running operation and its
        # "did not complete within the designated timeout"; a "900s timeout"; health checks and
        # readiness waits that give up "after 15s" or "after 30 attempts".
        r"(?i)\btim(es|ing)[ -]out\b", r"_OperationNotComplete",
        r"(?i)\b(complete|finish|respond)\w*\s+within\s+the\s+(\w+\s+)?time(out| limit)\b",
        r"[A-Z]\w*Timeout(Error|Exception)\b", r"(status|code|HTTP|Error)\W{0,4}408\b",
        r"(?i)\bexceeded (the )?(time limit|max(imum)? (time|run ?time|execution time|duration))\b",
        r"(?i)\bdid(n't| not) (load|start|respond|finish|complete|become (ready|healthy))\b"
        r"[^\n]{0,60}\bwithin\b", r"(?i)\bwithin the (timeout|time limit)( period)?\b",
        r"(?i)\b(healthy|ready|up|started) in time\b", r"(?i)\bgave up waiting\b",
        r"(?i)\b\d+(\.\d+)? ?(ms|s|secs?|seconds?|mins?|minutes?|h|hours?)[ -]time-?out\b",
        r"(?i)\b(health ?check|readiness( probe)?|startup probe|ready)\b[^\n]{0,40}\bafter "
        r"\d+(\.\d+)? ?(ms|s|secs?|seconds?|mins?|minutes?|attempts|retries|tries)\b",
    ),
        explanation=
        "The request (or the deployment) ran past its time limit: online predictions on a "
        "shared endpoint are cut off after about 60 seconds.",
        fix=
        "Lower max_tokens, stream the reply (chat with stream=True on a dedicated endpoint), "
        "or split the work; for deployments, wait longer (large models take up to an hour) "
        "and read the logs."),
    # Stopped from outside while still loading the weights: an orchestrator's start-up or
    # liveness probe gave up (vLLM turns SIGTERM into KeyboardInterrupt("terminated")).
    Rule(kind="timeout", tier=WEAK, patterns=(
        r"KeyboardInterrupt: terminated", r"(?i)\b(received|got|caught) (signal )?(SIGTERM|"
        r"signal 15)\b", r"(?i)\bterminated by (signal )?(SIGTERM|signal 15)\b",
    ),
        context=r"(?i)\bloading\b[^\n]{0,40}\b(weights|checkpoint|shards?|model|safetensors)\b",
        explanation=
        "The server was stopped from outside (SIGTERM) while it was still loading the model: "
        "whatever runs it (a health check, a start-up or liveness probe) gave up waiting before "
        "the weights were loaded.",
        fix=
        "Give the server longer to start (a longer start-up probe or deploy timeout; large "
        "models take up to an hour), or load faster: weights on gs:// in the same region "
        "(WEIGHTS_URI), a smaller model or more GPUs."),
    # The serving image never ran: a wrong tag or registry path (an access refusal beside it
    # is named as permission, a root cause).
    Rule(kind="container_exited", tier=WEAK, patterns=(
        r"\bImagePullBackOff\b", r"\bErrImagePull\b", r"Back-off pulling image",
        r"(?i)\bfailed to pull (the )?image\b", r"(?i)\bmanifest (for \S+ )?(not found|unknown)\b",
    ),
        explanation=
        "The serving container's image could not be pulled, so the model server never "
        "started: the image path or tag does not exist, or the registry refused access.",
        fix=
        "Use the serving image that nbhelpers.releases names (its tag exists in Google's "
        "registry); a custom image must be pushed to Artifact Registry in the project, "
        "readable by the Vertex AI service agent."),
    # A traceback through the chat-template renderer (vLLM's apply_hf_chat_template and its
    # "Error in preprocessing prompt inputs", transformers' render_jinja_template) that ends
    # in a plain Python error ("can only concatenate str (not "list") to str"): the template
    # does not handle these messages. A named cause (a prompt too long, "roles must
    # alternate") is a root cause and wins.
    Rule(kind="chat_template", tier=WEAK, patterns=(
        r"\bin (apply_hf_chat_template|apply_chat_template|render_jinja_template|"
        r"_compile_jinja_template|resolve_chat_template|apply_mistral_chat_template)\b",
    ),
        explanation=
        "Rendering the chat template failed on these messages: the template (the tokenizer's "
        "or the one passed with --chat-template) does not handle their shape (list content, "
        "tool calls, a system message), or the model has none that fits.",
        fix=
        "Pass a chat template that handles these messages with the deployment: CHAT_TEMPLATE "
        "in 01/02 (vLLM's --chat-template), such as Llama 3's below; send content as a plain "
        "string; or deploy the Instruct variant, whose tokenizer has its own.",
        deploy_parameters=(("CHAT_TEMPLATE", LLAMA3_CHAT_TEMPLATE),)),
    # vLLM's KV-cache sizing step failing with its message cut off (V0's initialize_cache and
    # raise_if_cache_size_invalid, V1's check_enough_kv_cache_memory): it raises either "No
    # available memory for the cache blocks" (an oom, a root cause that wins when present) or
    # "max seq len ... larger than ... KV cache", the commoner of the two.
    Rule(kind="max_model_len", tier=WEAK, patterns=(
        r"Error executing method '?(initialize_cache|_?initialize_kv_caches?|"
        r"determine_num_available_blocks)\b",
        r"\bin (raise_if_cache_size_invalid|_?check_enough_kv_cache_memory|"
        r"_?initialize_kv_caches?)\b",
    ),
        explanation=
        "vLLM failed while sizing the KV cache after loading the weights: what is left of the "
        "GPU memory cannot hold a sequence of max_model_len tokens (the message itself was cut "
        "off; if it says 'No available memory for the cache blocks', nothing is left at all).",
        fix=
        "Lower max_model_len (and max_num_seqs), raise gpu_memory_utilization a little "
        "(0.9 -> 0.95), or use more or larger GPUs; the planner (plan_memory) gives numbers."),
    # Storage that could not be read at all, in servers' own words (Triton's "Could not get
    # MetaData for bucket", "unable to list objects in bucket", "failed to access bucket"):
    # mostly credentials or a missing role; an explicit refusal or a root cause wins.
    Rule(kind="permission", tier=WEAK, patterns=(
        r"(?i)\b(could not|couldn't|unable to|failed to|cannot|can't) (get|read|access|list|"
        r"open|fetch|stat|head)\b[^\n]{0,40}\bbucket\b",
        r"(?i)\b403\b[^\n]{0,60}\bForbidden\b", r"(?i)\bForbidden\b[^\n]{0,20}\b403\b",
    ),
        explanation=
        "The server could not read the storage it was pointed at (a bucket, or a URL answered "
        "403 Forbidden): usually the service account it runs as has no read role on it, or "
        "its credentials are missing; otherwise the bucket name is wrong.",
        fix=
        "Grant roles/storage.objectViewer on the weights' bucket to the Vertex AI service "
        "agent (service-PROJECT_NUMBER@gcp-sa-aiplatform.iam.gserviceaccount.com) or to the "
        "service account the deployment runs as, and check the gs:// path (WEIGHTS_URI) names "
        "a bucket that exists in this project."),
    # A status word alone: the message beside it (a quota, a token limit) names the cause.
    Rule(kind="quota", tier=WEAK, patterns=(r"RESOURCE_EXHAUSTED", r"ResourceExhausted"),
         explanation=
         "Google refused the call with RESOURCE_EXHAUSTED: the project ran out of a quota (GPUs "
         "or requests per minute) in this region.",
         fix=
         "Read the quota named in the error (IAM & Admin > Quotas) and request more, use "
         "another region, or retry later with backoff (predict_many does)."),
    Rule(kind="bad_request", tier=WEAK, patterns=(
        r"\b400\b.*INVALID_ARGUMENT", r"InvalidArgument: 400", r"Invalid JSON payload",
        r"BadRequestError", r"invalid_request_error", r"Error code: 4(00|22)\b",
        # vLLM's "The following fields were present in the request but ignored: {'schema'}":
        # a malformed field that a later error (often a bare 500) follows.
        r"(?i)\b(fields?|parameters?|params|arguments?|keys?)\b[^\n]{0,60}\bbut (were |was |are "
        r"|is )?ignored\b", r"(?i)\b(ignor(ed|ing)|dropp(ed|ing)) (unknown|unsupported|extra) "
        r"(request )?(fields?|parameters?|params|arguments?|keys?)\b",
        r"(?i)\b(unknown|unrecognized|unexpected|unsupported) (request )?(fields?|parameters?|"
        r"params) (in|for) (the )?request\b",
        r"\b400 Bad Request", r"UnprocessableEntityError", r"\b422 Unprocessable",
    ),
        explanation=
        "The server refused this request as malformed (a 400 or 422); the deployment is fine.",
        fix=
        "Read the message in the error: keep prompt + max_tokens within max_model_len and "
        "sampling parameters in range; send one image per request, smaller images."),
    Rule(kind="container_exited", tier=CONSEQUENCE, patterns=(
        r"Model server (exited unexpectedly|never became ready|terminated)",
        r"model server container terminated", r"Engine core initialization failed",
        r"Engine process failed to start", r"EngineCore failed to start",
        r"container failed to start and listen on the port",
        r"is not ready and cannot serve traffic",
        r"(?i)(Readiness|Liveness|Startup) [Pp]robe.{0,40}(failed|failure threshold)",
        r"Back-off restarting failed container", r"CrashLoopBackOff",
        r"health check \S+ never passed", r"(?i)exited with (exit )?code [1-9]",
        r"container \S+ exited \([1-9]\d*\)", r"\bExited \([1-9]\d*\)",
        r"EngineDeadError", r"Engine loop has died", r"EngineCore encountered a fatal error",
        r"(?i)container called exit\([1-9]\d*\)", r"did not pass the ping health check",
        r"(?i)container terminated with (exit )?code [1-9]",
        r"(?i)\bterminated with (exit )?(code|status) [1-9]",
        r"(?i)\b(process|proc|worker|engine ?core|server|container|actor|raylet|subprocess|"
        r"replica|pod|shard|node)\b[^\n]{0,60}\b(died|"
        r"crashed|terminated unexpectedly|exited unexpectedly)\b",
        # A server exits only when it fails, whatever code it returns.
        r"(?i)\b(inference|model|api|serving|web|http|vllm)[ -]?server\b[^\n]{0,40}\b(exited|"
        r"stopped|terminated)\b", r"(?i)exited with (exit )?status [1-9]",
        r"(?i)\bshard \d+ failed to start", r"Webserver Crashed",
        r"(?i)exited with a non-?zero exit (code|status)",
        # The verb first: "Crashed container in pod", "crashing pod", "crash of the worker".
        r"(?i)\bcrash(ed|ing)?\b[^\n]{0,20}\b(container|pod|worker|process|server|replica)\b",
        r"(?i)\bfailed to start (the )?(model |inference |serving )?server\b",
        # Any launcher's words for a server that did not come up: "vLLM failed to start",
        # "engine failed to initialize", "could not start the container".
        r"(?i)\b(vllm|tgi|sglang|server|engine|engine ?core|worker|container|process|pod|"
        r"replica|shard|backend|runtime|launcher)\b[^\n]{0,30}\bfailed to (start|launch|"
        r"initiali[sz]e|boot|come up|spawn)\b", r"(?i)\b(could not|couldn't|unable to|cannot)"
        r" start (the )?(vllm|server|engine|container|model server|worker)\b",
        # Exits and shutdowns that leave no message: the cause is before them, or nowhere.
        r"(?i)\b(shut(s|ting)? ?down|exit(s|ed)?|stop(s|ped)?|die(s|d)?|crash(es|ed)?|"
        r"terminat(es|ed)|killed|reboot(s|ed)?)\b[^\n]{0,60}\bwithout (any |an )?(error|"
        r"message|log|output|traceback|warning)s?\b",
        r"(?i)\b(exit(s|ed)?|die(s|d)?|crash(es|ed)?|stop(s|ped)?) silently\b|\bsilently "
        r"(exit(s|ed)?|die(s|d)?|crash(es|ed)?|stop(s|ped)?)\b",
        r"(?i)\breturned (a )?non-?zero exit (status|code)\b", r"(?i)\bExit Code:\s*[1-9]",
        # TGI's launcher ("Error: ShardCannotStart", "WebserverFailed"), systemd's unit that
        # failed ("code=exited, status=1/FAILURE", "Failed with result 'exit-code'"), a crash.
        r"\bShard(CannotStart|Failed)\b|\bWebserverFailed\b",
        r"(?i)\bcode=(exited|killed|dumped), status=[1-9]",
        r"Failed with result '(exit-code|core-dump|signal)'",
        r"(?i)\bSegmentation fault\b|\bSIGSEGV\b|\(core dumped\)",
        # Vertex AI's deploy operation ending with no cause named (the container's logs have it).
        r"(?i)\b(model|deployment) failed to deploy due to an internal error",
        r"(?i)\bfailed to deploy (the )?model\b[^\n]{0,60}\b(internal error|no (further )?"
        r"(details|reason))",
    ),
        explanation=
        "The model server exited (or never answered its health check) and its logs name no "
        "earlier cause. Often the container's `command` was overridden, which skips the "
        "image's launcher (it downloads gs:// weights); otherwise the cause is in the "
        "container's first log lines, before the exit.",
        fix=
        "Read the container's first log lines (this notebook shows the newest 50; raise "
        "LOG_LINES). Keep the container command empty and vLLM's module and flags in args (as "
        "nbhelpers.container_spec does); check WEIGHTS_URI exists and the deployment's "
        "service account can read it; redeploy once with the same settings to rule out a "
        "transient failure."),
    Rule(kind="container_exited", tier=CONSEQUENCE, patterns=(
        r"(?i)No CUDA GPUs are available", r"NVML Shared Library Not Found",
        r"CUDA platform is not available", r"(?i)Failed to infer device type",
    ),
        explanation=
        "The container saw no GPU, so vLLM could not start: the deployment has no accelerator "
        "attached (or the image cannot reach its driver), and the model server exited.",
        fix=
        "Deploy with an accelerator (ACCELERATOR_TYPE and a machine type that carries it; "
        "nbhelpers.hardware lists the pairs) and the serving image nbhelpers.releases names."),
)

# The second stage, for text that no rule above names: each family's generic vocabulary,
# weighted by how surely a term belongs to it. A kind is named only when its distinct terms
# add up to VOCABULARY_MIN and lead the next kind by VOCABULARY_LEAD, so a text with a stray
# "403" or "template" stays "other". Terms are words of the family, never of one excerpt.
VOCABULARY_MIN, VOCABULARY_LEAD = 3, 2
VOCABULARY: dict[str, tuple[tuple[str, int], ...]] = {
    "payload_too_large": (
        (r"\b413\b", 2), (r"(?i)\btoo (large|big)\b", 2), (r"(?i)\b(payload|upload)\b", 1),
        (r"(?i)\b(request|message|http) body\b|\bbody\b", 1),
        (r"(?i)\b(size|length|bytes?)[ _-]?limit|\blimit[^\n]{0,20}\bbytes\b", 2),
        (r"(?i)\bmax(imum)?[ _-]?(body|payload|request|message|upload)?[ _-]?(size|bytes)\b", 2),
        (r"(?i)\b[\d.,]+ ?([KMG]i?B|bytes)\b", 1), (r"(?i)\b(exceed\w*|larger than)\b", 1),
    ),
    "permission": (
        (r"\b403\b", 2), (r"(?i)\bforbidden\b", 2), (r"(?i)\bdenied\b", 2),
        (r"(?i)\bnot (authori[sz]ed|allowed to)\b|\bunauthori[sz]ed\b", 2),
        (r"(?i)\bpermissions?\b", 2), (r"(?i)\biam\b|\broles/", 1),
        (r"(?i)\bservice[ -]?account\b|\bcredentials?\b|\bprincipal\b", 1),
        (r"(?i)\b(bucket|gs://|storage)\b", 1), (r"(?i)\baccess\b", 1),
    ),
    "region_unavailable": (
        (r"(?i)\b(regions?|zones?|locations?)\b", 1),
        (r"(?i)\b(not|un)(available|supported|offered)\b|\bnot (available|supported|offered)\b",
         1), (r"(?i)stock-?out|resource[ _]pool[ _]exhausted|\bcapacity\b", 2),
        (r"(?i)\b(accelerators?|machine[ _]type|gpu[ _]type|instance[ _]type|GPUs?)\b", 1),
        (r"\b(us|europe|asia|me|northamerica|southamerica|australia|africa)-[a-z]+\d\b", 1),
    ),
    "chat_template": (
        (r"(?i)\bjinja2?\b", 2), (r"(?i)\bchat[ _-]?template\b|apply_chat_template", 2),
        (r"(?i)\btemplate\b", 1), (r"(?i)\bundefined\b|\bunknown (test|filter|tag)\b", 1),
        (r"(?i)\b(render\w*|parse|syntax)\b", 1),
    ),
    "quota": (
        (r"(?i)\bquotas?\b", 3), (r"\b429\b", 2), (r"(?i)\brate[ _-]?limit", 2),
        (r"(?i)\b(limit|exceeded|exhausted)\b", 1), (r"(?i)\bper (minute|project|region)\b", 1),
    ),
    "timeout": (
        (r"(?i)\btime[ _-]?(d[ _-]?)?out|\bdeadline\b", 2), (r"\b(504|408)\b", 2),
        (r"(?i)\bwait(ing|ed)?\b|\bseconds\b|\b\d+ ?(ms|s)\b", 1),
    ),
    "container_exited": (
        (r"(?i)\bcrash\w*|\bexit(ed)?\b|\bterminated\b|\bdied\b", 2),
        (r"(?i)\b(container|pod|replica|worker|process)\b", 1),
        (r"(?i)\b(restart\w*|health ?check|readiness|never became ready)\b", 1),
    ),
    "bad_request": (
        (r"\b(400|422)\b", 2), (r"(?i)\binvalid\b|\bvalidation\b", 1),
        (r"(?i)\b(param(eter)?s?|argument|field)\b", 1), (r"(?i)\b(should|must) be\b", 1),
        (r"(?i)\b(max_tokens|temperature|top_p|top_k|messages|prompt)\b", 1),
    ),
    "oom": (
        (r"(?i)\bmemory\b", 1), (r"(?i)\balloc\w*\b", 1), (r"(?i)\b(GiB|MiB)\b", 1),
        (r"(?i)\b(CUDA|GPU|device)\b", 1),
    ),
    "max_model_len": (
        (r"(?i)max[_ -]?model[_ -]?len|max seq(uence)? len", 2),
        (r"(?i)\bKV[ _-]?cache\b|\b(GPU|cache) blocks\b", 2), (r"(?i)\btokens\b", 1),
    ),
    "hf_auth": (
        (r"(?i)hugging ?face|\bhf_hub|\bHF_TOKEN\b", 2), (r"\b401\b", 2),
        (r"(?i)\btokens?\b", 1), (r"(?i)\bgated\b", 2), (r"(?i)\b(login|log in)\b", 1),
        (r"(?i)\b(expired|revoked)\b", 1),
    ),
    "unsupported_model": (
        (r"(?i)\barchitectures?\b", 2), (r"(?i)\bmodel[ _]type\b", 2),
        (r"(?i)\b(not|un)(supported|recogni[sz]ed)\b|\bnot (supported|recogni[sz]ed)\b", 1),
        (r"(?i)\b(transformers|vllm)\b", 1),
    ),
}
_VOCABULARY = {kind: [(re.compile(term), weight) for term, weight in terms]
               for kind, terms in VOCABULARY.items()}


# The first log level named near a line's start is INFO or DEBUG (vLLM's, Python logging's,
# glog's "I1126" excepted: too short to tell from other text).
_INFORMATIONAL = re.compile(
    r"^(?:(?!\b(?:WARN(?:ING)?|ERROR|CRITICAL|FATAL)\b).){0,80}?\b(?:INFO|DEBUG)\b")


def _vocabulary_guess(lines: list[str]) -> tuple[str, list[int]] | None:
    """The family whose generic terms clearly dominate a text no rule names, with the lines
    that carry the most of them; None when no kind reaches VOCABULARY_MIN with a clear lead."""
    # A line logged at INFO or DEBUG reports, it does not fail: a healthy start's own lines
    # (vLLM's "args: {... max_model_len ...}", "GPU KV cache size: N tokens") must not add up
    # to a guess. Lines keep their positions, for the evidence.
    lines = ["" if _INFORMATIONAL.match(line) else line for line in lines]
    scores = {kind: sum(weight for term, weight in terms if any(term.search(ln) for ln in lines))
              for kind, terms in _VOCABULARY.items()}
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    (kind, best), (_, second) = ranked[0], ranked[1]
    if best < VOCABULARY_MIN or best - second < VOCABULARY_LEAD:
        return None
    weight_of = [sum(w for term, w in _VOCABULARY[kind] if term.search(ln)) for ln in lines]
    top = max(weight_of)
    return kind, [i for i, w in enumerate(weight_of) if w == top]


OTHER = Rule(
    kind="other", patterns=(),
    explanation="No known cause was recognised in this text.",
    fix="Read the evidence lines; the debugging notebook shows the endpoint's newest logs. Errors "
    "such as NCCL failures usually mean a broken multi-GPU start: retry, or use fewer GPUs.",
)
_SENTENCE_END = re.compile(r"[.:;!?)\]}`'\"]\s*$")
_GENERIC = re.compile(r"Model server (exited unexpectedly|never became ready)|Traceback|"
                      r"Error|ERROR|failed", re.IGNORECASE)
_COMPILED = {id(rule): ([re.compile(p) for p in rule.patterns],
                        re.compile(rule.context) if rule.context else None,
                        re.compile(rule.unless) if rule.unless else None) for rule in RULES}


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


def _hits(rule: Rule, lines: list[str], text: str) -> list[int]:
    patterns, context, unless = _COMPILED[id(rule)]
    if context is not None and not context.search(text):
        return []
    if unless is not None and unless.search(text):
        return []
    hits: list[int] = []
    for i, line in enumerate(lines):
        if any(p.search(line) for p in patterns):
            hits.append(i)
        elif i + 1 < len(lines) and not _SENTENCE_END.search(line):
            # A message wrapped mid-sentence (issue prose, Markdown, gcloud's YAML) is read
            # with its next line; both lines are its evidence.
            joined = f"{line} {_continuation(line, lines[i + 1])}"
            if any(m.start() < len(line) < m.end()  # the match spans the break
                   for p in patterns for m in p.finditer(joined)):
                hits += [i, i + 1]
    return sorted(set(hits))


def _continuation(line: str, following: str) -> str:
    """The next line without the log prefix both lines share (a journal's "Jun 24 14:36:17 host
    python3[1122160]:", Ray's "(pid=20770) ERROR 06-28 ...]"), digits being equal to digits,
    so that a message wrapped inside a prefixed log reads as one sentence."""
    n = 0
    for a, b in zip(line, following, strict=False):  # the shorter line bounds the prefix
        if a != b and not (a.isdigit() and b.isdigit()):
            break
        n += 1
    return (following[n:] if n >= 12 and following[:n].strip() else following).strip()


def _root_cause(lines: list[str], text: str) -> tuple[Rule, list[int]] | None:
    """The rule that names the root cause and the lines it matched: the strongest tier, in
    it the earliest line (ties on one line go to the earlier rule), then any refinement."""
    matched = [(rule, hits) for rule in RULES if (hits := _hits(rule, lines, text))]
    if not matched:
        return None
    order = {id(rule): n for n, rule in enumerate(RULES)}
    rule, hits = min(matched, key=lambda m: (m[0].tier, m[1][0], order[id(m[0])]))
    for specific, specific_hits in matched:
        if specific.refines == rule.kind:
            return specific, specific_hits
    return rule, hits


def diagnose_text(text: str, *, max_evidence: int = 3) -> Diagnosis:
    """Classifies log or error text; the evidence is the lines that matched the root cause."""
    # Error text may quote a token: it is read, never echoed by a refusal, and evidence is
    # redacted where it is shown (diagnose_endpoint, the debugging notebook).
    checks.text("text", "" if text is None else text, empty_ok=True, secret_ok=True)
    checks.whole("max_evidence", max_evidence, low=1, high=100)
    text = text or ""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    found = _root_cause(lines, text)
    if found is not None:
        rule, hits = found
        details = _details(rule.kind, text)
        suggested = _suggest(rule.kind, details) or dict(rule.deploy_parameters)
        return Diagnosis(kind=rule.kind, evidence=_unique([lines[i] for i in hits])[:max_evidence],
                         explanation=rule.explanation, fix=rule.fix, details=details,
                         deploy_parameters=suggested)
    if guess := _vocabulary_guess(lines):
        kind, hits = guess
        rule = _family_rule(kind)
        return Diagnosis(kind=kind, evidence=_unique([lines[i] for i in hits])[:max_evidence],
                         explanation="Likely (no exact wording matched; the words of this "
                         "family did): " + rule.explanation, fix=rule.fix,
                         deploy_parameters=dict(rule.deploy_parameters))
    hits_ = [line for line in lines if _GENERIC.search(line)] or lines[-1:]
    return Diagnosis(kind=OTHER.kind, evidence=_unique(hits_)[-max_evidence:],
                     explanation=OTHER.explanation, fix=OTHER.fix)


def _family_rule(kind: str) -> Rule:
    """The rule whose explanation and fix speak for a whole kind: its first rule without a
    context, root-cause tier first (timeout, for one, has only a weaker tier)."""
    ranked = sorted((r for r in RULES if r.kind == kind),
                    key=lambda r: (bool(r.context), r.tier != ROOT))
    return ranked[0]


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
