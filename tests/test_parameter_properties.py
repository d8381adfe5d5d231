"""Every public function refuses a bad parameter with a ConfigError that names it, before any
cloud call (hypothesis): wrong types (a bool is not a count), out of range, empty and huge,
non-finite numbers, text that cannot be sent, pasted tokens (never echoed).

Functions that reach the cloud run against the emulator fixtures; those that need a deployment
get one whose endpoint does not exist, so a call that got past validation would fail with the
SDK's NotFound, not a ConfigError; after each example the emulator must hold no endpoint and no
model. Good values pass too. Run with -s to see how many examples each property tried.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbhelpers
from nbhelpers import (
    catalog,
    container,
    hardware,
    images,
    planner,
    releases,
    request_rules,
    vllm_args,
)
from nbhelpers.deployments import Deployment
from nbhelpers.errors import ConfigError
from tests.conftest import FAKE_TOKEN

EXAMPLES: collections.Counter[str] = collections.Counter()
# NBH_PROPERTY_EXAMPLES=500 searches harder (minutes); the default keeps the file near a minute.
PROPERTY = settings(max_examples=int(os.environ.get("NBH_PROPERTY_EXAMPLES", "300")),
                    deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
MODELS = [m.name for m in catalog.models()]
FAMILIES = sorted({m.family for m in catalog.models()})
NOWHERE = "projects/test-project/locations/us-central1/endpoints/404"


@pytest.fixture(scope="module", autouse=True)
def _examples_tried() -> Iterator[None]:
    yield
    print("\nhypothesis examples tried per property: " + ", ".join(
        f"{name} {count}" for name, count in sorted(EXAMPLES.items())))


# --- strategies of bad values --------------------------------------------------------------------
TOKEN = st.from_regex(r"\A.{0,8}hf_[A-Za-z0-9]{8,30}\Z")
CONTAINERS = st.one_of(st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
HUGE = st.one_of(st.integers(min_value=2 ** 63), st.integers(max_value=-2 ** 63),
                 st.just(10 ** 400))
NOT_TEXT = st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), CONTAINERS,
                     st.binary(max_size=4))
SURROGATES = st.tuples(st.text(max_size=5), st.text(st.characters(categories=["Cs"]),
                                                    min_size=1, max_size=2)).map("".join)
BLANK = st.text(alphabet=" \t\n\r", max_size=5)


def bad_whole(low: int, high: int) -> st.SearchStrategy[Any]:
    """Not a whole number in [low, high]: bools, floats (even whole ones), text, None,
    containers, below, above, huge."""
    return st.one_of(st.booleans(), st.floats(), st.text(max_size=6), st.none(), CONTAINERS,
                     st.integers(max_value=low - 1), st.integers(min_value=high + 1), HUGE)


def bad_number(low: float, high: float = math.inf, *, low_open: bool = False
               ) -> st.SearchStrategy[Any]:
    below = st.floats(max_value=low, exclude_max=not low_open, allow_nan=False)
    parts = [NON_FINITE, st.booleans(), st.text(max_size=6), st.none(), CONTAINERS, below,
             st.just(10 ** 400)]
    if high != math.inf:
        parts.append(st.floats(min_value=high, exclude_min=True, allow_nan=False))
    return st.one_of(*parts)


BAD_FLAG = st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.none(), CONTAINERS)


def bad_text(*, empty_ok: bool = False) -> st.SearchStrategy[Any]:
    parts = [NOT_TEXT, SURROGATES, TOKEN]
    if not empty_ok:
        parts.append(BLANK)
    return st.one_of(*parts)


def not_one_of(*good: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=12), NOT_TEXT, TOKEN).filter(
        lambda v: not any(type(v) is type(g) and v == g for g in good))


BAD_FORMAT = st.one_of(st.text(max_size=6), NOT_TEXT).filter(
    lambda v: not (isinstance(v, str) and v.upper() in images.FORMATS))


def _is_accelerator(text: str) -> bool:
    try:
        hardware.resolve_accelerator(text)
        return True
    except Exception:
        return False


def unknown_name(known: Any) -> st.SearchStrategy[Any]:
    """Text that names nothing known (and non-empty, where empty means the default)."""
    return st.one_of(
        st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and s not in known),
        st.text(min_size=2000, max_size=5000), NOT_TEXT.filter(lambda v: v is not None), TOKEN)


# --- assertions ----------------------------------------------------------------------------------
def named(name: str, message: str) -> bool:
    plain = name.split("[")[0]
    return any(n in message for n in (plain, plain.replace("_", " ")))


def refused(name: str, value: Any, call: Callable[[], Any]) -> str:
    """call() raises a ConfigError naming `name`, never echoing a token in `value`."""
    with pytest.raises(ConfigError) as caught:
        call()
    message = str(caught.value)
    assert named(name, message), message
    if isinstance(value, str) and "hf_" in value:
        secret = value[value.index("hf_"):]
        assert secret not in message and secret not in repr(caught.value), message
    return message


def nothing_created(emulator) -> None:
    data = emulator.vertex.state.data
    assert data["endpoints"] == {} and data["models"] == {}


def drawn(params: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.sampled_from(sorted(params)).flatmap(
        lambda name: st.tuples(st.just(name), params[name]))


def unreachable(model: str) -> Deployment:
    """A deployment whose endpoint does not exist: reaching it fails with NotFound."""
    return Deployment(key="k", model_name=model, endpoint_name=NOWHERE,
                      model_resource=NOWHERE.replace("endpoints", "models"),
                      deployed_model_id="0", machine_type="g2-standard-12",
                      dedicated_endpoint=False)


@pytest.fixture
def token_env(session, env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    return session


# --- plan_deployment, its VllmOptions and its Requests -------------------------------------------
PLAN_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "model": unknown_name(MODELS),
    "machine_type": unknown_name(hardware.MACHINE_TYPES),
    "weights_uri": st.one_of(
        st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and not s.startswith("gs://")),
        st.sampled_from(["gs://", "gs://A", "gs://ab", "gs://goog-x/y", "gs://-x-/y"]),
        NOT_TEXT.filter(lambda v: v is not None), TOKEN, TOKEN.map(lambda t: f"gs://bucket/{t}")),
    "dedicated_endpoint": BAD_FLAG,
    "inference_timeout_s": bad_whole(1, 3600).filter(lambda v: v is not None),
    "ask_for_token": BAD_FLAG,
    "force": BAD_FLAG,
    "container_tag": unknown_name(releases.RELEASES),
    "family": not_one_of(*FAMILIES, None),
    "options": st.one_of(NOT_TEXT.filter(lambda v: v is not None), st.text(max_size=5)),
    "requests": st.one_of(NOT_TEXT.filter(lambda v: v is not None), st.text(max_size=5)),
}


@PROPERTY
@given(drawn(PLAN_PARAMS))
def test_plan_deployment_refuses_each_bad_parameter_before_anything_exists(token_env, emulator,
                                                                         case):
    EXAMPLES["plan_deployment"] += 1
    name, value = case
    kwargs = {"model": "Llama-3.1-8B-Instruct", "ask_for_token": False, name: value}
    refused(name, value, lambda: nbhelpers.deploy(token_env, nbhelpers.plan_deployment(**kwargs)))
    nothing_created(emulator)


OPTION_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "max_model_len": bad_whole(1, 131072).filter(lambda v: v is not None),
    "max_num_seqs": bad_whole(1, container.MAX_NUM_SEQS).filter(lambda v: v is not None),
    "gpu_memory_utilization": bad_number(0, 1, low_open=True).filter(lambda v: v is not None),
    "enforce_eager": BAD_FLAG.filter(lambda v: v is not None),
    "tensor_parallel_size": st.one_of(bad_whole(1, 8), st.integers(2, 8)).filter(
        lambda v: v is not None),
    "enable_lora": BAD_FLAG,
    "max_loras": bad_whole(1, container.MAX_LORAS),
    "max_cpu_loras": bad_whole(1, container.MAX_LORAS),
    "enable_prefix_caching": BAD_FLAG,
    "kv_cache_dtype": not_one_of(*vllm_args.KV_CACHE_DTYPES),
    "swap_space_gib": bad_number(0, container.MAX_SWAP_SPACE_GIB),
    "extra_args": st.one_of(
        st.text(max_size=10), st.integers(), st.none(),
        st.lists(NOT_TEXT, min_size=1, max_size=2),
        st.lists(st.sampled_from(["", "  "]), min_size=1, max_size=2),
        st.lists(st.from_regex(r"\A--[a-z][a-z-]{2,15}\Z").filter(
            lambda a: a[2:] not in vllm_args.OPTIONS), min_size=1, max_size=2),
        st.sampled_from(["--max-num-seqs", "--block-size", "--seed"]).flatmap(
            lambda flag: st.text(alphabet="abcxyz!?.", min_size=1, max_size=5).map(
                lambda v, flag=flag: [f"{flag}={v}"])),
        st.lists(TOKEN.map(lambda t: f"--hf-token={t}"), min_size=1, max_size=1)),
}


@PROPERTY
@given(drawn(OPTION_FIELDS))
def test_vllm_options_refuse_each_bad_field_before_anything_exists(token_env, emulator, case):
    EXAMPLES["VllmOptions"] += 1
    name, value = case
    refused(name, value, lambda: nbhelpers.deploy(token_env, nbhelpers.plan_deployment(
        "Llama-3.1-8B-Instruct", ask_for_token=False,
        options=nbhelpers.VllmOptions(**{name: value}))))
    nothing_created(emulator)


REQUEST_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "prompt": bad_text().filter(lambda v: v is not None),
    "question": bad_text().filter(lambda v: v is not None),
    "system": bad_text(empty_ok=True),
    "image": st.one_of(st.integers(), st.floats(), st.booleans(), CONTAINERS, SURROGATES, TOKEN),
    "chat": BAD_FLAG,
    "max_tokens": bad_whole(1, 131071),
    "temperature": bad_number(0),
    "top_p": bad_number(0, 1, low_open=True),
    "top_k": bad_whole(1, 128256).filter(lambda v: v != -1 or isinstance(v, bool)),
    "n_prompts": bad_whole(1, request_rules.MAX_PROMPTS).filter(lambda v: v is not None),
    "concurrency": bad_whole(1, request_rules.MAX_CONCURRENCY).filter(lambda v: v is not None),
}


@PROPERTY
@given(drawn(REQUEST_FIELDS))
def test_requests_refuse_each_bad_field_where_they_are_written(case):
    EXAMPLES["Requests"] += 1
    name, value = case
    refused(name, value, lambda: nbhelpers.Requests(**{name: value}))


@PROPERTY
@given(st.sampled_from(["Llama-3.1-8B-Instruct", "Llama-3.2-11B-Vision-Instruct"]),
       st.integers(4096, 131071), st.booleans())
def test_requests_beyond_max_model_len_stop_the_plan(token_env, emulator, model, max_tokens, chat):
    EXAMPLES["Requests against max_model_len"] += 1
    requests = nbhelpers.Requests(prompt="Hi", max_tokens=max_tokens, chat=chat)
    message = refused("max_tokens", max_tokens, lambda: nbhelpers.deploy(
        token_env, nbhelpers.plan_deployment(model, ask_for_token=False, requests=requests)))
    assert "max_model_len of 4,096 tokens" in message
    nothing_created(emulator)


@PROPERTY
@given(st.builds(
    nbhelpers.Requests,
    prompt=st.one_of(st.none(), st.text(min_size=1, max_size=300).filter(
        lambda s: s.strip() and not nbhelpers.tokens.looks_like_secret(s)).filter(
        lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))),
    max_tokens=st.integers(1, 4095), temperature=st.floats(0, 1e6),
    top_p=st.floats(0, 1, exclude_min=True), top_k=st.one_of(st.just(-1), st.integers(1, 128256)),
    n_prompts=st.one_of(st.none(), st.integers(1, request_rules.MAX_PROMPTS)),
    concurrency=st.one_of(st.none(), st.integers(1, request_rules.MAX_CONCURRENCY))))
def test_good_requests_pass_the_plan(token_env, requests):
    EXAMPLES["good Requests pass"] += 1
    plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", ask_for_token=False,
                                     requests=requests)
    assert plan.requests is requests and "(checked)" in plan.describe()


# --- the calls that talk to a deployed model -----------------------------------------------------
SAMPLING: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": bad_whole(1, 131071),
    "temperature": bad_number(0),
    "top_p": bad_number(0, 1, low_open=True),
    "top_k": bad_whole(1, 128256).filter(lambda v: v != -1 or isinstance(v, bool)),
    "raw_response": BAD_FLAG,
}
NOT_A_DEPLOYMENT = st.one_of(NOT_TEXT, st.text(max_size=10), st.just(NOWHERE))
BAD_PROMPTS = st.one_of(bad_text(), st.just([]), st.lists(bad_text(), min_size=1, max_size=2),
                        st.lists(st.text(min_size=1, max_size=5).filter(str.strip), min_size=1,
                                 max_size=2).map(lambda good: [*good, ""]))
BAD_IMAGE = st.one_of(
    st.integers(), st.floats(), st.none(), CONTAINERS, st.just(""), SURROGATES, TOKEN,
    st.text(min_size=1, max_size=30).filter(lambda s: s.strip() and not s.startswith(
        ("http://", "https://", "data:"))).map(lambda s: f"/nowhere/{s}"),
    st.text(min_size=5000, max_size=6000), st.just("/nowhere\x00/x.png"),
    st.binary(max_size=20), st.just("data:image/png;base64,%%%"), st.just("data:image/png,x"),
    st.just("http://127.0.0.1:9/cat.png"))


@PROPERTY
@given(drawn({"endpoint": NOT_A_DEPLOYMENT, "prompts": BAD_PROMPTS,
              "lora_id": bad_text(empty_ok=True), **SAMPLING}))
def test_predict_refuses_each_bad_parameter_before_any_call(session, emulator, case):
    EXAMPLES["predict"] += 1
    name, value = case
    kwargs = {"endpoint": unreachable("Llama-3.1-8B-Instruct"), "prompts": "Hi", name: value}
    refused(name, value, lambda: nbhelpers.predict(**kwargs))
    nothing_created(emulator)


@PROPERTY
@given(drawn({"deployment": NOT_A_DEPLOYMENT, "image": BAD_IMAGE, "question": bad_text(),
              "image_format": BAD_FORMAT, "quality": bad_whole(1, 100), **SAMPLING}))
def test_predict_image_refuses_each_bad_parameter_before_any_call(session, emulator, case):
    EXAMPLES["predict_image"] += 1
    name, value = case
    kwargs = {"deployment": unreachable("Llama-3.2-11B-Vision-Instruct"),
              "image": images.sample_image(64, 48), "question": "What?", name: value}
    refused(name, value, lambda: nbhelpers.predict_image(**kwargs))
    nothing_created(emulator)


@PROPERTY
@given(drawn({"deployment": NOT_A_DEPLOYMENT, "prompts": BAD_PROMPTS.filter(
                  lambda v: not isinstance(v, str)) | st.text(max_size=5),
              "concurrency": bad_whole(1, request_rules.MAX_CONCURRENCY),
              "instances_per_request": bad_whole(1, request_rules.MAX_PROMPTS),
              "progress": BAD_FLAG, "temprature": st.floats(0, 1), **SAMPLING}))
def test_predict_many_refuses_each_bad_parameter_before_any_call(session, emulator, case):
    EXAMPLES["predict_many"] += 1
    name, value = case
    kwargs = {"deployment": unreachable("Llama-3.1-8B-Instruct"), "prompts": ["Hi", "Yo"],
              "progress": False, name: value}
    refused(name, value, lambda: nbhelpers.predict_many(**kwargs))
    nothing_created(emulator)


BAD_MESSAGES = st.one_of(
    NOT_TEXT.filter(lambda v: v is not None), st.text(min_size=1, max_size=5),
    st.lists(NOT_TEXT, min_size=1, max_size=2),
    st.lists(st.fixed_dictionaries({"role": not_one_of("system", "user", "assistant"),
                                    "content": st.just("hi")}), min_size=1, max_size=2),
    st.lists(st.fixed_dictionaries({"role": st.just("user"),
                                    "content": st.one_of(NOT_TEXT.filter(
                                        lambda v: v is not None and not isinstance(v, list)),
                                        SURROGATES, TOKEN)}), min_size=1, max_size=2))


@PROPERTY
@given(drawn({"deployment": NOT_A_DEPLOYMENT,
              "prompt": st.one_of(bad_text().filter(lambda v: not isinstance(v, list)),
                                  st.just([]), BAD_MESSAGES.filter(lambda v: isinstance(v, list))),
              "system": bad_text(empty_ok=True),
              "history": BAD_MESSAGES.filter(lambda v: v not in ([], {})),
              "images_in": st.one_of(st.text(min_size=1, max_size=5), st.integers(),
                                     st.lists(BAD_IMAGE, min_size=1, max_size=1),
                                     st.lists(st.just(b"x"), min_size=2, max_size=4)),
              "image_format": BAD_FORMAT,
              "max_tokens": bad_whole(1, 131071), "temperature": bad_number(0),
              "stream": BAD_FLAG, "echo": BAD_FLAG,
              "openai_client": st.one_of(st.integers(), st.text(min_size=1, max_size=5),
                                         CONTAINERS)}))
def test_chat_refuses_each_bad_parameter_before_any_call(session, emulator, case):
    EXAMPLES["chat"] += 1
    name, value = case
    kwargs = {"deployment": unreachable("Llama-3.2-11B-Vision-Instruct"), "prompt": "Hi",
              name: value}
    refused(name, value, lambda: nbhelpers.chat(**kwargs))
    nothing_created(emulator)


@PROPERTY
@given(drawn({"deployment": NOT_A_DEPLOYMENT, "prompts": BAD_PROMPTS.filter(
                  lambda v: not isinstance(v, str)) | st.text(max_size=5),
              "concurrency": bad_whole(1, request_rules.MAX_CONCURRENCY),
              "progress": BAD_FLAG, "max_tokens": bad_whole(1, 131071),
              "system": bad_text(empty_ok=True), "stream": BAD_FLAG}))
def test_chat_many_refuses_each_bad_parameter_before_any_call(session, emulator, case):
    EXAMPLES["chat_many"] += 1
    name, value = case
    kwargs = {"deployment": unreachable("Llama-3.1-8B-Instruct"), "prompts": ["Hi"],
              "progress": False, name: value}
    refused(name, value, lambda: nbhelpers.chat_many(**kwargs))
    nothing_created(emulator)


@PROPERTY
@given(drawn({"deployment": NOT_A_DEPLOYMENT, "max_retries": bad_whole(0, 10)}))
def test_chat_client_refuses_each_bad_parameter(session, emulator, case):
    EXAMPLES["chat_client"] += 1
    name, value = case
    kwargs = {"deployment": unreachable("Llama-3.1-8B-Instruct"), name: value}
    refused(name, value, lambda: nbhelpers.chat_client(**kwargs))
    nothing_created(emulator)


def test_base_models_are_refused_chat_before_any_call(session, emulator):
    for model in [m.name for m in catalog.models() if not m.instruct]:
        EXAMPLES["chat on base models"] += 1
        refused("chat template", None, lambda m=model: nbhelpers.chat(unreachable(m), "Hi"))
    nothing_created(emulator)


# --- images --------------------------------------------------------------------------------------
@PROPERTY
@given(drawn({"image": BAD_IMAGE, "timeout_s": bad_number(0, images.MAX_FETCH_S,
                                                          low_open=True)}))
def test_load_image_refuses_each_bad_parameter(case):
    EXAMPLES["load_image"] += 1
    name, value = case
    kwargs = {"source": images.sample_image(8, 8), "timeout_s": 1.0,
              "source" if name == "image" else name: value}
    refused(name, value, lambda: nbhelpers.load_image(kwargs.pop("source"), **kwargs))


@PROPERTY
@given(drawn({"width": bad_whole(1, images.MAX_SIDE), "height": bad_whole(1, images.MAX_SIDE)}))
def test_sample_image_refuses_each_bad_size(case):
    EXAMPLES["sample_image"] += 1
    name, value = case
    refused(name, value, lambda: nbhelpers.sample_image(**{name: value}))


# --- the catalog, the planner, diagnosis, the picker, cleanup, deploy and reconnect ---------------
@PROPERTY
@given(drawn({"model": unknown_name(MODELS),
              "accelerator": unknown_name(hardware.ACCELERATORS).filter(
                  lambda v: not (isinstance(v, str) and _is_accelerator(v))),
              "gpu_memory_gib": bad_number(0, low_open=True).filter(lambda v: v is not None),
              "accelerator_count": bad_whole(1, 8), "dtype": not_one_of(*planner.DTYPE_BYTES),
              "gpu_memory_utilization": bad_number(0, 1, low_open=True),
              "max_model_len": bad_whole(1, 131072), "max_num_seqs": bad_whole(1, 65536),
              "enforce_eager": BAD_FLAG, "vllm_version": unknown_name(["0.9.2"]),
              "kv_cache_dtype": not_one_of(*vllm_args.KV_CACHE_DTYPES),
              "swap_space_gib": bad_number(0), "suggest_fixes": BAD_FLAG}))
def test_plan_memory_refuses_each_bad_parameter(case):
    EXAMPLES["plan_memory (planner)"] += 1
    name, value = case
    kwargs = {"model": "Llama-3.1-8B-Instruct", "accelerator": "L4", name: value}
    refused(name, value, lambda: nbhelpers.plan_memory(**kwargs))


@PROPERTY
@given(drawn({"name": unknown_name(MODELS), "family": not_one_of(*FAMILIES, None),
              "instruct_only": BAD_FLAG}))
def test_get_model_refuses_each_bad_parameter(case):
    EXAMPLES["get_model (catalog)"] += 1
    name, value = case
    kwargs = {"name": "Llama-3.1-8B-Instruct", name: value}
    # `name` is a model's name: the message says "model", which is what a reader looks for
    refused("model" if name == "name" else name, value, lambda: nbhelpers.get_model(**kwargs))


@PROPERTY
@given(drawn({"family": not_one_of(*FAMILIES, None), "modality": not_one_of("text", "vision", None),
              "instruct_only": BAD_FLAG}))
def test_models_refuses_each_bad_parameter(case):
    EXAMPLES["models (catalog)"] += 1
    name, value = case
    refused(name, value, lambda: nbhelpers.models(**{name: value}))


@PROPERTY
@given(drawn({"text": NOT_TEXT.filter(lambda v: v is not None) | SURROGATES,
              "max_evidence": bad_whole(1, 100)}))
def test_diagnose_text_refuses_each_bad_parameter(case):
    EXAMPLES["diagnose_text (diagnose)"] += 1
    name, value = case
    kwargs = {"text": "CUDA out of memory", name: value}
    refused(name, value, lambda: nbhelpers.diagnose_text(**kwargs))


@PROPERTY
@given(drawn({"default": unknown_name(MODELS), "family": not_one_of(*FAMILIES, None),
              "modality": not_one_of("text", "vision", None), "instruct_only": BAD_FLAG}))
def test_model_picker_refuses_each_bad_parameter(case):
    EXAMPLES["model_picker (widgets)"] += 1
    name, value = case
    kwargs = {"default": "Llama-3.1-8B-Instruct", name: value}
    refused(name, value, lambda: nbhelpers.model_picker(**kwargs))


@PROPERTY
@given(drawn({"dry_run": BAD_FLAG, "whole_owner": BAD_FLAG, "delete_files": BAD_FLAG,
              "wait_s": bad_number(0, 86400)}))
def test_cleanup_refuses_each_bad_flag(session, emulator, case):
    EXAMPLES["cleanup (teardown)"] += 1
    name, value = case
    refused(name, value, lambda: nbhelpers.cleanup(session, **{name: value}))


@PROPERTY
@given(drawn({"plan": NOT_TEXT | st.text(max_size=5), "timeout_s": bad_whole(1, 86400)}))
def test_deploy_refuses_each_bad_parameter_before_anything_exists(token_env, emulator, case):
    EXAMPLES["deploy (deployments)"] += 1
    name, value = case
    kwargs = {"plan": nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", ask_for_token=False),
              name: value}
    refused(name, value, lambda: nbhelpers.deploy(token_env, **kwargs))
    nothing_created(emulator)


@PROPERTY
@given(NOT_TEXT | BLANK | TOKEN)
def test_reconnect_refuses_a_bad_endpoint_id(session, emulator, value):
    EXAMPLES["reconnect (deployments)"] += 1
    refused("endpoint_id", value, lambda: nbhelpers.reconnect(session, value))
