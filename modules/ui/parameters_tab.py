"""The Parameters tab: every sampler of the engine, presets (load / save / delete), and the prompt.

Each SamplerParams field gets a control registered in ``ui.controls`` under its own name,
so every event that takes ``control_inputs(ui)`` sees the current values. Choosing a
preset fills the controls (stop strings, logit bias and truncation length stay: presets
do not hold them). The instruction format, chat mode and "show the exact prompt" live
in :mod:`modules.ui.prompt_panel`, shown in this tab.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import gradio as gr

from modules.core.context import Context
from modules.core.errors import CorralError
from modules.core.presets import params_from_dict
from modules.core.sampling import SamplerParams
from modules.ui import prompt_panel
from modules.ui.state import SAMPLER_KEYS, control_inputs, sampler_params, state_from_values

log = logging.getLogger(__name__)

# name -> (component kind, its arguments). Ranges are generous: presets in the wild go past the usual.
SLIDER = "slider"
CONTROL_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "max_new_tokens": (SLIDER, dict(minimum=1, maximum=8192, step=1, label="max_new_tokens")),
    "temperature": (SLIDER, dict(minimum=0, maximum=5, step=0.01, label="temperature")),
    "top_p": (SLIDER, dict(minimum=0, maximum=1, step=0.01, label="top_p")),
    "top_k": (SLIDER, dict(minimum=0, maximum=200, step=1, label="top_k (0: off)")),
    "min_p": (SLIDER, dict(minimum=0, maximum=1, step=0.01, label="min_p")),
    "typical_p": (SLIDER, dict(minimum=0, maximum=1, step=0.01, label="typical_p")),
    "tfs": (SLIDER, dict(minimum=0, maximum=1, step=0.01, label="tfs")),
    "top_a": (SLIDER, dict(minimum=0, maximum=1, step=0.01, label="top_a")),
    "repetition_penalty": (SLIDER, dict(minimum=0.5, maximum=2, step=0.01, label="repetition_penalty")),
    "repetition_penalty_range": (SLIDER, dict(minimum=0, maximum=8192, step=1,
                                              label="repetition_penalty_range (0: whole context)")),
    "presence_penalty": (SLIDER, dict(minimum=-2, maximum=2, step=0.05, label="presence_penalty")),
    "frequency_penalty": (SLIDER, dict(minimum=-2, maximum=2, step=0.05, label="frequency_penalty")),
    "no_repeat_ngram_size": (SLIDER, dict(minimum=0, maximum=20, step=1, label="no_repeat_ngram_size")),
    "penalty_alpha": (SLIDER, dict(minimum=0, maximum=5, step=0.05, label="penalty_alpha (contrastive search)")),
    "mirostat_mode": (SLIDER, dict(minimum=0, maximum=2, step=1, label="mirostat_mode")),
    "mirostat_tau": (SLIDER, dict(minimum=0, maximum=10, step=0.01, label="mirostat_tau")),
    "mirostat_eta": (SLIDER, dict(minimum=0, maximum=1, step=0.01, label="mirostat_eta")),
    "xtc_threshold": (SLIDER, dict(minimum=0, maximum=0.5, step=0.01, label="xtc_threshold")),
    "xtc_probability": (SLIDER, dict(minimum=0, maximum=1, step=0.01, label="xtc_probability")),
    "dry_multiplier": (SLIDER, dict(minimum=0, maximum=5, step=0.01, label="dry_multiplier")),
    "do_sample": ("checkbox", dict(label="do_sample")),
    "ban_eos_token": ("checkbox", dict(label="ban_eos_token (never stop at end-of-text)")),
    "seed": ("number", dict(precision=0, label="seed (-1: random)")),
    "truncation_length": ("number", dict(precision=0, label="truncation_length (0: the model's context)")),
    "stop": ("textbox", dict(lines=2, label="Stop strings (one per line; \\n for a newline)")),
    "logit_bias": ("textbox", dict(lines=2, label="Logit bias (token_id: bias, one per line)")),
}
assert set(CONTROL_SPECS) == set(SAMPLER_KEYS), "every sampler needs a control"
NOT_IN_PRESETS = ("stop", "logit_bias", "truncation_length")  # PresetLibrary.save leaves them out


# --- values <-> controls --------------------------------------------------------------------------


def escape_text(text: str) -> str:
    """A stop string as one line of a textbox: backslash, newline and tab written as escapes."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def control_value(key: str, value: Any) -> Any:
    """A SamplerParams value as its control shows it."""
    if key == "stop":
        return "\n".join(escape_text(s) for s in value)
    if key == "logit_bias":
        return "\n".join(f"{token}: {bias}" for token, bias in value.items())
    return value


def initial_params(ctx: Context) -> SamplerParams:
    """The start-up preset, with the settings file's sampler values over it."""
    try:
        base = ctx.presets.load(ctx.config.preset)
    except CorralError as err:
        log.warning("%s Starting from neutral sampler values.", err)
        base = SamplerParams()
    saved = {k: v for k, v in ctx.config.settings.items() if k in SAMPLER_KEYS}
    if not saved:
        return base
    try:
        return params_from_dict({**asdict(base), **saved}, f"Settings file {ctx.config.settings_path}")
    except CorralError as err:
        log.warning("%s Using the preset's values.", err)
        return base


def preset_values(ctx: Context, name: str, current: dict[str, Any]) -> list[Any]:
    """The controls' values after loading preset ``name``; keys presets do not hold keep ``current``."""
    params = ctx.presets.load(name)
    return [current[k] if k in NOT_IN_PRESETS else control_value(k, getattr(params, k)) for k in SAMPLER_KEYS]


def save_preset(ctx: Context, name: str, state: dict[str, Any]) -> str:
    """Save the current sampler values as preset ``name``; returns the saved name."""
    path = ctx.presets.save(name, sampler_params(state))
    return path.stem


# --- layout ---------------------------------------------------------------------------------------


def _make_control(key: str, value: Any) -> Any:
    kind, kwargs = CONTROL_SPECS[key]
    makers = {SLIDER: gr.Slider, "checkbox": gr.Checkbox, "number": gr.Number, "textbox": gr.Textbox}
    return makers[kind](value=control_value(key, value), elem_id=f"param-{key.replace('_', '-')}", **kwargs)


def build(ui) -> None:
    ctx: Context = ui.ctx
    params = initial_params(ctx)
    preset_name = ctx.config.preset  # the --preset flag, else the settings file, else the default
    with gr.Row():
        preset = gr.Dropdown(ctx.presets.names(), value=preset_name if preset_name in ctx.presets.names() else None,
                             label="Preset", elem_id="preset", scale=3, allow_custom_value=True)
        preset_new = gr.Textbox(label="Save as", placeholder="preset name (blank: the chosen one)", scale=3)
        save = gr.Button("Save preset", scale=1, elem_id="preset-save")
        delete = gr.Button("Delete preset", variant="stop", scale=1, elem_id="preset-delete")
    preset_status = gr.Markdown(elem_id="preset-status")
    ui.controls["preset"] = preset
    with gr.Row():
        with gr.Column():
            for key in ("max_new_tokens", "truncation_length", "seed", "stop", "do_sample", "ban_eos_token"):
                ui.controls[key] = _make_control(key, getattr(params, key))
            prompt_panel.build(ui)
        with gr.Column():
            with gr.Accordion("Samplers", open=True):
                for key in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty",
                            "repetition_penalty_range", "presence_penalty", "frequency_penalty"):
                    ui.controls[key] = _make_control(key, getattr(params, key))
            with gr.Accordion("More samplers", open=False):
                for key in SAMPLER_KEYS:
                    if key not in ui.controls:
                        ui.controls[key] = _make_control(key, getattr(params, key))
    ui.components.update(preset_new=preset_new, preset_save=save, preset_delete=delete, preset_status=preset_status)


def wire(ui) -> None:
    ctx: Context = ui.ctx
    c = ui.components
    preset, preset_new, status = ui.controls["preset"], c["preset_new"], c["preset_status"]
    sampler_controls = [ui.controls[k] for k in SAMPLER_KEYS]
    inputs = control_inputs(ui)

    def load_preset(name: str | None, *values: Any):
        if not name:
            return [gr.update()] * len(SAMPLER_KEYS) + [""]
        try:
            loaded = preset_values(ctx, name, dict(zip(SAMPLER_KEYS, values)))
        except CorralError as err:
            return [gr.update()] * len(SAMPLER_KEYS) + [f"⚠️ {err}"]
        return [*loaded, f"Loaded preset **{name}**."]

    def save(new_name: str, *values: Any):
        state = state_from_values(ui, values)
        name = (new_name or "").strip() or state.get("preset") or ""
        try:
            saved = save_preset(ctx, name, state)
        except CorralError as err:
            return gr.update(), gr.update(), f"⚠️ {err}"
        return gr.update(choices=ctx.presets.names(), value=saved), "", f"Saved preset **{saved}**."

    def delete(name: str | None):
        if not name:
            return gr.update(), "Choose a preset to delete."
        try:
            ctx.presets.delete(name)
        except CorralError as err:
            return gr.update(), f"⚠️ {err}"
        return gr.update(choices=ctx.presets.names(), value=None), f"Deleted preset **{name}**."

    preset.input(load_preset, [preset, *sampler_controls], [*sampler_controls, status], api_name="preset_load")
    c["preset_save"].click(save, [preset_new, *inputs], [preset, preset_new, status], api_name="preset_save")
    c["preset_delete"].click(delete, preset, [preset, status], api_name="preset_delete")
    prompt_panel.wire(ui)

