"""The Session tab: light / dark theme, and saving the settings the next start reads.

"Save settings" writes what the tabs show now (model and loader options, preset and sampler
values, instruction format, mode, profile, theme) to the settings file app.py reads.
"""
from __future__ import annotations

import json
from typing import Any

import gradio as gr

from modules.core.config import LoaderOptions
from modules.core.context import Context
from modules.core.errors import CorralError
from modules.core.sampling import SamplerParams
from modules.core.settings_file import merged_with_file, settings_snapshot, write_settings_file
from modules.ui import extensions_ui
from modules.ui.model_tab import OPTION_KEYS, options_from_values
from modules.ui.state import control_inputs, sampler_params, state_from_values

THEME_JS = "(dark) => { document.body.classList.toggle('dark', dark); }"


def settings_path(ctx: Context):
    return ctx.config.settings_path or (ctx.config.user_data_dir / "settings.yaml")


def save_settings(ctx: Context, state: dict[str, Any], model: str | None, loader_values: dict[str, Any],
                  dark: bool | None) -> str:
    """Write the settings file; returns the message for the user."""
    try:
        preset = ctx.presets.load(state["preset"]) if state.get("preset") else SamplerParams()
        loader = LoaderOptions().merged(options_from_values(loader_values))
        snapshot = settings_snapshot(model=model, loader=loader, params=sampler_params(state), preset_params=preset,
                                     chat=state, extra={"dark_theme": dark})
        path = settings_path(ctx)
        write_settings_file(path, merged_with_file(path, snapshot))
    except CorralError as err:
        return f"⚠️ {err}"
    return f"Saved {len(snapshot)} settings to `{path}`; the next start uses them."


def build(ui) -> None:
    ctx: Context = ui.ctx
    dark = ctx.config.settings.get("dark_theme")
    theme = gr.Checkbox(bool(dark), label="Dark theme", elem_id="dark-theme")
    save = gr.Button("Save settings", variant="primary", elem_id="settings-save")
    gr.Markdown(f"Saved to `{settings_path(ctx)}`. Flags given when starting the app override it.")
    status = gr.Markdown(elem_id="settings-status")
    with gr.Column() as extensions:
        extensions_ui.build_manager(ui)
    ui.components.update(dark_theme=theme, settings_save=save, settings_status=status,
                         session_extensions=extensions)


def wire(ui) -> None:
    ctx: Context = ui.ctx
    c = ui.components
    inputs = control_inputs(ui)
    loader_inputs = [c["loader_options"][k] for k in OPTION_KEYS] if "loader_options" in c else []
    model = c.get("model_dropdown") or gr.State(None)

    def save(theme: bool, model_name: str | None, *values: Any) -> str:
        loader_values = dict(zip(OPTION_KEYS, values[:len(loader_inputs)]))
        state = state_from_values(ui, values[len(loader_inputs):])
        return save_settings(ctx, state, model_name or ctx.models.loaded_name, loader_values, theme)

    c["dark_theme"].input(None, c["dark_theme"], None, js=THEME_JS)
    c["settings_save"].click(save, [c["dark_theme"], model, *loader_inputs, *inputs], c["settings_status"],
                             api_name="settings_save")
    dark = ctx.config.settings.get("dark_theme")
    if "app" in c and dark is not None:  # the saved theme wins over the browser's preference
        c["app"].load(None, None, None, js=f"() => {{ document.body.classList.toggle('dark', {json.dumps(bool(dark))}); }}")
