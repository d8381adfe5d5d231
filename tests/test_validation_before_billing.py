"""Never pay for a GPU nobody uses: everything a notebook will use is checked by its plan, before
the first billed call; bad vLLM arguments are refused there too; the plan says where the Hugging
Face token goes; and no message echoes a token."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

import nbhelpers
from nbhelpers import catalog, container, images, openai_chat, prediction, request_rules, tokens
from nbhelpers.deployments import Deployment
from nbhelpers.errors import ConfigError, DeploymentError
from tests.conftest import FAKE_TOKEN
from tests.test_notebooks import run_suite

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PASTED = "hf_PastedIntoAParameter0123456789"  # a token where a parameter goes


def _plan(model="Llama-3.1-8B-Instruct", **kwargs):
    return nbhelpers.plan_deployment(model, ask_for_token=False, **kwargs)


def _nothing_created(emulator) -> None:
    data = emulator.vertex.state.data
    assert data["endpoints"] == {} and data["models"] == {}
    assert not any("/endpoints/" in op or "/models/" in op for op in data["operations"])


# --- the notebooks: their later parameters stop the plan cell ------------------------------------
@pytest.mark.notebooks
@pytest.mark.parametrize("notebook, parameters, message", [
    ("01_deploy_llama31_text.ipynb", {"MAX_TOKENS": 0}, "max_tokens must be a whole number"),
    ("01_deploy_llama31_text.ipynb", {"TOP_P": 1.5}, "top_p must be a finite number above 0"),
    ("02_deploy_llama32_multimodal.ipynb", {"IMAGE": "/nowhere/cat.png"},
     "image source '/nowhere/cat.png': the file does not exist"),
    ("03_openai_chat_inference.ipynb", {"N_PROMPTS": 0}, "n_prompts must be a whole number"),
    ("03_openai_chat_inference.ipynb", {"MAX_TOKENS": 5000},
     "max_tokens must be a whole number from 1 to 4095 (max_model_len"),
])
def test_a_later_parameter_stops_the_plan_before_anything_is_created(
        tmp_path, emulator, notebook, parameters, message):
    results = run_suite(NOTEBOOKS, tmp_path, notebooks=(notebook,), parameters=parameters,
                        run_id="early", environment={"NBHELPERS_EMULATOR_URL": emulator.url,
                                                     "HF_TOKEN": FAKE_TOKEN})
    failed = [r for r in results if not r.ok]
    assert failed and message in failed[0].error, [r.error for r in results]
    _nothing_created(emulator)


# --- the same rules before the deployment as after it -------------------------------------------
@pytest.mark.parametrize("bad", [
    {"max_tokens": 0}, {"max_tokens": True}, {"max_tokens": 2.0}, {"temperature": -0.1},
    {"temperature": float("nan")}, {"top_p": 0}, {"top_p": float("inf")}, {"top_k": 0},
    {"top_k": 10 ** 9}, {"prompt": " \n"}, {"prompt": 42}, {"prompt": "a\ud800b"},
])
def test_the_plan_and_predict_share_each_rule(bad):
    """One source per rule: what Requests refuses, predict's instance builder refuses with
    the same words."""
    sampling = {"prompt": "Hi", "max_tokens": 16, "temperature": 1.0, "top_p": 1.0, "top_k": 1}
    values = {**sampling, **bad}
    with pytest.raises(ConfigError) as planned:
        nbhelpers.Requests(**values)
    prompt = values.pop("prompt")
    with pytest.raises(ConfigError) as called:
        prediction.build_instance(prompt, raw_response=False, **values)
    assert str(planned.value) == str(called.value)
    assert next(iter(bad)) in str(called.value)


def test_requests_are_checked_against_the_plans_model_and_max_model_len(session, env, emulator):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    with pytest.raises(ConfigError, match=r"max_tokens .* from 1 to 8191 \(max_model_len of "
                                          r"8,192 tokens"):
        _plan(options=nbhelpers.VllmOptions(max_model_len=8192),
              requests=nbhelpers.Requests(prompt="Hi", max_tokens=8192))
    with pytest.raises(ConfigError, match="base model without a chat template"):
        _plan("Llama-3.2-1B", requests=nbhelpers.Requests(chat=True, prompt="Hi"))
    with pytest.raises(ConfigError, match="over the 1,572,864-byte"):  # a shared endpoint's
        _plan(requests=nbhelpers.Requests(prompt="x" * 1_600_000), dedicated_endpoint=False)
    with pytest.raises(ConfigError, match="over the 10,485,760-byte"):  # a dedicated one's
        _plan(requests=nbhelpers.Requests(prompt="x" * 10_600_000))
    with pytest.raises(ConfigError, match="image source .* is not an image Pillow can read"):
        _plan("Llama-3.2-11B-Vision-Instruct",
              requests=nbhelpers.Requests(question="What?", image=b"not an image"))
    with pytest.raises(ConfigError, match="could not fetch image source 'http://127.0.0.1:9/"):
        _plan("Llama-3.2-11B-Vision-Instruct",
              requests=nbhelpers.Requests(question="What?", image="http://127.0.0.1:9/x.png"))
    # A text model does not read the image, so it is not loaded (nor fetched) for one.
    text_plan = _plan("Llama-3.2-1B-Instruct", requests=nbhelpers.Requests(
        prompt="Hi", question="What?", image="/nowhere/cat.png"))
    assert "requests:   predict: prompt (2 chars)" in text_plan.describe()
    _nothing_created(emulator)


def test_good_requests_pass_and_are_described(session, env, tmp_path):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    photo = tmp_path / "photo.png"
    images.sample_image(640, 480).save(photo)
    plan = _plan("Llama-3.2-11B-Vision-Instruct", requests=nbhelpers.Requests(
        chat=True, prompt="Hi", system="Be brief.", question="What is it?", image=str(photo),
        max_tokens=100, n_prompts=24, concurrency=8))
    assert plan.requests is not None
    assert ("requests:   chat: prompt (2 chars), question (11 chars), system (9 chars), image, "
            "max_tokens 100, 24 prompts, 8 at once (checked)") in plan.describe()


def test_every_call_checks_before_the_endpoint_is_touched():
    """A deployment whose endpoint cannot be reached: each refusal comes first."""
    unreachable = Deployment(
        key="k", model_name="Llama-3.2-11B-Vision-Instruct", endpoint_name="nowhere",
        model_resource="nowhere", deployed_model_id="0", machine_type="a2-highgpu-1g",
        dedicated_endpoint=False)
    unreachable.endpoint = lambda: pytest.fail("the endpoint was reached")  # type: ignore
    with pytest.raises(ConfigError, match="max_tokens"):
        nbhelpers.predict(unreachable, "Hi", max_tokens=-1)
    with pytest.raises(ConfigError, match="prompts must hold 1 to"):
        nbhelpers.predict(unreachable, [])
    with pytest.raises(ConfigError, match="question must not be empty"):
        nbhelpers.predict_image(unreachable, images.sample_image(), "")
    with pytest.raises(ConfigError, match="images_in carries 2 images"):
        nbhelpers.chat(unreachable, "Compare", images_in=[b"x", b"y"])
    with pytest.raises(ConfigError, match="stream must be True or False"):
        nbhelpers.chat(unreachable, "Hi", stream="yes")
    with pytest.raises(ConfigError, match="concurrency must be a whole number from 1 to 256"):
        nbhelpers.chat_many(unreachable, ["Hi"], concurrency=0)
    with pytest.raises(ConfigError, match="unknown sampling setting 'temprature'"):
        nbhelpers.predict_many(unreachable, ["Hi"], temprature=0.5)


# --- vLLM arguments, against the chosen image's release ------------------------------------------
@pytest.mark.parametrize("extra, tag, wording", [
    (("--max-num-seqs=lots",), None, "argument --max-num-seqs: invalid int value: 'lots'"),
    (("--no-such-flag",), None, "unrecognized arguments: --no-such-flag"),
    (("--kv-cache-dtype", "fp16"), "20241001_0916_RC00",
     "argument --kv-cache-dtype: invalid choice: 'fp16'"),
    (("--enforce-eager=yes",), None, "argument --enforce-eager: ignored explicit argument 'yes'"),
    (("--dtype",), None, "argument --dtype: expected one argument"),
])
def test_bad_vllm_arguments_are_refused_before_anything_exists(session, env, emulator, extra,
                                                               tag, wording):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    options = nbhelpers.VllmOptions(extra_args=extra)
    with pytest.raises(ConfigError) as refused:
        nbhelpers.deploy(session, _plan(options=options,
                                        **({"container_tag": tag} if tag else {})))
    message = str(refused.value)
    release = "0.6.2 (20241001_0916_RC00)" if tag else "0.9.2 (20250710_0916_RC01)"
    assert f"vLLM {release} would refuse these container arguments" in message
    assert f"api_server.py: error: {wording}" in message and "VllmOptions.extra_args" in message
    _nothing_created(emulator)


def test_arguments_asking_for_more_gpus_than_the_machine_has_are_refused(session, env, emulator):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    with pytest.raises(ConfigError, match="ask vLLM 0.9.2 for 4 GPUs .* the machine has 1"):
        _plan(options=nbhelpers.VllmOptions(extra_args=("--pipeline-parallel-size=4",)))
    _nothing_created(emulator)


def test_vllm_options_refuse_bad_types_instead_of_defaulting():
    model = catalog.get_model("Llama-3.1-8B-Instruct")
    for field, value in (("max_model_len", 0), ("max_num_seqs", False), ("max_loras", 1.0),
                         ("gpu_memory_utilization", 0.0), ("enforce_eager", "yes"),
                         ("swap_space_gib", float("nan")), ("extra_args", "--enforce-eager")):
        with pytest.raises(ConfigError, match=field):
            nbhelpers.VllmOptions(**{field: value}).resolved(model, 1)


# --- the Hugging Face token ---------------------------------------------------------------------
def test_the_plan_says_once_that_the_token_will_be_stored(env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    plan = _plan()
    shown = plan.describe()
    assert plan.stores_token and plan.container.env["HF_TOKEN"] == FAKE_TOKEN
    assert shown.count("token:") == 1 and FAKE_TOKEN not in shown
    assert ("token:      your Hugging Face token will be stored in the Model's container "
            "environment, readable by anyone in the project who can read models; set "
            "WEIGHTS_URI to a gs:// copy") in shown


def test_gs_weights_place_no_token_even_when_one_is_set(env, monkeypatch):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    asked = []
    monkeypatch.setattr(tokens, "hf_token", lambda **kw: asked.append(kw) or FAKE_TOKEN)
    plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct",
                                     weights_uri="gs://my-models/llama-3.1-8b-instruct")
    assert asked == []  # not even read: nothing could store it
    assert "HF_TOKEN" not in plan.container.env and not plan.stores_token
    assert "token:      none stored: the weights come from Cloud Storage" in plan.describe()
    model = catalog.get_model("Llama-3.1-8B-Instruct")
    with pytest.raises(ConfigError, match="weights_uri and hf_token together"):
        container.container_spec(model, nbhelpers.VllmOptions().resolved(model, 1),
                                 weights_uri="gs://my-models/x", hf_token=FAKE_TOKEN)


def _refused_without_echo(call) -> str:
    with pytest.raises(ConfigError) as refused:
        call()
    shown = str(refused.value) + repr(refused.value) + "".join(
        traceback.format_exception(refused.value))
    assert PASTED not in shown and PASTED[3:] not in shown, shown
    return str(refused.value)


@pytest.mark.parametrize("parameter, call", [
    ("model", lambda: _plan(PASTED)),
    ("prompt", lambda: _plan(requests=nbhelpers.Requests(prompt=f"my token is {PASTED}"))),
    ("weights_uri", lambda: _plan(weights_uri=PASTED)),
    ("weights_uri", lambda: _plan(weights_uri=f"gs://my-models/{PASTED}")),
    ("machine_type", lambda: _plan(machine_type=PASTED)),
    ("question", lambda: nbhelpers.Requests(question=PASTED)),
    ("system", lambda: nbhelpers.Requests(system=PASTED)),
    ("image", lambda: nbhelpers.Requests(image=PASTED)),
    ("extra_args[0]", lambda: _plan(options=nbhelpers.VllmOptions(
        extra_args=(f"--hf-token={PASTED}",)))),
])
def test_a_pasted_token_is_refused_without_being_echoed(env, emulator, parameter, call):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    message = _refused_without_echo(call)
    assert message.startswith(parameter) or f"{parameter}:" in message, message
    assert "Hugging Face token" in message and "hf_<hidden>" in message
    _nothing_created(emulator)


def test_every_error_message_is_redacted():
    for error in (ConfigError(f"bad {PASTED}"), DeploymentError(f"failed: {PASTED}"),
                  ConfigError("two", PASTED)):
        shown = str(error) + repr(error) + "".join(traceback.format_exception(error))
        assert PASTED not in shown and "hf_<hidden>" in shown
    assert tokens.redact(f"x {PASTED} y") == "x hf_<hidden> y"  # the old name still works


def test_a_token_that_does_not_look_like_one_is_hidden_once_read(monkeypatch):
    odd = "not-an-hf-pattern-secret-42"
    monkeypatch.setenv("HF_TOKEN", odd)
    assert tokens.hf_token(required=True) == odd
    assert odd not in str(ConfigError(f"it was {odd}"))
    with pytest.raises(ConfigError, match="prompt holds what looks like a Hugging Face token"):
        nbhelpers.Requests(prompt=f"is {odd} right?")


def test_chat_rules_are_the_ones_the_plan_uses():
    model = catalog.get_model("Llama-3.2-11B-Vision-Instruct")
    messages = openai_chat.build_messages("Hi", system="Be brief.")
    assert messages == request_rules.messages("Hi", system="Be brief.")
    with pytest.raises(ConfigError, match=r"history\[0\]\['role'\] must be one of"):
        openai_chat.build_messages("Hi", history=[{"role": "robot", "content": "beep"}])
    with pytest.raises(ConfigError, match="carries 2 images"):
        openai_chat.check_request(model, [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}] * 2}])
