"""A tiny Llama 3.1/3.2 with random weights, for serving with the real vLLM engine on a CPU.

It has the architecture of the family (`LlamaForCausalLM`, llama3 RoPE scaling, GQA, 131,072
positions) at a toy size (hidden 256, 4 heads of 64: vLLM's CPU attention refuses a head size of
16), a byte-level BPE tokenizer that keeps Llama 3's 256 special tokens in Llama 3's order, and,
for Instruct models, a Llama 3.1-style chat template with tools. There are no weights: vLLM is
started with `--load-format dummy`, so nothing is downloaded and the replies are random text,
while everything vLLM does around the model (chat template, sampling limits, its 400s,
structured output and tool-call parsing) is real.

`tokenizers` is imported only inside `build`, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nbhelpers.errors import ConfigError, choices

# What the emulator's replicas answer from: the rehearsal engine, or the real vLLM server on this
# tiny model. Here, the lowest layer that the emulator, the runner and the command line share.
ENGINES = ("rehearsal", "vllm")
ENGINE_VARIABLE = "NBHELPERS_ENGINE"
FAMILIES = ("llama3.1", "llama3.2")
FORMAT = 1  # bump when the files built here change, so caches are rebuilt
BASE_VOCAB = 1024  # the 256 byte symbols and the merges learnt from _CORPUS
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, LAYERS, MLP = 256, 4, 2, 64, 2, 512
MAX_POSITIONS = 131_072  # Llama 3.1 and 3.2 (text) are trained for 128k tokens

# Llama 3's special tokens, in Llama 3's order (ids 128000-128255 there; here they follow the
# base vocabulary): the 11 named ones, then the reserved ones up to 256 in all.
_NAMED_SPECIALS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
)
SPECIAL_TOKENS = _NAMED_SPECIALS + tuple(
    f"<|reserved_special_token_{n}|>" for n in range(3, 3 + 256 - len(_NAMED_SPECIALS)))

# What the merges are learnt from: English about the tutorial's topics and JSON as tools use it,
# so prompts and tool calls take fewer tokens than one per byte.
_CORPUS = """\
Explain what a GPU does in two sentences. A GPU runs thousands of small arithmetic operations
at once, which is what a neural network needs. The model reads the prompt and writes the answer
one token at a time. Give me a fact about llamas: llamas live in the Andes, they are social
animals and they hum. You are a concise assistant. Now say it for a ten-year-old.
What is the weather in Paris today? The weather in Tokyo is sunny and the temperature is 21
degrees celsius. Describe this picture. The city, the country, the unit, the answer.
{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}
{"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
{"title": "Llamas", "year": 2024, "rating": 5, "tags": ["animal", "wool"], "ok": true}
"""

_CHAT_TEMPLATE = """\
{{- bos_token }}
{%- if custom_tools is defined and custom_tools %}{%- set tools = custom_tools %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}
{%- set system_message = messages[0]['content'] %}
{%- set messages = messages[1:] %}
{%- else %}
{%- set system_message = '' %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}
{%- if tools %}{{- 'Environment: ipython\\n' }}{%- endif %}
{{- 'Cutting Knowledge Date: December 2023\\n\\n' }}
{%- if tools %}
{{- 'You may call one of these functions. To call one, answer with only a JSON object '
    '{"name": function name, "parameters": {argument name: value}}.\\n\\n' }}
{%- for tool in tools %}{{- tool | tojson }}{{- '\\n\\n' }}{%- endfor %}
{%- endif %}
{{- system_message }}{{- '<|eot_id|>' }}
{%- for message in messages %}
{%- if message['role'] == 'assistant' and message.get('tool_calls') %}
{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- for call in message['tool_calls'] %}
{%- set function = call['function'] if call.get('function') else call %}
{%- set arguments = function['arguments'] %}
{{- '{"name": "' + function['name'] + '", "parameters": ' }}
{%- if arguments is string %}{{- arguments }}{%- else %}{{- arguments | tojson }}{%- endif %}
{{- '}' }}
{%- endfor %}
{{- '<|eot_id|>' }}
{%- elif message['role'] in ('tool', 'ipython') %}
{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' }}
{%- if message['content'] is mapping %}{{- message['content'] | tojson }}
{%- else %}{{- message['content'] }}{%- endif %}
{{- '<|eot_id|>' }}
{%- else %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}
{{- message['content'] }}{{- '<|eot_id|>' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""


def default_root() -> Path:
    """Where built models are cached: NBHELPERS_TINY_MODEL_DIR, else ~/.cache/nbhelpers."""
    configured = os.environ.get("NBHELPERS_TINY_MODEL_DIR", "").strip()
    return Path(configured) if configured else Path.home() / ".cache" / "nbhelpers" / "tiny-llama"


def model_dir(family: str = "llama3.1", *, instruct: bool = True,
              root: str | Path | None = None) -> Path:
    """The folder a tiny model of this kind is (or would be) built in."""
    if family not in FAMILIES:
        raise ConfigError(f"family {family!r} is not one of {choices(FAMILIES)}")
    kind = "instruct" if instruct else "base"
    return Path(root or default_root()) / f"{family}-{kind}-v{FORMAT}"


def build(family: str = "llama3.1", *, instruct: bool = True,
          root: str | Path | None = None) -> Path:
    """Builds the tiny model's files (config.json, generation_config.json, tokenizer.json,
    tokenizer_config.json) once and returns their folder; later calls return the cached one.
    Base models get no chat template, as Meta's base repositories have none."""
    target = model_dir(family, instruct=instruct, root=root)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the model is for anyone here
        ids = _write_tokenizer(staging, instruct=instruct)
        for name, content in _model_files(family, instruct=instruct, ids=ids).items():
            (staging / name).write_text(json.dumps(content, indent=2) + "\n")
        try:
            staging.rename(target)
        except OSError:  # built at the same time by another process: theirs is as good
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_tokenizer(folder: Path, *, instruct: bool) -> dict[str, int]:
    """A byte-level BPE (its pre-tokenizer and decoder are ByteLevel, as Llama 3's are, which is
    how structured-output backends recognise the vocabulary) with Llama 3's special tokens.
    Returns the special tokens' ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BASE_VOCAB, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_CORPUS.splitlines(), trainer)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    ids: dict[str, int] = {t: tokenizer.token_to_id(t) or 0 for t in SPECIAL_TOKENS}
    bos = "<|begin_of_text|>"
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                      special_tokens=[(bos, ids[bos])]),
    ])
    tokenizer.save(str(folder / "tokenizer.json"))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": "<|eot_id|>" if instruct else "<|end_of_text|>",
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    if instruct:
        config["chat_template"] = _CHAT_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {**ids, "vocab_size": tokenizer.get_vocab_size()}


def _model_files(family: str, *, instruct: bool, ids: dict[str, int]) -> dict[str, Any]:
    """config.json and generation_config.json, with Llama 3's fields: Instruct models stop at
    end_of_text, eom and eot, base models at end_of_text; Llama 3.2's small models tie their
    embeddings and scale RoPE by 32 instead of 8."""
    eos = [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]] if instruct \
        else ids["<|end_of_text|>"]
    small = family == "llama3.2"
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": MLP, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "hidden_act": "silu", "max_position_embeddings": MAX_POSITIONS, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0 if small else 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": small,
        "vocab_size": ids["vocab_size"], "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": eos, "torch_dtype": "bfloat16",
    }  # fmt: skip
    generation = {"bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": eos,
                  "do_sample": True, "temperature": 0.6, "top_p": 0.9}
    return {"config.json": config, "generation_config.json": generation}
