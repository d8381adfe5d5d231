"""The Llama 3.1 and 3.2 models of the tutorial, and the hardware each is served on.

Facts from Meta's model cards and Google's Model Garden notebooks (see ../shared/docs/anchors.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from nbhelpers import checks
from nbhelpers.errors import ConfigError, choices
from nbhelpers.hardware import Hardware


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One catalog entry: a Hugging Face repository and how the tutorial serves it."""

    name: str  # the picker's label, e.g. "Llama-3.1-8B-Instruct"
    hf_id: str
    family: str  # "llama3.1" or "llama3.2"
    modality: str  # "text" or "vision"
    instruct: bool
    params_b: float
    hardware: Hardware
    max_model_len: int = 4096
    max_num_seqs: int = 256
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    gated: bool = True  # every meta-llama repository needs an accepted licence
    alternatives: tuple[Hardware, ...] = field(default=())

    @property
    def has_chat_template(self) -> bool:
        return self.instruct

    @property
    def config(self) -> dict:
        """The architecture part of the model's Hugging Face config.json (for the planner)."""
        return hf_config(self.name)

    @property
    def max_positions(self) -> int:
        """The longest context the model was trained for (config.json's
        max_position_embeddings); vLLM refuses a longer max_model_len."""
        config = self.config
        return int(config.get("text_config", config)["max_position_embeddings"])

    @property
    def slug(self) -> str:
        """Label-safe short name, e.g. 'llama-3-1-8b-instruct'."""
        return self.name.lower().replace(".", "-")


def _hw(machine_type: str) -> Hardware:
    return Hardware.for_machine(machine_type)


def _text(name: str, params_b: float, machine: str, **extra) -> list[ModelSpec]:
    family = "llama3.1" if name.startswith("Llama-3.1") else "llama3.2"
    base_name, instruct_name = name, name.replace("-FP8", "") + "-Instruct" + (
        "-FP8" if name.endswith("-FP8") else ""
    )
    return [
        ModelSpec(name=n, hf_id=f"meta-llama/{n}", family=family, modality="text",
                  instruct=n == instruct_name, params_b=params_b, hardware=_hw(machine), **extra)
        for n in (base_name, instruct_name)
    ]


def _vision(size: str, params_b: float, machine: str) -> list[ModelSpec]:
    names = (f"Llama-3.2-{size}-Vision", f"Llama-3.2-{size}-Vision-Instruct")
    return [
        ModelSpec(name=n, hf_id=f"meta-llama/{n}", family="llama3.2", modality="vision",
                  instruct=n.endswith("Instruct"), params_b=params_b, hardware=_hw(machine),
                  max_model_len=4096, max_num_seqs=12, enforce_eager=True)
        for n in names
    ]


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        *_text("Llama-3.1-8B", 8.03, "g2-standard-12"),
        *_text("Llama-3.1-70B", 70.6, "a3-highgpu-4g", alternatives=(_hw("g2-standard-96"),)),
        *_text("Llama-3.1-405B-FP8", 405.9, "a3-highgpu-8g", max_model_len=8192,
               gpu_memory_utilization=0.95),
        *_text("Llama-3.2-1B", 1.24, "g2-standard-8"),
        *_text("Llama-3.2-3B", 3.21, "g2-standard-8"),
        *_vision("11B", 10.6, "a2-highgpu-1g"),
        *_vision("90B", 88.6, "a3-highgpu-8g"),
    )
}


# Meta first published the Llama 3.1 repositories as `meta-llama/Meta-Llama-3.1-*` and later
# renamed them without "Meta-" (Hugging Face redirects the old ids). Google's Llama 3.1 notebooks
# still deploy under the old ids (their MODEL_ID environment and model picker), so an endpoint
# such a notebook made names its model that way: each old id, with or without the
# `meta-llama/` prefix, is an alias of the catalog's model. The one alias table.
ALIASES: dict[str, str] = {
    alias: m.name
    for m in MODELS.values() if m.family == "llama3.1"
    for alias in (f"Meta-{m.name}", f"meta-llama/Meta-{m.name}")
}

FAMILIES = ("llama3.1", "llama3.2")
MODALITIES = ("text", "vision")


def models(family: str | None = None, modality: str | None = None,
           instruct_only: bool = False) -> list[ModelSpec]:
    """Catalog entries, optionally one family ("llama3.1"/"llama3.2"), one modality, or only
    the Instruct models (the ones with a chat template)."""
    if family is not None:
        checks.one_of("family", family, FAMILIES)
    if modality is not None:
        checks.one_of("modality", modality, MODALITIES)
    checks.flag("instruct_only", instruct_only)
    return [
        m for m in MODELS.values()
        if (family is None or m.family == family) and (modality is None or m.modality == modality)
        and (m.instruct or not instruct_only)
    ]


def get_model(name: str, family: str | None = None, *, instruct_only: bool = False) -> ModelSpec:
    """Looks a model up by picker name, Hugging Face id or an older Meta id (ALIASES); the
    error lists the valid choices."""
    checks.text("model name", name)
    pool = {m.name: m for m in models(family, instruct_only=instruct_only)}
    by_id = {m.hf_id: m for m in pool.values()}
    found = pool.get(name) or by_id.get(name) or pool.get(ALIASES.get(name, ""))
    if found is None:
        where = f" for {family}" if family else ""
        kind = "Instruct model" if instruct_only else "model"
        raise ConfigError(f"unknown {kind} {name!r}{where}; choose one of {choices(pool)}")
    return found


# The architecture fields of each model's config.json on Hugging Face (base and Instruct share
# them). The FP8 405B checkpoint quantizes the MLPs of all but its first and last layers to one
# byte and keeps attention, embeddings and lm_head in bfloat16 (Meta's model card and the Llama 3
# paper, section 6.2).
_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_key_value_heads": 8,
          "vocab_size": 128256, "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}
_VISION_TOWER = {"image_size": 560, "patch_size": 14, "max_num_tiles": 4, "hidden_size": 1280,
                 "intermediate_size": 5120, "num_hidden_layers": 32, "num_global_layers": 8,
                 "attention_heads": 16, "intermediate_layers_indices": [3, 7, 15, 23, 30],
                 "vision_output_dim": 7680, "supported_aspect_ratios": [[1, 1]] * 8}


def _mllama(**text: Any) -> dict:
    """A Llama 3.2 Vision config: a Llama text model with cross-attention, and the tower."""
    return {"architectures": ["MllamaForConditionalGeneration"], "model_type": "mllama",
            "torch_dtype": "bfloat16",
            "text_config": {**_LLAMA, **text, "tie_word_embeddings": False},
            "vision_config": _VISION_TOWER}


_ARCHITECTURES: dict[str, dict] = {
    "Llama-3.1-8B": {**_LLAMA, "num_hidden_layers": 32, "num_attention_heads": 32,
                     "hidden_size": 4096, "intermediate_size": 14336, "tie_word_embeddings": False},
    "Llama-3.1-70B": {**_LLAMA, "num_hidden_layers": 80, "num_attention_heads": 64,
                      "hidden_size": 8192, "intermediate_size": 28672,
                      "tie_word_embeddings": False},
    "Llama-3.1-405B-FP8": {
        **_LLAMA, "num_hidden_layers": 126, "num_attention_heads": 128, "hidden_size": 16384,
        "intermediate_size": 53248, "tie_word_embeddings": False,
        "quantization_config": {"quant_method": "fbgemm_fp8", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.0.mlp", "model.layers.125.mlp",
            "lm_head"]}},
    "Llama-3.2-1B": {**_LLAMA, "num_hidden_layers": 16, "num_attention_heads": 32,
                     "hidden_size": 2048, "intermediate_size": 8192, "head_dim": 64,
                     "tie_word_embeddings": True},
    "Llama-3.2-3B": {**_LLAMA, "num_hidden_layers": 28, "num_attention_heads": 24,
                     "hidden_size": 3072, "intermediate_size": 8192, "head_dim": 128,
                     "tie_word_embeddings": True},
    "Llama-3.2-11B-Vision": _mllama(num_hidden_layers=40, num_attention_heads=32,
                                    hidden_size=4096, intermediate_size=14336,
                                    cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38]),
    "Llama-3.2-90B-Vision": _mllama(num_hidden_layers=100, num_attention_heads=64,
                                    hidden_size=8192, intermediate_size=28672,
                                    cross_attention_layers=list(range(3, 100, 5))),
}


def hf_config(name: str) -> dict:
    """config.json architecture fields of a catalog model, by picker name or Hugging Face id
    (a copy: the caller may change it)."""
    spec = get_model(name)
    return copy.deepcopy(_ARCHITECTURES[spec.name.replace("-Instruct", "")])
