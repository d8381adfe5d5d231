"""The notebooks as the tutorial's lessons (#13 item 5): Colab forms, the machine picker, the
confirmation before billing, one prompt name, 03 connecting instead of deploying, request bodies
shown, vLLM arguments explained, and 04's worked examples of the tutorial's four failures."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

import nbhelpers
from nbhelpers import (
    catalog,
    container,
    notebook_checks,
    planner,
    redaction,
    sizing,
    vllm_args,
    widgets,
)
from nbhelpers.errors import ConfigError
from nbhelpers.hardware import Hardware
from nbhelpers.releases import DEFAULT_TAG, image_uri
from nbhelpers.run_config import RUNNER_PARAMETERS, handed_parameters, notebook_parameters
from tests.conftest import FAKE_TOKEN

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
DEPLOYING = ("01_deploy_llama31_text.ipynb", "02_deploy_llama32_multimodal.ipynb",
             "03_openai_chat_inference.ipynb")


def _cells(name: str) -> list[dict]:
    return json.loads((NOTEBOOKS / name).read_text())["cells"]


def _parameters_cell(cells: list[dict]) -> dict:
    return next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))


# --- the lint keeps the lessons' rules -----------------------------------------------------------
def _mutated(tmp_path: Path, name: str, change) -> Path:
    path = tmp_path / name
    shutil.copy(NOTEBOOKS / name, path)
    notebook = json.loads(path.read_text())
    change(notebook["cells"])
    path.write_text(json.dumps(notebook, indent=1) + "\n")
    return path


def _edit_parameters(old: str, new: str):
    def change(cells: list[dict]) -> None:
        cell = _parameters_cell(cells)
        source = "".join(cell["source"])
        assert old in source, old
        cell["source"] = source.replace(old, new)
    return change


def _edit_cell(containing: str, old: str, new: str):
    def change(cells: list[dict]) -> None:
        cell = next(c for c in cells if containing in "".join(c["source"]))
        cell["source"] = "".join(cell["source"]).replace(old, new)
    return change


def test_every_notebook_passes_the_lessons_lint():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        assert notebook_checks.problems(path) == [], path.name


@pytest.mark.parametrize("name, change, said", [
    ("01_deploy_llama31_text.ipynb", _edit_parameters("# @title Parameters", "# Parameters"),
     "must start with '# @title"),
    ("04_debugging.ipynb", _edit_parameters("# @markdown", "#"), "no '# @markdown' help"),
    ("02_deploy_llama32_multimodal.ipynb", _edit_parameters("PROMPT = ", "QUESTION = "),
     "parameter QUESTION was renamed PROMPT"),
    ("01_deploy_llama31_text.ipynb",
     _edit_parameters('# @param ["", "g2', '# @param ["", "g2-standard-4", "g2'),
     "MACHINE_TYPE's choices must be those its MODEL list starts on"),
    ("01_deploy_llama31_text.ipynb",
     _edit_parameters("CONFIRM_DEPLOY = False", "CONFIRM_DEPLOY = True"),
     "its parameters must hold 'CONFIRM_DEPLOY = False"),
    ("03_openai_chat_inference.ipynb",
     _edit_cell("nbhelpers.deploy(", "nbhelpers.confirm_deploy(plan, CONFIRM_DEPLOY)", "pass"),
     "without nbhelpers.confirm_deploy("),
    ("01_deploy_llama31_text.ipynb",
     _edit_parameters("RUN_BATCH_JOB = False", "RUN_BATCH_JOB = True"),
     "its parameters must hold 'RUN_BATCH_JOB = False"),
    ("01_deploy_llama31_text.ipynb",
     _edit_cell("nbhelpers.run_batch_prediction(", "if RUN_BATCH_JOB:", "if True:"),
     "without 'if RUN_BATCH_JOB:' before it"),
    ("01_deploy_llama31_text.ipynb",
     _edit_parameters('# @param ["vllm-container", "model-garden"]', '# @param ["model-garden"]'),
     "DEPLOY_WITH's choices must be the package's (model_garden.DEPLOY_WITH)"),
    ("02_deploy_llama32_multimodal.ipynb",
     _edit_parameters('"20250717_0916_arm_RC01"]', '"20250717_0916_arm_RC01", "latest"]'),
     "CONTAINER_TAG's choices must be the package's (releases.RELEASES)"),
])
def test_the_lint_refuses_what_breaks_a_lesson_rule(tmp_path, name, change, said):
    found = notebook_checks.problems(_mutated(tmp_path, name, change))
    assert any(said in problem for problem in found), found


def test_one_prompt_parameter_across_the_lessons():
    specs = notebook_parameters(NOTEBOOKS)
    for name in DEPLOYING:
        assert specs[name]["PROMPT"].kind is str, name
        assert not {"QUESTION", "TEXT_PROMPT"} & set(specs[name]), name


# --- the machine picker ---------------------------------------------------------------------------
def test_machine_choices_are_where_the_model_starts_with_the_tutorials_first():
    seventy = sizing.machine_choices("Llama-3.1-70B-Instruct")
    assert seventy[:2] == ["a3-highgpu-4g", "g2-standard-96"]  # Google's 4 x H100, the 8 x L4
    assert "g2-standard-48" not in seventy  # 4 x L4 cannot hold 141 GB of weights
    assert sizing.machine_choices("Llama-3.2-11B-Vision")[0] == "a2-highgpu-1g"
    image = image_uri(DEFAULT_TAG)
    for spec in catalog.models():
        offered = sizing.machine_choices(spec)
        assert offered[0] == spec.hardware.machine_type
        for machine in offered:  # each one starts, by the memory plan, with the catalog's settings
            hardware = Hardware.for_machine(machine)
            options = container.VllmOptions().resolved(spec, hardware.accelerator_count)
            args = container.server_args(spec.hf_id, options)
            assert planner.plan_memory(accelerator=hardware.accelerator_type,
                                       **container.memory_inputs(spec, args, image)).ok


def test_a_machine_the_model_does_not_start_on_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"MACHINE_TYPE 'g2-standard-8' is not a choice for "
                                          r"Llama-3.1-70B-Instruct.*'a3-highgpu-4g', "
                                          r"'g2-standard-96'"):
        widgets.check_machine("Llama-3.1-70B-Instruct", "g2-standard-8")
    with pytest.raises(ConfigError, match="is not a choice"):
        widgets.check_machine("Llama-3.1-8B", "n1-standard-4")
    assert widgets.check_machine("Llama-3.1-70B-Instruct", "") == "a3-highgpu-4g"


def test_the_machine_picker_follows_the_model_picker():
    models = nbhelpers.model_picker("Llama-3.1-8B-Instruct", family="llama3.1")
    machines = nbhelpers.machine_picker(models, "g2-standard-24")
    assert machines.value == "g2-standard-24"
    assert [value for _, value in machines.options] == \
        sizing.machine_choices("Llama-3.1-8B-Instruct")
    models.value = "Llama-3.1-70B-Instruct"  # 2 x L4 is no choice for 70B: its first machine
    assert [value for _, value in machines.options] == \
        sizing.machine_choices("Llama-3.1-70B-Instruct")
    assert machines.value == "a3-highgpu-4g"
    assert "8 x L4" in dict((v, label) for label, v in machines.options)["g2-standard-96"]
    machines.value = "a2-ultragpu-8g"
    models.value = "Llama-3.1-405B-FP8"  # kept: 405B starts on 8 x A100 80GB too
    assert machines.value == "a2-ultragpu-8g"
    with pytest.raises(Exception):  # noqa: B017 - traitlets' TraitError: not among the options
        machines.value = "g2-standard-8"


# --- the vLLM arguments, explained; the tutorial's settings ---------------------------------------
def test_every_argument_the_plans_print_is_explained():
    template = "{{ tools }}{{ messages }}"  # a template for tool calling renders the tools
    options = container.VllmOptions(enable_lora=True, max_lora_rank=64, tool_calling=True,
                                    chat_template=template, enable_prefix_caching=True)
    for spec in catalog.models(instruct_only=True):
        resolved = options.resolved(spec, spec.hardware.accelerator_count)
        args = container.container_spec(spec, resolved).args
        explained = vllm_args.explain_args(args).splitlines()
        flags = [a for a in args if a.startswith("--")]
        assert len(explained) == len(flags)
        for flag, line in zip(flags, explained, strict=True):
            assert line.startswith(f"  {flag}: ") and "no explanation" not in line, line
    assert "--max-lora-rank=64" in args and f"--chat-template={template}" in args
    container.check_server_args(args, image_uri(DEFAULT_TAG), gpus=8)  # vLLM's parser takes them


def test_the_tutorials_settings_are_checked():
    with pytest.raises(ConfigError, match=r"max_lora_rank must be one of 8, 16, 32, 64, 128, 256, "
                                          r"320, 512, got 12"):
        container.VllmOptions(max_lora_rank=12).check()
    with pytest.raises(ConfigError, match="chat_template must have at most 100,000"):
        container.VllmOptions(chat_template="x" * 100_001).check()
    spec = catalog.get_model("Llama-3.2-11B-Vision-Instruct")
    resolved = container.VllmOptions(gpu_memory_utilization=0.85).resolved(spec, 1)
    args = container.server_args(spec.hf_id, resolved)
    assert "--gpu-memory-utilization=0.85" in args and "--enforce-eager" in args  # catalog's eager


# --- the confirmation, the runner's parameters, the request bodies --------------------------------
def test_without_confirmation_the_deploy_says_the_price_and_stops(env):
    env.delenv(widgets.CONFIRM_VARIABLE, raising=False)
    plan = nbhelpers.plan_deployment("Llama-3.1-70B-Instruct", machine_type="g2-standard-96",
                                     weights_uri="gs://team-bucket/llama-70b", ask_for_token=False)
    with pytest.raises(widgets.NotConfirmed) as stopped:
        nbhelpers.confirm_deploy(plan, False)
    said = str(stopped.value)
    assert said.startswith("Nothing was created.") and plan.price.headline() in said
    assert "g2-standard-96 (8 x L4)" in said and "CONFIRM_DEPLOY = True" in said
    with pytest.raises(ConfigError, match="CONFIRM_DEPLOY must be True or False"):
        nbhelpers.confirm_deploy(plan, "yes")
    nbhelpers.confirm_deploy(plan, True)
    env.setenv(widgets.CONFIRM_VARIABLE, "1")
    nbhelpers.confirm_deploy(plan, False)  # what nbval's command sets, explicitly


def test_the_runner_confirms_deploys_unless_told_otherwise():
    specs = notebook_parameters(NOTEBOOKS)
    assert RUNNER_PARAMETERS == {"CONFIRM_DEPLOY": True}
    for name in DEPLOYING:
        assert handed_parameters(specs[name], {"PROMPT": "Hi"}) == {
            "CONFIRM_DEPLOY": True, "PROMPT": "Hi"}
        assert handed_parameters(specs[name], {"CONFIRM_DEPLOY": False})["CONFIRM_DEPLOY"] is False
    assert handed_parameters(specs["00_setup.ipynb"], {"PROMPT": "Hi"}) == {}


def test_a_request_body_is_shown_without_secrets_or_whole_images():
    image = "data:image/jpeg;base64," + "A" * 5_000
    shown = nbhelpers.show_request({"instances": [{"prompt": f"use {FAKE_TOKEN}",
                                                   "multi_modal_data": {"image": image}}]})
    # hidden whether or not an earlier test made this process read it (then it is hidden whole,
    # else by its pattern, keeping "hf_")
    assert FAKE_TOKEN not in shown and f"use {redaction.HIDDEN}" in shown.replace("hf_<", "<")
    assert "(5,023 characters)" in shown and "A" * 200 not in shown
    assert json.loads(shown.replace(FAKE_TOKEN, ""))["instances"][0]["prompt"].startswith("use ")


# --- 04: the tutorial's four failures -------------------------------------------------------------
def test_notebook_04_diagnoses_the_tutorials_four_failures():
    source = next("".join(c["source"]) for c in _cells("04_debugging.ipynb")
                  if "TUTORIAL_FAILURES = {" in "".join(c["source"]))
    failures = ast.literal_eval(ast.parse(source).body[0].value)
    kinds = {title: nbhelpers.diagnose_text(text).kind for title, text in failures.items()}
    assert kinds == {"CUDA out of memory": "oom", "Hugging Face token needed": "hf_auth",
                     "Chat template needed": "chat_template",
                     "Model max seq len": "max_model_len"}
    fix = nbhelpers.diagnose_text(failures["Model max seq len"])
    assert "MAX_MODEL_LEN" in str(fix)


def test_the_error_box_takes_many_lines():
    box = nbhelpers.error_box("Traceback (most recent call last):\n  ...\nValueError: x")
    assert box.value.count("\n") == 2 and box.rows >= 8


# --- "Run all" without confirmation, as saved: nothing is created ---------------------------------
@pytest.mark.notebooks
@pytest.mark.parametrize("name, said", [
    ("01_deploy_llama31_text.ipynb", "Nothing was created. Deploying Llama-3.1-8B-Instruct on "
                                     "g2-standard-12 (1 x L4)"),
    ("03_openai_chat_inference.ipynb", "has no live deployment of Llama-3.1-8B-Instruct, and "
                                       "DEPLOY_IF_MISSING is False"),
])
def test_run_all_as_saved_creates_nothing(tmp_path, env, emulator, name, said):
    import papermill

    env.setenv("HF_TOKEN", FAKE_TOKEN)
    env.setenv("NBHELPERS_RUN_ID", "run-all")
    env.delenv(widgets.CONFIRM_VARIABLE, raising=False)
    with pytest.raises(papermill.PapermillExecutionError) as stopped:
        papermill.execute_notebook(str(NOTEBOOKS / name), str(tmp_path / name),
                                   kernel_name="python3", cwd=str(NOTEBOOKS),
                                   progress_bar=False, log_output=False)
    assert said in str(stopped.value), str(stopped.value)[-600:]
    if name.startswith("03"):
        assert "01_deploy_llama31_text" in str(stopped.value)
    data = emulator.vertex.state.data
    assert data["endpoints"] == {} and data["models"] == {}
    assert not any("/endpoints/" in op or "/models/" in op for op in data["operations"])
    executed = (tmp_path / name).read_text()
    assert FAKE_TOKEN not in executed
