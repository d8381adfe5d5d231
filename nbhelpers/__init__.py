"""nbhelpers: deploy and use Llama 3.1 / 3.2 on Vertex AI with vLLM, from notebooks.

The public API is what the notebooks and their users call. It is re-exported lazily, so
`import nbhelpers` stays fast (no Google SDK import); no exported name is also a module name, so
importing a module never changes what `nbhelpers.<name>` is.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "connect": "connection",
    "ConfigError": "errors", "DeploymentError": "errors",
    "models": "catalog", "get_model": "catalog",
    "model_picker": "widgets", "machine_picker": "widgets", "confirm_deploy": "widgets",
    "require_deploy_if_missing": "widgets", "show_request": "widgets", "error_box": "widgets",
    "explain_args": "vllm_args",
    "VllmOptions": "container",
    "plan_memory": "planner",
    "prepare_project": "prepare",
    "plan_deployment": "plans", "deploy": "deployments", "reconnect": "deployments",
    "run_deployment": "deployments",
    "Scaling": "sizing",
    "Requests": "request_rules",
    "predict": "prediction", "predict_image": "prediction", "build_instance": "prediction",
    "chat": "openai_chat", "chat_client": "openai_chat", "build_messages": "openai_chat",
    "predict_many": "batch", "chat_many": "batch",
    "run_batch_prediction": "batch_jobs",
    "load_image": "images", "sample_image": "images",
    "diagnose_text": "diagnose", "diagnose_endpoint": "diagnose",
    "find_resources": "teardown", "cleanup": "teardown", "cleanup_expired": "teardown",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    home = _EXPORTS.get(name)
    if home is None:
        raise AttributeError(f"module 'nbhelpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nbhelpers.{home}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
