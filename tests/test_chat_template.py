"""Chat on a base model: refused without a chat template (vLLM's own 400, the tutorial's
error), answered when the container passes one with --chat-template (the tutorial's fix), both
by the client's rules before the call and by the emulator's replica over HTTP."""

from __future__ import annotations

import pytest
from conftest import FAKE_TOKEN, emulator_logs

import nbhelpers
from nbhelpers import container, request_rules
from nbhelpers.errors import ConfigError
from nbhelpers.request_rules import LLAMA3_CHAT_TEMPLATE

BASE = "Llama-3.2-1B"  # the smallest base model: no chat template of its own
SERVER = ["python", "-m", "vllm.entrypoints.api_server", "--model=m"]


def _deploy(session, env, options=None, requests=None):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    return nbhelpers.deploy(session, nbhelpers.plan_deployment(
        BASE, options=options, requests=requests, ask_for_token=False))


# --- the rules, with no emulator ---------------------------------------------------------------
def test_the_template_is_read_from_the_container_arguments_in_each_spelling():
    assert container.chat_template_of([*SERVER, "--chat-template={{ messages }}"]) \
        == "{{ messages }}"
    assert container.chat_template_of([*SERVER, "--chat-template", "/workspace/t.jinja",
                                        "--enforce-eager"]) == "/workspace/t.jinja"
    assert container.chat_template_of([*SERVER, "--chat_template=x"]) == "x"
    assert container.chat_template_of(SERVER) == ""
    built = container.server_args("meta-llama/Llama-3.2-1B", nbhelpers.VllmOptions(
        chat_template=LLAMA3_CHAT_TEMPLATE).resolved(nbhelpers.get_model(BASE), 1))
    assert container.chat_template_of(built) == LLAMA3_CHAT_TEMPLATE


def test_the_plan_refuses_chat_on_a_base_model_unless_its_container_passes_a_template():
    model = nbhelpers.get_model(BASE)
    chat = nbhelpers.Requests(chat=True, prompt="Hi", system="Be brief.")
    with pytest.raises(ConfigError, match=rf"{BASE} is a base model without a chat template.*"
                                          rf"Deploy {BASE}-Instruct.*CHAT_TEMPLATE"):
        chat.check(model, max_model_len=2048, container_args=SERVER)
    chat.check(model, max_model_len=2048, container_args=[*SERVER, "--chat-template={{ x }}"])
    chat.check(model, max_model_len=2048,  # a file in the image, as extra_args give it
               container_args=[*SERVER, "--chat-template", "/workspace/llama3.jinja"])
    with pytest.raises(ConfigError, match="base model without a chat template"):
        request_rules.check_chat(model, [], template=False)
    request_rules.check_chat(model, [], template=True)
    with pytest.raises(ConfigError, match="base model without a chat template"):
        request_rules.check_chat(model, [])  # no deployment yet: the model's own decides


def test_the_suggested_template_renders_llama_3s_chat_format():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    assert "\n" not in LLAMA3_CHAT_TEMPLATE  # one line: the notebooks' form field
    rendered = ImmutableSandboxedEnvironment().from_string(LLAMA3_CHAT_TEMPLATE).render(
        bos_token="<|begin_of_text|>", add_generation_prompt=True,
        messages=[{"role": "user", "content": "<|image|>Hi "}])
    # The same header tokens as the Instruct form of the vision prompt (request_rules).
    assert rendered == request_rules.vision_prompt("Hi", instruct=True)
    two = ImmutableSandboxedEnvironment().from_string(LLAMA3_CHAT_TEMPLATE).render(
        bos_token="<|begin_of_text|>", add_generation_prompt=False,
        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert two == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>")


def test_the_diagnosis_gives_both_fixes_and_the_template_as_a_deploy_parameter():
    tutorial = ("ValueError: Cannot use chat template functions because tokenizer.chat_template "
                "is not set and no template argument was passed! As of transformers v4.44, "
                "default chat template is no longer allowed, so you must provide a chat "
                "template if the tokenizer does not define one.")
    diagnosis = nbhelpers.diagnose_text(tutorial)
    assert diagnosis.kind == "chat_template"
    assert "--chat-template" in diagnosis.fix and "CHAT_TEMPLATE" in diagnosis.fix
    assert "Instruct variant" in diagnosis.fix
    assert diagnosis.deploy_parameters == {"CHAT_TEMPLATE": LLAMA3_CHAT_TEMPLATE}
    # The parameter passes the container option's own checks as the notebooks pass it.
    nbhelpers.VllmOptions(chat_template=diagnosis.deploy_parameters["CHAT_TEMPLATE"]).check()


# --- over HTTP, against the emulator -----------------------------------------------------------
def test_a_base_model_without_a_template_is_refused_with_vllms_words(session, env, emulator):
    import openai

    base = _deploy(session, env)
    with pytest.raises(ConfigError, match=f"{BASE} is a base model without a chat template"):
        nbhelpers.chat(base, "Hi")
    with pytest.raises(ConfigError, match="base model without a chat template"):
        nbhelpers.chat_many(base, ["Hi"], progress=False)
    # Unchecked, the server answers as vLLM does: the tutorial's error.
    with pytest.raises(openai.BadRequestError, match="default chat template is no longer "
                                                     "allowed, so you must provide a chat "
                                                     "template"):
        nbhelpers.chat_client(base).chat.completions.create(
            model="", messages=[{"role": "user", "content": "Hi"}])
    assert not any("Using supplied chat template" in line
                   for line in emulator_logs(emulator, base.endpoint_id))


def test_a_base_model_deployed_with_a_template_chats(session, env, emulator):
    base = _deploy(session, env, options=nbhelpers.VllmOptions(chat_template=LLAMA3_CHAT_TEMPLATE),
                   requests=nbhelpers.Requests(chat=True, prompt="Hi"))
    reply = nbhelpers.chat(base, "Hi", system="Be brief.", max_tokens=60)
    assert "rehearsal" in reply and "2 messages (system,user)" in reply
    report = nbhelpers.chat_many(base, ["one", "two"], concurrency=2, progress=False,
                                 max_tokens=5)
    assert [r.ok for r in report.results] == [True, True]
    logs = emulator_logs(emulator, base.endpoint_id)
    assert any(line.endswith("Using supplied chat template:") for line in logs)
    assert LLAMA3_CHAT_TEMPLATE in logs
    # Another runtime reconnects by the endpoint id alone: the template is read from the
    # Model's container arguments, where Vertex AI keeps it.
    again = nbhelpers.reconnect(session, base.endpoint_id)
    assert "rehearsal" in nbhelpers.chat(again, "Still there?", max_tokens=4)
