"""Interactive pickers whose default is the notebook parameter, so headless runs use it as is."""

from __future__ import annotations

from typing import Any

from nbhelpers import catalog, checks
from nbhelpers.errors import ConfigError, choices


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
