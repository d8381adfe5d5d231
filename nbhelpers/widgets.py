"""What a lesson notebook shows and asks: pickers whose default is the notebook parameter (so
headless runs use it as is), the confirmation before anything is billed, and request bodies
shown before they are sent."""

from __future__ import annotations

import json
import os
from typing import Any

from nbhelpers import catalog, checks, plans, prices, redaction, request_rules, sizing
from nbhelpers.catalog import ModelSpec
from nbhelpers.errors import ConfigError, choices
from nbhelpers.hardware import Hardware

# The notebook that deploys each family, named where 03 finds nothing deployed.
DEPLOY_NOTEBOOKS = {"llama3.1": "01_deploy_llama31_text",
                    "llama3.2": "02_deploy_llama32_multimodal"}
# Confirms every deploy of a process that cannot pass CONFIRM_DEPLOY as a parameter (nbval runs
# the notebooks as they are saved; the browser tests click "Run all"): set by the command that
# starts it, explicitly, as the runner passes the parameter.
CONFIRM_VARIABLE = "NBHELPERS_CONFIRM_DEPLOY"
LONG_TEXT = 120  # characters of a long string (an image's data URL) shown in a request body


class NotConfirmed(ConfigError):
    """A deploy cell ran without CONFIRM_DEPLOY: nothing was created, and "Run all" stops."""


def model_picker(default: str, *, family: str | None = None, modality: str | None = None,
                 instruct_only: bool = False) -> Any:
    """A Dropdown of the catalog's models; an unknown default raises a ConfigError that lists the
    valid choices. Read `.value` in the next cell: changing the choice needs that cell re-run."""
    import ipywidgets

    options = [m.name for m in catalog.models(family, modality, instruct_only)]
    checks.text("default", default)
    try:
        chosen = catalog.get_model(default, family, instruct_only=instruct_only)
    except ConfigError as err:
        raise ConfigError(f"default: {err}") from None
    if chosen.name not in options:
        raise ConfigError(f"default {chosen.name!r} is not among the models picked here; choose "
                          f"one of {choices(options)}")
    return ipywidgets.Dropdown(
        options=options, value=chosen.name, description="Model",
        style={"description_width": "initial"}, layout=ipywidgets.Layout(width="max-content"),
    )


def machine_label(model: ModelSpec, machine: str) -> str:
    """How the machine picker names a choice: GPUs, hourly price, and whether the tutorial
    uses it for this model."""
    price = prices.estimate(machine)
    cost = f"about ${price.usd_per_hour:,.2f}/hour" if price.known else "no price known"
    tutorial = [model.hardware.machine_type, *(h.machine_type for h in model.alternatives)]
    said = " (the tutorial's)" if machine in tutorial else ""
    return f"{Hardware.for_machine(machine).describe()}, {cost}{said}"


def machine_options(model: str | ModelSpec) -> list[tuple[str, str]]:
    """(label, machine type) of each machine the picker offers for `model`, the tutorial's
    first (sizing.machine_choices: where the memory plan predicts it starts)."""
    spec = model if isinstance(model, ModelSpec) else catalog.get_model(model)
    return [(machine_label(spec, m), m) for m in sizing.machine_choices(spec)]


def check_machine(model: str | ModelSpec, machine_type: str) -> str:
    """`machine_type` when the picker offers it for `model`; '' is the tutorial's machine. Any
    other value is refused, naming the valid choices."""
    spec = model if isinstance(model, ModelSpec) else catalog.get_model(model)
    checks.text("MACHINE_TYPE", machine_type, empty_ok=True)
    valid = sizing.machine_choices(spec)
    if not machine_type:
        return valid[0]
    if machine_type not in valid:
        raise ConfigError(f"MACHINE_TYPE {machine_type!r} is not a choice for {spec.name}: the "
                          "memory plan predicts vLLM does not start there with the catalog's "
                          f"settings, or it is no machine type; choose one of {choices(valid)}")
    return machine_type


def machine_picker(model_picker: Any, default: str = "") -> Any:
    """A Dropdown of the machine types for the model `model_picker` shows, starting at `default`
    ('' : the tutorial's). Picking another model replaces the choices, and keeps the machine
    when it is a choice for the new model too, else takes that model's tutorial machine: a
    machine on which the model would not start cannot be picked."""
    import ipywidgets

    first = check_machine(model_picker.value, default)
    picker = ipywidgets.Dropdown(
        options=machine_options(model_picker.value), value=first, description="Machine type",
        style={"description_width": "initial"}, layout=ipywidgets.Layout(width="max-content"),
    )

    def follow(change: dict[str, Any]) -> None:
        kept = picker.value
        options = machine_options(change["new"])
        picker.options = options
        picker.value = kept if kept in [value for _, value in options] else options[0][1]

    model_picker.observe(follow, names="value")
    return picker


def confirm_deploy(plan: plans.DeploymentPlan, confirmed: Any, *,
                   parameter: str = "CONFIRM_DEPLOY") -> None:
    """Returns when `confirmed` is True; otherwise raises NotConfirmed, saying what deploying
    would create and cost and how to confirm, so that "Run all" stops before anything billed
    exists. Batch runs (the runner, papermill tests) pass the parameter explicitly; runs that
    cannot (nbval) set CONFIRM_VARIABLE=1."""
    checks.flag(parameter, confirmed)
    if confirmed:
        return
    if os.environ.get(CONFIRM_VARIABLE) == "1":
        print(f"{parameter} is False, but {CONFIRM_VARIABLE}=1 in this process's environment "
              "confirms the deploy.")
        return
    raise NotConfirmed(
        f"Nothing was created. Deploying {plan.model.name} on {plan.hardware.describe()} "
        f"({plan.scaling.describe()}) costs {plan.price.headline()}, billed until 05_cleanup "
        f"deletes it. To deploy, set {parameter} = True in the parameters cell (tick it in "
        "Colab's form), run that cell, then run this cell again.")


def require_deploy_if_missing(model: str | ModelSpec, deploy_if_missing: Any, *, run_id: str,
                              requests: request_rules.Requests | None = None) -> None:
    """Where notebook 03 found no live deployment of `model` in the run: returns when
    `deploy_if_missing` is True, else refuses, naming the notebook that deploys the model.
    `requests` are checked against the model's catalog settings first, so a bad parameter is
    named before the missing deployment."""
    spec = model if isinstance(model, ModelSpec) else catalog.get_model(model)
    checks.flag("DEPLOY_IF_MISSING", deploy_if_missing)
    if requests is not None:
        requests.check(spec, max_model_len=spec.max_model_len, dedicated=True)  # as 03 deploys
    if deploy_if_missing:
        return
    raise ConfigError(
        f"run {run_id} has no live deployment of {spec.name}, and DEPLOY_IF_MISSING is False, "
        f"so nothing is deployed here. Run {DEPLOY_NOTEBOOKS[spec.family]} with MODEL = "
        f"{spec.name!r} in the same run first (RUN_ID {run_id!r}), or set ENDPOINT_ID to an "
        "endpoint that serves it, or set DEPLOY_IF_MISSING = True and CONFIRM_DEPLOY = True to "
        "deploy it from this notebook on a dedicated endpoint (billed until 05_cleanup).")


def error_box(default: str = "") -> Any:
    """A Textarea for error text of many lines (a traceback, a log excerpt), starting at
    `default`: Colab's string form takes one line. Read `.value` in the next cell."""
    import ipywidgets

    checks.text("ERROR_TEXT", default, empty_ok=True)
    return ipywidgets.Textarea(
        value=default, rows=8, description="Error text",
        placeholder="Paste the error here (any number of lines), then run the next cell",
        style={"description_width": "initial"}, layout=ipywidgets.Layout(width="95%"))


def _shortened(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shortened(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shortened(item) for item in value]
    if isinstance(value, str) and len(value) > LONG_TEXT and value.startswith("data:"):
        return f"{value[:60]}...({len(value):,} characters)"
    return value


def show_request(body: dict[str, Any]) -> str:
    """A request body as JSON, as it will be sent, with image data URLs shortened and any
    secret this process has read hidden."""
    if not isinstance(body, dict):
        raise ConfigError(f"body must be a request body (a dict), got {type(body).__name__}")
    return redaction.redact(json.dumps(_shortened(body), indent=2, ensure_ascii=False))
