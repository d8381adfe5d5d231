"""What a notebook sends once its model serves (a prompt, sampling settings, chat messages, an
image, a batch of prompts) and the one set of rules each must meet.

`prediction`, `openai_chat` and `batch` check every call with these rules; `plan_deployment`
checks a notebook's `Requests` with the same rules before anything billed exists, so a bad
MAX_TOKENS stops the plan cell rather than the first cell after a GPU was deployed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbhelpers import catalog, checks, container, images
from nbhelpers.catalog import ModelSpec
from nbhelpers.checks import shown
from nbhelpers.errors import ConfigError

MAX_CONCURRENCY = 256  # requests in flight from one kernel: threads, far above any max_num_seqs
MAX_PROMPTS = 100_000  # prompts in one batch call (each keeps a result in memory)
MAX_TURNS = 1_000  # messages in one conversation
ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "image_url")


def context_of(model: ModelSpec | None) -> int:
    """Tokens that a request's prompt and reply share: the model's trained context, or the
    longest in the catalog for an endpoint whose model is unknown. A deployment's own
    max_model_len is smaller; the plan checks against that one."""
    return max(m.max_positions for m in ([model] if model is not None else catalog.models()))


def vocab_of(model: ModelSpec | None) -> int:
    """The vocabulary size, the most top_k can keep."""
    sizes = [m.config.get("text_config", m.config)["vocab_size"]
             for m in ([model] if model is not None else catalog.models())]
    return max(sizes)


def deployment_model(target: Any, name: str = "deployment") -> ModelSpec:
    """The catalog model of a Deployment (from deploy or reconnect); anything else is refused
    before any call. A Deployment is known by its shape (a model name and an `endpoint()`), as
    this module sits below `deployments`."""
    model_name = getattr(target, "model_name", None)
    if isinstance(model_name, str) and callable(getattr(target, "endpoint", None)):
        return catalog.get_model(model_name)
    raise ConfigError(f"{name} must be a Deployment (from nbhelpers.deploy or reconnect), got "
                      f"{shown(target)} ({type(target).__name__})")


def served_model(target: Any, name: str = "endpoint") -> ModelSpec | None:
    """As `deployment_model`, and an aiplatform.Endpoint is taken too: its model, unknown
    here, is None."""
    if hasattr(target, "predict") and hasattr(target, "resource_name") \
            and not callable(getattr(target, "endpoint", None)):
        return None
    try:
        return deployment_model(target, name)
    except ConfigError:
        raise ConfigError(f"{name} must be a Deployment (from nbhelpers.deploy or reconnect) "
                          f"or an aiplatform.Endpoint, got {shown(target)} "
                          f"({type(target).__name__})") from None


# --- sampling and prompts: the predict route and chat ------------------------------------------
def check_max_tokens(value: Any, *, context: int,
                     context_name: str = "the model's context") -> int:
    return checks.whole("max_tokens", value, low=1, high=context - 1,
                        why=f"{context_name} of {context:,} tokens holds the prompt and the "
                            "reply, and the prompt takes at least one")


def check_temperature(value: Any) -> float:
    return checks.number("temperature", value, low=0, why="0 samples greedily")


def check_top_p(value: Any) -> float:
    return checks.number("top_p", value, low=0, high=1, low_open=True,
                         why="the share of probability mass sampled from")


def check_top_k(value: Any, *, vocab: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value == -1:
        return value
    return checks.whole("top_k", value, low=1, high=vocab,
                        why="or -1 for the whole vocabulary")


def sampling(*, max_tokens: Any, temperature: Any, top_p: Any, top_k: Any,
             model: ModelSpec | None, context: int | None = None) -> None:
    """The predict route's sampling settings, as vLLM's SamplingParams accepts them; `context`
    is the deployment's max_model_len where known (the plan), else the model's context."""
    check_max_tokens(max_tokens, context=context or context_of(model),
                     context_name="max_model_len" if context else "the model's context")
    check_temperature(temperature)
    check_top_p(top_p)
    check_top_k(top_k, vocab=vocab_of(model))


def instance(prompt: Any, *, max_tokens: Any, temperature: Any, top_p: Any, top_k: Any,
             raw_response: Any, lora_id: Any = "", model: ModelSpec | None = None,
             context: int | None = None, name: str = "prompt") -> dict[str, Any]:
    """One instance of the predict route, every value checked."""
    checks.text(name, prompt)
    sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
             model=model, context=context)
    checks.flag("raw_response", raw_response)
    checks.text("lora_id", lora_id, empty_ok=True)
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens,
                            "temperature": temperature, "top_p": top_p, "top_k": top_k,
                            "raw_response": raw_response}
    if lora_id:
        body["dynamic-lora"] = lora_id
    return body


def vision_prompt(question: str, *, instruct: bool) -> str:
    """Llama 3.2 Vision's prompt format: the image token, then the text (Instruct models wrap
    it in their chat headers)."""
    if instruct:
        return ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>"
                f"{question}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    return f"<|begin_of_text|><|image|>{question}"


def require_vision(model: ModelSpec) -> None:
    if model.modality != "vision":
        raise ConfigError(f"{model.name} is a text model; deploy a Llama 3.2 Vision model to "
                          "ask about images")


def check_prompts(name: str, value: Any) -> list[str]:
    """A batch of prompts: a list of 1 to MAX_PROMPTS texts."""
    batch = checks.sequence(name, value, low=1, high=MAX_PROMPTS, of="prompts (text)")
    for index, item in enumerate(batch):
        checks.text(f"{name}[{index}]", item)
    return batch


def check_concurrency(value: Any) -> int:
    return checks.whole("concurrency", value, low=1, high=MAX_CONCURRENCY,
                        why="requests in flight at once")


# --- chat completions --------------------------------------------------------------------------
def conversation(name: str, value: Any, *, low: int) -> list[dict[str, Any]]:
    """Chat messages as the OpenAI API takes them: role and text, or role and parts."""
    turns = checks.sequence(name, value, low=low, high=MAX_TURNS, of="messages")
    for index, turn in enumerate(turns):
        where = f"{name}[{index}]"
        if not isinstance(turn, dict):
            raise ConfigError(f"{where} must be a message like {{'role': 'user', 'content': "
                              f"'...'}}, got {shown(turn)}")
        checks.one_of(f"{where}['role']", turn.get("role"), ROLES)
        content = turn.get("content")
        if isinstance(content, list):
            for number, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                checks.one_of(f"{where}['content'][{number}]['type']", kind, PART_TYPES)
                if kind == "text":
                    checks.text(f"{where}['content'][{number}]['text']", part.get("text"))
        else:
            checks.text(f"{where}['content']", content, empty_ok=True)
    return turns


def image_count(model: ModelSpec, count: int, *, name: str = "this request") -> None:
    """vLLM serves one image per request for Llama 3.2 Vision, none for text models."""
    allowed = 1 if model.modality == "vision" else 0
    if count > allowed:
        raise ConfigError(
            f"{name} carries {count} images but {model.name} accepts at most {allowed} "
            "per request in vLLM" + (": ask about one image at a time" if allowed else
                                     ": deploy a Llama 3.2 Vision model for images"))


# Llama 3 Instruct's chat format (what Meta-Llama-3-8B-Instruct's tokenizer_config.json template
# renders; Llama 3.1's adds a dated system block and tools) as one line of Jinja, its newlines
# written as escapes in Jinja strings: the template to pass to a base model's container with
# --chat-template (the notebooks' CHAT_TEMPLATE form field takes one line; vLLM reads a value
# with `{`, `}` or a newline as inline Jinja, anything else as a file in the image). Its header
# tokens are `vision_prompt`'s Instruct form.
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)


def deployment_template(deployment: Any) -> bool:
    """Whether chat completions on a Deployment have a chat template to apply: its model's own
    (an Instruct model; no call is made), or one its container passes with --chat-template,
    read from its Model's container arguments, where Vertex AI keeps them (so a reconnected
    endpoint or another runtime's deployment reads as the kernel that deployed it). Arguments
    that cannot be read (no permission to get models) leave it to the server, whose 400 says
    so in vLLM's words; a Model that does not exist passes no template."""
    model = deployment_model(deployment)
    if model.has_chat_template:
        return True
    from google.api_core import exceptions
    from google.cloud import aiplatform

    try:
        spec = aiplatform.Model(deployment.model_resource).gca_resource.container_spec
    except exceptions.NotFound:
        return False
    except exceptions.GoogleAPICallError:
        return True
    return bool(container.chat_template_of(list(spec.args)))


def check_chat(model: ModelSpec, messages: list[dict[str, Any]], *,
               template: bool | None = None) -> None:
    """Refuses, before the call, what vLLM would refuse after a round trip. `template`: whether
    the deployment applies a chat template (`deployment_template`: a base model's container may
    pass one); None, before there is a deployment, goes by the model's own."""
    if not (model.has_chat_template if template is None else template):
        instruct = (f"{model.name.replace('-FP8', '')}-Instruct"
                    f"{'-FP8' if model.name.endswith('-FP8') else ''}")
        raise ConfigError(
            f"{model.name} is a base model without a chat template, so chat completions fail. "
            f"Deploy {instruct} for chat, or deploy {model.name} with a chat template "
            "(CHAT_TEMPLATE in 01/02, VllmOptions(chat_template=...), vLLM's --chat-template; "
            "nbhelpers.request_rules.LLAMA3_CHAT_TEMPLATE is Llama 3's), or use "
            "nbhelpers.predict() with a plain prompt."
        )
    image_count(model, sum(1 for m in messages if isinstance(m.get("content"), list)
                           for part in m["content"] if part.get("type") == "image_url"))


def messages(prompt: Any, *, system: Any = "", images_in: Any = None, history: Any = None,
             image_format: Any = "JPEG") -> list[dict[str, Any]]:
    """Messages for one turn: optional system prompt, earlier turns, then the user's text with
    any images as data URLs (URLs and files are fetched and encoded here, not by the server).
    A list `prompt` is a whole conversation, sent as it is."""
    if isinstance(prompt, list):
        if system or images_in or history:
            raise ConfigError("prompt is a list of messages: put the system prompt, the "
                              "history and the images in that list instead of system, "
                              "history and images_in")
        return conversation("prompt", prompt, low=1)
    checks.text("prompt", prompt)
    checks.text("system", system, empty_ok=True)
    turns = [] if history is None else conversation("history", history, low=0)
    sources = [] if images_in is None else checks.sequence(
        "images_in", images_in, low=0, high=MAX_TURNS, of="images")
    images.check_encoding(image_format=image_format, quality=90)
    built: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    built += list(turns)
    if sources:
        parts: list[dict[str, Any]] = []
        for index, source in enumerate(sources):
            try:
                url = images.to_data_url(source, image_format=image_format)
            except ConfigError as err:
                raise ConfigError(f"images_in[{index}]: {err}") from None
            parts.append({"type": "image_url", "image_url": {"url": url}})
        parts.append({"type": "text", "text": prompt})
        built.append({"role": "user", "content": parts})
    else:
        built.append({"role": "user", "content": prompt})
    return built


# --- what a notebook will send, checked with its plan ------------------------------------------
def _image_source(value: Any) -> Any:
    """None or '' mean the drawn sample; anything else must be a kind load_image reads."""
    from PIL import Image

    if value is None or isinstance(value, bytes | bytearray | Image.Image):
        return value
    if isinstance(value, str | Path):
        checks.text("image", str(value), empty_ok=True)
        return value
    raise ConfigError(f"image must be a URL, a data URL, a file path, bytes or a PIL image "
                      f"(or empty for the drawn sample), got {shown(value)} "
                      f"({type(value).__name__})")


@dataclass(frozen=True, kw_only=True)
class Requests:
    """What a notebook will send once its model serves, for `plan_deployment(requests=...)`,
    which checks it with the rules every call uses, before anything billed exists.

    `prompt` goes to any model (as it is through predict, or as the user's turn in chat);
    `question` is asked about `image` on a vision model (no image: the drawn sample), the image
    being loaded then; `chat` sends through chat completions, which needs a chat template (an
    Instruct model's own, or one the container passes); `n_prompts` prompts are sent
    `concurrency` at a time."""

    prompt: str | None = None
    question: str | None = None
    image: Any = None
    system: str = ""
    chat: bool = False
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 1
    n_prompts: int | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        """What needs no model: types and ranges, so a bad value stops where it is written."""
        checks.flag("chat", self.chat)
        for name in ("prompt", "question"):
            if getattr(self, name) is not None:
                checks.text(name, getattr(self, name))
        checks.text("system", self.system, empty_ok=True)
        _image_source(self.image)
        sampling(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                 top_k=self.top_k, model=None)
        if self.n_prompts is not None:
            checks.whole("n_prompts", self.n_prompts, low=1, high=MAX_PROMPTS)
        if self.concurrency is not None:
            check_concurrency(self.concurrency)

    def check(self, model: ModelSpec, *, max_model_len: int, dedicated: bool = False,
              container_args: Sequence[str] = ()) -> None:
        """The rules that depend on the model and its max_model_len, applied to the requests
        as the notebook's later cells build them: the image loaded (a vision model is the
        one that reads it), the chat template (the model's own, or a --chat-template among the
        planned `container_args`), the payload limit of the planned endpoint's type
        (`dedicated`: 10 MB, else 1.5 MB; limits.predict_payload_bytes)."""
        sampling(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                 top_k=self.top_k, model=model, context=max_model_len)
        template = model.has_chat_template or bool(
            container.chat_template_of(list(container_args)))
        if self.chat:
            check_chat(model, [], template=template)
        checks.flag("dedicated", dedicated)
        if self.prompt is not None:
            self._check_one(model, self.prompt, max_model_len=max_model_len,
                            dedicated=dedicated, template=template)
        if self.question is not None and model.modality == "vision":
            source = _image_source(self.image)
            image = images.sample_image() if source is None or source == "" \
                else images.load_image(source)
            self._check_one(model, self.question, image=image, max_model_len=max_model_len,
                            dedicated=dedicated, template=template)

    def _check_one(self, model: ModelSpec, text: str, *, image: Any = None,
                   max_model_len: int, dedicated: bool, template: bool) -> None:
        """One request as the notebook's later cell builds it, measured against the payload
        limit (a chat about an image goes without the system prompt, as in notebook 03)."""
        if self.chat:
            turn = messages(text, system=self.system if image is None else "",
                            images_in=None if image is None else [image])
            check_chat(model, turn, template=template)
            images.check_payload({"messages": turn}, dedicated=dedicated)
            return
        if image is not None:
            text = vision_prompt(text, instruct=model.instruct)
        body = instance(text, max_tokens=self.max_tokens, temperature=self.temperature,
                        top_p=self.top_p, top_k=self.top_k, raw_response=False, model=model,
                        context=max_model_len)
        if image is not None:
            body["multi_modal_data"] = {"image": images.to_data_url(image)}
        images.check_payload({"instances": [body]}, dedicated=dedicated)

    def describe(self) -> str:
        said = [f"{name} ({len(value):,} chars)" for name, value in
                (("prompt", self.prompt), ("question", self.question), ("system", self.system))
                if value]
        if self.question is not None:
            said.append("the drawn sample image" if self.image is None or self.image == ""
                        else "image")
        said.append(f"max_tokens {self.max_tokens}")
        if not self.chat:
            said.append(f"temperature {self.temperature:g}, top_p {self.top_p:g}, "
                        f"top_k {self.top_k}")
        if self.n_prompts is not None:
            said.append(f"{self.n_prompts} prompts"
                        + (f", {self.concurrency} at once" if self.concurrency else ""))
        return ("chat: " if self.chat else "predict: ") + ", ".join(said)
