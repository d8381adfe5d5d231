"""Preflight planner: will vLLM start this model on these GPUs, and how many tokens will fit?

A failed start costs up to an hour of deployment; this answers in milliseconds, before anything
is created. It follows vLLM's own accounting (../shared/docs/vllm-memory.md, read from vLLM's
source): per GPU, `total x gpu_memory_utilization` must hold the weights, the peak of the profile
run (activations), the memory outside torch, and at least `max_model_len` tokens of KV cache in
blocks of 16. Standard library only, so it imports fast and runs anywhere.

The activation terms are estimates from the architecture; three constants come from public vLLM
logs (marked "calibration" in tests/data/vllm_startup_outcomes.json) and nothing is fitted per
case. `python -m pytest tests/test_planner.py -s` prints accuracy on all the collected outcomes.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from nbhelpers import checks
from nbhelpers.catalog import get_model
from nbhelpers.errors import ConfigError, choices
from nbhelpers.hardware import ACCELERATORS, machine_for, resolve_accelerator
from nbhelpers.releases import DEFAULT_TAG, RELEASES
from nbhelpers.vllm_args import KV_CACHE_DTYPES

GIB = 1024**3
BLOCK_SIZE = 16  # tokens per KV block on CUDA
VOCAB_PADDING = 64  # vLLM pads embedding rows to a multiple of this before sharding them
DEFAULT_VLLM = RELEASES[DEFAULT_TAG]

# Calibration (each constant from one cited public log; see the module docstring).
# vllm#10517 (Llama-3.1-8B, 20000 and 29000 batched tokens): the profile peak grows by
# tokens x (6 x intermediate + 6 x hidden) bytes: MLP gate/up output, its activation, and three
# hidden-sized tensors (residual, normed input, attention output).
FORWARD_INTERMEDIATE_COPIES = 6
FORWARD_HIDDEN_COPIES = 6
# vllm#10511 (Llama-3-8B, 8192 tokens, TP 1 and TP 2 alike): a 1.26 GiB peak that does not shrink
# with TP is the sampler: 256 rows x 128256 logits at about 41 bytes each (fp32 logits, softmax,
# and the sort that top-k/top-p does with int64 indices).
SAMPLER_BYTES_PER_LOGIT = 41
# Memory outside torch (CUDA context growth, cuBLAS workspaces; NCCL and all-reduce buffers
# when sharded), the least certain term: logs show 0.16-1.79 GiB on one GPU (vllm#12126,
# vllm#10517, vllm#10511) and 3.58 GiB with TP 2 on an H100 (vllm#10511). The planner takes a
# value inside each range.
NON_TORCH_GIB = {1: 0.5, "parallel": 1.5}

DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4,
               "fp8": 2}  # fp8: 1-byte weights (--quantization=fp8), activations stay 16-bit
VERDICTS = ("ok", "oom", "max_model_len")
MAX_TOKENS = 10_000_000  # a bound for token counts far past any model's context: catches typos
VERSION_RE = re.compile(r"[0-9]+\.[0-9]+(\.[0-9]+)?(\.?(post|dev|rc)[0-9]+)?(\+[A-Za-z0-9.]+)?")
MAX_SEQUENCES = 65_536  # likewise for max_num_seqs (vLLM's default is 256)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _pad(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# --- architecture ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class VisionTower:
    """The Llama 3.2 Vision (mllama) image encoder."""

    width: int
    mlp: int
    layers: int  # local + global
    tiles: int
    patches: int  # per tile, class token included (1601)
    intermediate_outputs: int  # layers whose outputs are kept and concatenated
    output_dim: int
    aspect_ratio_ids: int
    channels: int = 3
    patch_size: int = 14

    @property
    def tile_tokens(self) -> int:
        return _pad(self.patches, 8)  # the encoder pads each tile to a multiple of 8

    @property
    def image_tokens(self) -> int:
        """Encoder tokens of one 4-tile image as KV blocks count them (1601 per tile)."""
        return self.tiles * self.patches


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """What the planner needs from a config.json."""

    name: str
    layers: int  # decoder layers with a KV cache (mllama: self and cross attention)
    cross_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    extra_embeddings: int  # mllama embeds 8 image tokens beyond the vocabulary
    tied: bool
    max_positions: int
    fp8_mlp_layers: int  # MLPs stored in one byte by the checkpoint (FP8 checkpoints)
    fp8_attention: bool
    vision: VisionTower | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str = "") -> Architecture:
        """Reads a Hugging Face config.json (Llama or Mllama); errors say what is missing."""
        if not isinstance(config, dict):
            raise ConfigError(f"config must be a config.json dict, got {type(config).__name__}")
        text = config.get("text_config") or config
        vision_cfg = config.get("vision_config")
        required = ("num_hidden_layers", "num_attention_heads", "hidden_size",
                    "intermediate_size", "vocab_size")
        missing = [k for k in required if not isinstance(text.get(k), int)]
        if missing:
            raise ConfigError(f"config.json lacks {choices(missing)}; the planner needs "
                              f"{choices(required)} (and num_key_value_heads, head_dim if set)")
        heads = text["num_attention_heads"]
        layers = text["num_hidden_layers"]
        quant = config.get("quantization_config") or {}
        fp8_mlp, fp8_attention = 0, False
        if str(quant.get("quant_method", "")).lower() in ("fp8", "fbgemm_fp8"):
            skipped = [str(m) for m in quant.get("modules_to_not_convert") or []]
            fp8_attention = not any("self_attn" in m for m in skipped)
            fp8_mlp = layers - sum(1 for m in skipped if m.endswith(".mlp")
                                   and m.split(".")[2].isdigit())
        elif quant:
            raise ConfigError(f"quantization {quant.get('quant_method')!r} is not sized by the "
                              "planner; choose a bfloat16 or FP8 checkpoint")
        vision = None
        if vision_cfg:
            patch = vision_cfg.get("patch_size", 14)
            side = vision_cfg.get("image_size", 560) // patch
            vision = VisionTower(
                width=vision_cfg.get("hidden_size", 1280),
                mlp=vision_cfg.get("intermediate_size", 5120),
                layers=vision_cfg.get("num_hidden_layers", 32)
                + vision_cfg.get("num_global_layers", 8),
                tiles=vision_cfg.get("max_num_tiles", 4),
                patches=side * side + 1,
                intermediate_outputs=len(vision_cfg.get("intermediate_layers_indices")
                                         or [3, 7, 15, 23, 30]),
                output_dim=vision_cfg.get("vision_output_dim", 7680),
                aspect_ratio_ids=len(vision_cfg.get("supported_aspect_ratios") or [0] * 8) + 1,
                patch_size=patch,
            )
        return cls(
            name=name or str((config.get("architectures") or ["custom"])[0]),
            layers=layers,
            cross_layers=len(text.get("cross_attention_layers") or []),
            hidden=text["hidden_size"],
            intermediate=text["intermediate_size"],
            heads=heads,
            kv_heads=text.get("num_key_value_heads") or heads,
            head_dim=text.get("head_dim") or text["hidden_size"] // heads,
            vocab=text["vocab_size"],
            extra_embeddings=8 if vision else 0,
            tied=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
            max_positions=text.get("max_position_embeddings", 131072),
            fp8_mlp_layers=fp8_mlp,
            fp8_attention=fp8_attention,
            vision=vision,
        )

    def kv_heads_per_gpu(self, tp: int) -> int:
        return max(1, self.kv_heads // tp)

    def kv_bytes_per_token(self, tp: int, kv_bytes: int) -> int:
        """K and V of every attention layer, per GPU (vLLM's cache block size / 16)."""
        return 2 * self.layers * self.kv_heads_per_gpu(tp) * self.head_dim * kv_bytes

    def weight_bytes(self, tp: int, dtype_bytes: int, quantize_fp8: bool) -> float:
        """Weights one GPU holds after vLLM shards them (column/row-parallel linears split by
        TP, KV heads replicated when fewer than TP, vocabulary padded then split)."""
        h, hd = self.hidden, self.head_dim
        q_and_o = 2 * h * self.heads * hd / tp
        kv = 2 * h * self.kv_heads_per_gpu(tp) * hd
        mlp = 3 * h * self.intermediate / tp
        norms = 2 * h
        fp8_mlp = self.layers if quantize_fp8 else self.fp8_mlp_layers
        attention_bytes = 1 if (quantize_fp8 or self.fp8_attention) else dtype_bytes
        total = self.layers * ((q_and_o + kv) * attention_bytes + norms * dtype_bytes)
        total += fp8_mlp * mlp * 1 + (self.layers - fp8_mlp) * mlp * dtype_bytes
        total += self.cross_layers * 2 * hd * dtype_bytes  # q/k norms of cross-attention
        rows = _pad(self.vocab + self.extra_embeddings, VOCAB_PADDING)
        total += math.ceil(rows / tp) * h * dtype_bytes  # embeddings stay 16-bit
        if not self.tied:
            total += math.ceil(_pad(self.vocab, VOCAB_PADDING) / tp) * h * dtype_bytes
        total += h * dtype_bytes  # final norm
        total += self.max_positions * hd * dtype_bytes  # rotary cos/sin cache
        if self.vision is not None:
            v = self.vision
            per_layer = (4 * v.width * v.width + 2 * v.width * v.mlp) / tp + 9 * v.width
            embeddings = (v.channels * v.patch_size**2 * v.width + v.patches * v.width
                          + v.aspect_ratio_ids * v.tiles * v.patches * v.width
                          + 2 * v.aspect_ratio_ids * v.tiles * v.width)
            projector = v.output_dim * h + h
            total += (v.layers * per_layer + embeddings + projector) * 2  # encoder stays bf16
        return total

    def forward_bytes(self, tokens: int, tp: int, dtype_bytes: int) -> float:
        per_token = (FORWARD_INTERMEDIATE_COPIES * self.intermediate / tp
                     + FORWARD_HIDDEN_COPIES * self.hidden) * dtype_bytes / 2
        return tokens * per_token

    def vision_image_bytes(self, tp: int) -> float:
        """Profile-run peak of the encoder per 4-tile image: its dense attention mask
        (tokens x tokens), the hidden state and layer input, the kept intermediate layer
        outputs, and the MLP's output and activation."""
        v = self.vision
        assert v is not None
        tokens = v.tiles * v.tile_tokens
        mask = 2 * tokens * tokens
        states = 2 * tokens * (v.width * (2 + v.intermediate_outputs) + 2 * v.mlp / tp)
        return mask + states


def architecture(model: str) -> Architecture:
    spec = get_model(model)
    return Architecture.from_config(spec.config, spec.name)


# --- the plan ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Memory:
    """Per-GPU memory in GiB, as vLLM's "Memory profiling results" line splits it."""

    total: float
    budget: float  # total x gpu_memory_utilization
    weights: float
    activation_peak: float
    non_torch: float
    kv_cache: float  # what is left for blocks (negative: does not fit)


@dataclass(frozen=True)
class Fix:
    """A change that makes the plan start; `changes` are plan_memory() argument names (and
    machine_type, the Vertex machine with those GPUs)."""

    summary: str
    changes: dict[str, Any]
    kv_cache_tokens: int

    def notebook_parameters(self) -> dict[str, Any] | None:
        """The change as the deploy notebooks' parameters, or None when they cannot say it."""
        names = {"max_num_seqs": "MAX_NUM_SEQS", "max_model_len": "MAX_MODEL_LEN",
                 "machine_type": "MACHINE_TYPE"}
        changes = dict(self.changes)
        if changes.get("machine_type"):  # the machine type brings its GPUs with it
            changes.pop("accelerator", None)
            changes.pop("accelerator_count", None)
        if not set(changes) <= set(names) or not all(changes.values()):
            return None
        return {names[key]: value for key, value in changes.items()}


@dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    verdict: str  # "ok", "oom" or "max_model_len"
    reason: str
    kv_cache_tokens: int
    kv_cache_blocks: int
    max_concurrency: float  # requests of max_model_len tokens the KV cache holds at once
    memory: Memory
    model: str
    gpu: str
    accelerator_count: int
    dtype: str
    kv_cache_dtype: str
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    enforce_eager: bool
    vllm_version: str
    engine: str  # "V0" or "V1"
    kv_bytes_per_token: int
    cpu_blocks: int
    fixes: tuple[Fix, ...] = ()
    warnings: tuple[str, ...] = ()
    inputs: dict[str, Any] = field(default_factory=dict)  # plan_memory(**inputs) plans it again

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fixes"] = [asdict(f) for f in self.fixes]
        data["warnings"] = list(self.warnings)
        return data

    def describe(self) -> str:
        m = self.memory
        lines = [
            f"{self.model} on {self.accelerator_count} x {self.gpu}, vLLM {self.vllm_version} "
            f"({self.engine}), {self.dtype}: {self.verdict.upper()}",
            f"  {self.reason}",
            f"  per GPU: {m.total:.2f} GiB x {self.gpu_memory_utilization} = {m.budget:.2f} GiB"
            f" = weights {m.weights:.2f} + activation peak {m.activation_peak:.2f} + "
            f"non-torch {m.non_torch:.2f} + KV cache {m.kv_cache:.2f}",
            f"  KV cache: {self.kv_cache_tokens:,} tokens ({self.kv_cache_blocks:,} blocks of "
            f"{BLOCK_SIZE}); max_model_len {self.max_model_len:,}, max_num_seqs "
            f"{self.max_num_seqs}, batched tokens {self.max_num_batched_tokens:,}; "
            f"{self.max_concurrency:.2f} requests of max_model_len at once",
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.fixes:
            lines.append("  fixes:")
            lines += [f"    - {f.summary}" for f in self.fixes]
        return "\n".join(lines)

    __str__ = describe

    def failure_lines(self) -> list[str]:
        """How vLLM itself reports this start-up failure (empty when it starts)."""
        m = self.memory
        if self.verdict == "ok":
            return []
        if self.verdict == "max_model_len":
            if self.engine == "V1":
                typo = "models's" if _version(self.vllm_version) < (0, 12) else "model's"
                needed = math.ceil(self.max_model_len / BLOCK_SIZE) * BLOCK_SIZE \
                    * self.kv_bytes_per_token / GIB
                return [f"ValueError: To serve at least one request with the {typo} max seq len "
                        f"({self.max_model_len}), ({needed:.2f} GiB KV cache is needed, which is "
                        f"larger than the available KV cache memory ({m.kv_cache:.2f} GiB). Based"
                        f" on the available memory, the estimated maximum model length is "
                        f"{self.kv_cache_tokens}. Try increasing `gpu_memory_utilization` or "
                        "decreasing `max_model_len` when initializing the engine."]
            return [f"ValueError: The model's max seq len ({self.max_model_len}) is larger than "
                    "the maximum number of tokens that can be stored in KV cache "
                    f"({self.kv_cache_tokens}). Try increasing `gpu_memory_utilization` or "
                    "decreasing `max_model_len` when initializing the engine."]
        in_use = m.weights + m.non_torch
        if in_use > m.total:
            wanted = m.weights - (m.total - m.non_torch) + 0.5
            return [f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
                    f"{min(wanted, 2.0):.2f} GiB. GPU 0 has a total capacity of {m.total:.2f} GiB"
                    f" of which {max(0.0, m.total - in_use + wanted):.2f} GiB is free. Including "
                    f"non-PyTorch memory, this process has {m.total - 0.01:.2f} GiB memory in "
                    "use. (while loading the model weights)"]
        if in_use + m.activation_peak > m.total:
            free = max(0.0, m.total - in_use)
            step = min(m.activation_peak, max(free + 0.25, m.activation_peak / 8))
            return [f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {step:.2f} "
                    f"GiB. GPU 0 has a total capacity of {m.total:.2f} GiB of which {free:.2f} "
                    f"GiB is free. Including non-PyTorch memory, this process has "
                    f"{m.total - free:.2f} GiB memory in use. (during the profile run)"]
        return ["ValueError: No available memory for the cache blocks. Try increasing "
                "`gpu_memory_utilization` when initializing the engine."]

    def log_lines(self) -> list[str]:
        """The start-up lines vLLM prints about memory, in its wording for this release
        (`failure_lines` follow them when it does not start)."""
        m = self.memory
        lines = [f"Loading model weights took {m.weights:.4f} GB"]
        if self.memory.kv_cache > 0 or self.verdict == "max_model_len":
            if self.engine == "V1":
                lines += [f"Available KV cache memory: {max(0.0, m.kv_cache):.2f} GiB",
                          f"GPU KV cache size: {self.kv_cache_tokens:,} tokens"]
            else:
                lines += [
                    f"the current vLLM instance can use total_gpu_memory ({m.total:.2f}GiB) x "
                    f"gpu_memory_utilization ({self.gpu_memory_utilization:.2f}) = "
                    f"{m.budget:.2f}GiB",
                    f"model weights take {m.weights:.2f}GiB; non_torch_memory takes "
                    f"{m.non_torch:.2f}GiB; PyTorch activation peak memory takes "
                    f"{m.activation_peak:.2f}GiB; the rest of the memory reserved for KV Cache "
                    f"is {max(0.0, m.kv_cache):.2f}GiB.",
                    f"# GPU blocks: {self.kv_cache_blocks}, # CPU blocks: {self.cpu_blocks}",
                ]
            lines.append(f"Maximum concurrency for {self.max_model_len} tokens per request: "
                         f"{self.max_concurrency:.2f}x")
        return lines


def _accelerator(accelerator: str | None, gpu_memory_gib: float | None) -> tuple[str, float]:
    if gpu_memory_gib is not None:
        if not isinstance(gpu_memory_gib, int | float) or gpu_memory_gib <= 0:
            raise ConfigError(f"gpu_memory_gib must be a positive number of GiB, got "
                              f"{gpu_memory_gib!r}")
        label = ACCELERATORS[accelerator].short if accelerator in ACCELERATORS else (
            accelerator or f"{gpu_memory_gib:g} GiB GPU")
        return label, float(gpu_memory_gib)
    if accelerator is None:
        raise ConfigError(f"give an accelerator ({choices(ACCELERATORS)}) or gpu_memory_gib")
    found = resolve_accelerator(accelerator)
    return ACCELERATORS[found].short, ACCELERATORS[found].memory_gib


def _default_batched_tokens(arch: Architecture, *, engine: str, version: tuple[int, ...],
                            max_model_len: int, gpu_gib: float, gpu: str) -> int:
    if engine == "V1":
        large = gpu_gib >= 70 and not (version >= (0, 11) and gpu.startswith("A100"))
        return 8192 if large else 2048
    if arch.vision is None and max_model_len > 32768:  # chunked prefill switches itself on
        return 512 if version <= (0, 6, 4) else 2048
    tokens = max(max_model_len, 2048)
    return max(tokens, 5120) if arch.vision is not None else tokens


def plan_memory(
    model: str | None = None,
    *,
    config: dict[str, Any] | None = None,
    accelerator: str | None = None,
    gpu_memory_gib: float | None = None,
    accelerator_count: int = 1,
    dtype: str = "bfloat16",
    gpu_memory_utilization: float = 0.9,
    max_model_len: int = 4096,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int | None = None,
    enforce_eager: bool = False,
    vllm_version: str | None = None,
    kv_cache_dtype: str = "auto",
    swap_space_gib: float = 4,
    suggest_fixes: bool = True,
) -> MemoryPlan:
    """Predicts whether vLLM starts `model` (a catalog name) or `config` (a config.json dict)
    on `accelerator_count` GPUs, and how many KV-cache tokens it gets; raises ConfigError on
    bad input. See the module docstring for what is modelled."""
    _check_kinds(model=model, config=config, accelerator=accelerator,
                 gpu_memory_gib=gpu_memory_gib, accelerator_count=accelerator_count, dtype=dtype,
                 gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                 max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                 enforce_eager=enforce_eager, vllm_version=vllm_version,
                 kv_cache_dtype=kv_cache_dtype, swap_space_gib=swap_space_gib,
                 suggest_fixes=suggest_fixes)
    if (model is None) == (config is None):
        raise ConfigError("give either model (a catalog name) or config (a config.json dict)")
    arch = architecture(model) if model is not None else Architecture.from_config(config or {})
    gpu, total_gib = _accelerator(accelerator, gpu_memory_gib)
    version_text = vllm_version or DEFAULT_VLLM
    version = _version(version_text)
    tp = accelerator_count
    _check_inputs(arch, tp=tp, dtype=dtype, kv_cache_dtype=kv_cache_dtype,
                  util=gpu_memory_utilization, max_model_len=max_model_len,
                  max_num_seqs=max_num_seqs, batched=max_num_batched_tokens,
                  version_text=version_text, version=version)
    engine = "V1" if arch.vision is None and version >= (0, 8) else "V0"
    batched = max_num_batched_tokens or _default_batched_tokens(
        arch, engine=engine, version=version, max_model_len=max_model_len, gpu_gib=total_gib,
        gpu=gpu)
    if engine == "V0" and max_num_batched_tokens and arch.vision is None \
            and max_model_len <= 32768 and batched < max_model_len:
        raise ConfigError(f"max_num_batched_tokens ({batched}) is smaller than max_model_len "
                          f"({max_model_len}); vLLM {version_text} refuses that without chunked "
                          "prefill: raise it or leave it unset")
    dtype_bytes = DTYPE_BYTES[dtype]
    kv_bytes = 1 if kv_cache_dtype.startswith("fp8") else dtype_bytes  # fp8 variants: 1 byte
    weights = arch.weight_bytes(tp, dtype_bytes, quantize_fp8=dtype == "fp8") / GIB

    rows = min(max_num_seqs, batched) if engine == "V1" else max_num_seqs
    vocab = _pad(arch.vocab, VOCAB_PADDING)
    sampler = batched * arch.hidden * dtype_bytes + rows * vocab * SAMPLER_BYTES_PER_LOGIT
    forward = arch.forward_bytes(batched, tp, dtype_bytes)
    peak = max(forward, sampler)
    if arch.vision is not None:  # every dummy sequence gets a full 4-tile image
        vision = max_num_seqs * arch.vision_image_bytes(tp)
        cross_states = max_num_seqs * arch.vision.image_tokens * arch.hidden * dtype_bytes
        peak = max(peak, vision, cross_states + forward)
    activation = peak / GIB
    non_torch = NON_TORCH_GIB[1] if tp == 1 else NON_TORCH_GIB["parallel"]
    budget = total_gib * gpu_memory_utilization
    kv_gib = budget - weights - activation - non_torch
    per_token = arch.kv_bytes_per_token(tp, kv_bytes)
    block_bytes = per_token * BLOCK_SIZE
    blocks = max(0, int(kv_gib * GIB // block_bytes))
    tokens = blocks * BLOCK_SIZE
    if kv_gib <= 0 or blocks == 0 or weights + non_torch + activation > total_gib:
        verdict, blocks, tokens = "oom", 0, 0
        if weights + non_torch > total_gib:
            reason = (f"the weights alone need {weights:.2f} GiB per GPU, more than the "
                      f"{total_gib:.2f} GiB one {gpu} has: loading fails with CUDA out of memory")
        elif weights + non_torch + activation > total_gib:
            what = (f"{max_num_seqs} dummy images of the vision encoder"
                    if arch.vision is not None and vision >= peak else "the profile run")
            reason = (f"{what} need {activation:.2f} GiB on top of {weights:.2f} GiB of "
                      f"weights; one {gpu} has {total_gib:.2f} GiB: CUDA out of memory during "
                      "the profile run")
        else:
            reason = (f"weights {weights:.2f} + activations {activation:.2f} + non-torch "
                      f"{non_torch:.2f} GiB use up the {budget:.2f} GiB budget "
                      f"({gpu_memory_utilization} x {total_gib:.2f}): no memory for KV blocks")
    elif tokens < max_model_len:
        verdict = "max_model_len"
        reason = (f"the KV cache holds {tokens:,} tokens, fewer than max_model_len "
                  f"{max_model_len:,}: vLLM refuses to start")
    else:
        verdict = "ok"
        reason = (f"starts: {tokens:,} KV-cache tokens, "
                  f"{tokens / max_model_len:.2f} requests of {max_model_len:,} tokens at once")
    warnings = []
    if not enforce_eager and verdict == "ok" and version < (0, 21):
        headroom = total_gib * (1 - gpu_memory_utilization)
        if headroom < 1.0:
            warnings.append(f"CUDA graphs are captured after the KV cache is allocated and can "
                            f"take 1-3 GiB per GPU; only {headroom:.2f} GiB is left outside "
                            "gpu_memory_utilization: lower it or set enforce_eager")
    result = MemoryPlan(
        verdict=verdict, reason=reason, kv_cache_tokens=tokens, kv_cache_blocks=blocks,
        max_concurrency=round(tokens / max_model_len, 2),
        memory=Memory(total=round(total_gib, 3), budget=round(budget, 3),
                      weights=round(weights, 3), activation_peak=round(activation, 3),
                      non_torch=non_torch, kv_cache=round(kv_gib, 3)),
        model=model if model is not None else arch.name, gpu=gpu, accelerator_count=tp,
        dtype=dtype, kv_cache_dtype=kv_cache_dtype,
        gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
        max_num_seqs=max_num_seqs, max_num_batched_tokens=batched,
        enforce_eager=enforce_eager, vllm_version=version_text, engine=engine,
        kv_bytes_per_token=per_token,
        cpu_blocks=int(swap_space_gib * GIB // block_bytes), warnings=tuple(warnings))
    inputs = dict(model=model, config=config, accelerator=accelerator,
                  gpu_memory_gib=gpu_memory_gib, accelerator_count=tp, dtype=dtype,
                  gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                  max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                  enforce_eager=enforce_eager, vllm_version=vllm_version,
                  kv_cache_dtype=kv_cache_dtype, swap_space_gib=swap_space_gib)
    result = replace(result, inputs=inputs)
    if verdict != "ok" and suggest_fixes:
        result = replace(result, fixes=tuple(_fixes(arch, inputs)))
    return result


def _check_kinds(**values: Any) -> None:
    """Each input's kind (text, a finite number, a whole number, a flag) before it is used, so
    a wrong kind is named instead of failing deep inside; ranges are checked in _check_inputs."""
    for name in ("model", "accelerator", "vllm_version", "dtype", "kv_cache_dtype"):
        if values[name] is not None or name in ("dtype", "kv_cache_dtype"):
            checks.text(name, values[name], empty_ok=name == "accelerator")
    if values["vllm_version"] is not None and not VERSION_RE.fullmatch(values["vllm_version"]):
        raise ConfigError(f"vllm_version must be a vLLM release such as 0.9.2 or 0.6.4.post1, got "
                          f"{checks.shown(values['vllm_version'])}")
    if values["config"] is not None and not isinstance(values["config"], dict):
        raise ConfigError(f"config must be a config.json dict, got "
                          f"{checks.shown(values['config'])}")
    if values["gpu_memory_gib"] is not None:
        checks.number("gpu_memory_gib", values["gpu_memory_gib"], low=0, low_open=True)
    for name in ("gpu_memory_utilization", "swap_space_gib"):
        checks.number(name, values[name], low=-math.inf)  # finite; the range comes later
    checks.whole("accelerator_count", values["accelerator_count"], low=1, high=8,
                 why="GPUs of one machine")
    checks.whole("max_model_len", values["max_model_len"], low=1, high=MAX_TOKENS)
    checks.whole("max_num_seqs", values["max_num_seqs"], low=1, high=MAX_SEQUENCES)
    if values["max_num_batched_tokens"] is not None:
        checks.whole("max_num_batched_tokens", values["max_num_batched_tokens"], low=1,
                     high=MAX_TOKENS)
    for name in ("enforce_eager", "suggest_fixes"):
        checks.flag(name, values[name])
    if values["swap_space_gib"] < 0:
        raise ConfigError(f"swap_space_gib must be at least 0, got {values['swap_space_gib']}")


def _check_inputs(arch: Architecture, *, tp: int, dtype: str, kv_cache_dtype: str, util: float,
                  max_model_len: int, max_num_seqs: int, batched: int | None,
                  version_text: str, version: tuple[int, ...]) -> None:
    if not isinstance(tp, int) or not 1 <= tp <= 8:
        raise ConfigError(f"accelerator_count must be 1 to 8 GPUs of one machine, got {tp!r}")
    def splits(n: int) -> bool:  # vLLM shards heads evenly; KV heads split or replicate
        return arch.heads % n == 0 and (arch.kv_heads % n == 0 or n % arch.kv_heads == 0)

    if not splits(tp):
        valid = [n for n in range(1, 9) if splits(n)]
        raise ConfigError(f"{arch.heads} attention heads ({arch.kv_heads} KV heads) cannot be "
                          f"split over {tp} GPUs "
                          f"(tensor parallel size); choose one of {choices(valid)}")
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {choices(DTYPE_BYTES)}")
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ConfigError(f"unknown kv_cache_dtype {kv_cache_dtype!r}; choose one of "
                          f"{choices(KV_CACHE_DTYPES)}")
    if not isinstance(util, int | float) or not 0 < util <= 1:
        raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {util!r}")
    for name, value in (("max_model_len", max_model_len), ("max_num_seqs", max_num_seqs)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive whole number, got {value!r}")
    if batched is not None and (not isinstance(batched, int) or batched < 1):
        raise ConfigError(f"max_num_batched_tokens must be a positive whole number or None, "
                          f"got {batched!r}")
    if max_model_len > arch.max_positions:
        raise ConfigError(f"max_model_len {max_model_len} is more than the "
                          f"{arch.max_positions} positions the model was trained for")
    known = sorted(set(RELEASES.values()), key=_version)
    if len(version) < 2 or version < (0, 6):
        raise ConfigError(f"vllm_version {version_text!r} is not sized by the planner; give "
                          f"0.6 or later, e.g. one of {choices(known)}")
    if arch.vision is not None and not (0, 6, 2) <= version < (0, 11):
        raise ConfigError(f"Llama 3.2 Vision runs on vLLM 0.6.2 to 0.10.2 (V0 engine), not "
                          f"{version_text}; choose one of {choices(known)}")


def _largest(ok, *, low: int, high: int, step: int) -> int | None:
    """The largest value in [low, high] (multiples of step) for which ok(value) holds, assuming
    ok is monotone (true below some threshold)."""
    lo, hi = low // step, high // step
    if hi < lo or not ok(lo * step):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid * step):
            lo = mid
        else:
            hi = mid - 1
    return lo * step


def _fixes(arch: Architecture, args: dict[str, Any]) -> list[Fix]:
    """Single changes that make the plan start (a larger machine may also need fewer
    sequences), each found by planning again."""
    def attempt(**changes: Any) -> MemoryPlan | None:
        try:
            return plan_memory(**{**args, **changes}, suggest_fixes=False)
        except ConfigError:
            return None

    def works(**changes: Any) -> bool:
        tried = attempt(**changes)
        return tried is not None and tried.ok

    def most(name: str, low: int, step: int, **with_: Any) -> int | None:
        """The largest value of `name` below the current one that starts, if any."""
        return _largest(lambda n: works(**with_, **{name: n}), low=low, high=args[name] - 1,
                        step=step) \
            if args[name] > low else None

    def fix(summary: str, change: dict[str, Any]) -> Fix:
        planned = attempt(**{k: v for k, v in change.items() if k != "machine_type"})
        assert planned is not None
        return Fix(summary, change, planned.kv_cache_tokens)

    fixes: list[Fix] = []
    for name, low, step in (("max_num_seqs", 1, 1), ("max_model_len", 256, 256)):
        best = most(name, low, step)
        if best is not None:
            fixes.append(fix(f"{name}={best} (was {args[name]})", {name: best}))
    if args["gpu_memory_utilization"] < 0.95 and works(gpu_memory_utilization=0.95):
        fixes.append(fix("gpu_memory_utilization=0.95", {"gpu_memory_utilization": 0.95}))

    def on_hardware(what: str, change: dict[str, Any], *, vertex_type: str, count: int) -> bool:
        """Adds the fix when the hardware works as it is or with fewer sequences."""
        if not works(**change):
            fewer = most("max_num_seqs", 1, 1, **change)
            if fewer is None:
                return False
            change = {**change, "max_num_seqs": fewer}
        machine = machine_for(vertex_type, count)
        fewer_text = f" with max_num_seqs={change['max_num_seqs']}" \
            if "max_num_seqs" in change else ""
        fixes.append(fix(f"{what}: {count} x {ACCELERATORS[vertex_type].short}{fewer_text}"
                         + (f" (machine_type={machine})" if machine else ""),
                         {**change, "machine_type": machine}))
        return True

    accelerator = args["accelerator"]
    if args["gpu_memory_gib"] is None and accelerator is not None:
        vertex_type = resolve_accelerator(accelerator)
        count = args["accelerator_count"]
        for more in (n for n in (2, 4, 8) if n > count):  # the fewest GPUs that work
            if on_hardware("more GPUs", {"accelerator_count": more}, vertex_type=vertex_type,
                           count=more):
                break
        bigger = sorted((a for a in ACCELERATORS.values()
                         if a.memory_gib > ACCELERATORS[vertex_type].memory_gib),
                        key=lambda a: a.memory_gib)
        for acc in bigger:  # the smallest GPU that works
            if on_hardware("a larger GPU", {"accelerator": acc.vertex_type},
                           vertex_type=acc.vertex_type, count=count):
                break
    if args["dtype"] != "fp8" and arch.vision is None and arch.fp8_mlp_layers == 0 \
            and works(dtype="fp8"):
        fixes.append(fix("fp8 weights (--quantization=fp8, about half the weight memory)",
                         {"dtype": "fp8"}))
    return fixes
