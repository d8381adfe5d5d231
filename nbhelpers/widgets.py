"""Interactive pickers whose default is the notebook parameter, so headless runs use it as is."""

from __future__ import annotations

from typing import Any

from nbhelpers import catalog


def model_picker(default: str, *, family: str | None = None, modality: str | None = None,
                 instruct_only: bool = False) -> Any:
    """A Dropdown of the catalog's models; an unknown default raises a ConfigError that lists the
    valid choices. Read `.value` in the next cell: changing the choice needs that cell re-run."""
    import ipywidgets

    chosen = catalog.get_model(default, family, instruct_only=instruct_only)
    options = [m.name for m in catalog.models(family, modality, instruct_only)]
    return ipywidgets.Dropdown(
        options=options, value=chosen.name, description="Model",
        style={"description_width": "initial"}, layout=ipywidgets.Layout(width="max-content"),
    )
