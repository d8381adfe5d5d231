"""nbhelpers: deploy and use Llama 3.1 / 3.2 on Vertex AI with vLLM, from notebooks.

The public API is re-exported lazily so `import nbhelpers` stays fast (no Google SDK import).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

_EXPORTS = {
    "connect": "connection", "Session": "connection",
    "Settings": "settings",
    "ConfigError": "errors", "DeploymentError": "errors",
    "MODELS": "catalog", "get_model": "catalog", "models": "catalog", "Hardware": "catalog",
    "VllmOptions": "container",
    "prepare_project": "prepare",
    "plan_deployment": "deploy", "deploy": "deploy", "reconnect": "deploy",
    "Deployment": "deploy",
    "predict": "predict", "predict_image": "predict",
    "chat": "chat", "chat_client": "chat",
    "predict_many": "batch", "chat_many": "batch",
    "to_data_url": "images", "load_image": "images", "sample_image": "images",
    "find_resources": "cleanup", "cleanup": "cleanup", "cleanup_expired": "cleanup",
    "model_picker": "widgets",
    "serving_quota": "quota", "require_quota": "quota",
    "plan": "planner", "Plan": "planner",
    "diagnose_text": "diagnose", "diagnose_endpoint": "diagnose",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nbhelpers' has no attribute {name!r}")
    importlib.import_module(f"nbhelpers.{module}")
    # Importing a submodule binds its name on the package (nbhelpers.deploy would become the
    # module); bind the exported functions over them, for every module loaded so far.
    for export, home in _EXPORTS.items():
        loaded = sys.modules.get(f"nbhelpers.{home}")
        if loaded is not None:
            globals()[export] = getattr(loaded, export)
    return globals()[name]


def __dir__() -> list[str]:
    return __all__
