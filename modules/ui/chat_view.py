"""What every chat event hands back: one fixed list of outputs, and the view of a stored chat.

Every chat event (generation, paging, the chat list) has the same outputs,
so any of them can redraw the whole column; a value left out of a frame is
``gr.skip()`` and stays as it is on the page.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from modules.core.conversation import Conversation, TurnSetup, load_character
from modules.core.presets import params_from_dict
from modules.core.sampling import SamplerParams
from modules.ui.chat_render import chat_choices, chatbot_value, pager_label, pager_target
from modules.ui.state import SAMPLER_KEYS, chat_settings, sampler_params

OUTPUTS = ("chatbot", "message", "stats", "chat_id", "chat_list", "title", "version_prev", "version_label",
           "version_next", "selected", "mode", "character", "confirm_box", "export_file")
SETTING_OUTPUTS = ("mode", "character")  # other tabs' controls that follow the opened chat
BUSY = "A reply is still being written in this tab. Wait for it, or press Stop first."


def outputs(ui: Any) -> list[Any]:
    """The output components; "mode" and "character" are other tabs' controls, or stand-ins without them."""
    c = ui.components
    for key in SETTING_OUTPUTS:
        if f"{key}_output" not in c:
            c[f"{key}_output"] = ui.controls.get(key) or gr.State(None)
    return [c[f"{key}_output"] if key in SETTING_OUTPUTS else c[key] for key in OUTPUTS]


def frame(**values: Any) -> tuple:
    """One update of every output; keys left out are not touched."""
    unknown = set(values) - set(OUTPUTS)
    if unknown:
        raise KeyError(f"not chat outputs: {sorted(unknown)}")
    return tuple(values[key] if key in values else gr.skip() for key in OUTPUTS)


def view(conv: Conversation, chat_id: int | None, selected: int | None = None, search: str = "",
         opening: bool = False) -> dict[str, Any]:
    """The stored chat ``chat_id`` (None: a new, empty one) as output values.

    ``opening``: the chat was just opened, so the mode follows the chat and the
    delete confirmation and old export are put away.
    """
    chats = conv.store.list_chats(conv.user, search or None)
    values: dict[str, Any] = {"chat_id": chat_id, "selected": selected}
    if chat_id is None:
        values.update(chatbot=[], title="", chat_list=gr.update(choices=chat_choices(chats), value=None))
        values.update(_pager(None))
    else:
        chat = conv.store.get_chat(conv.user, chat_id)
        messages = chat["messages"]
        values.update(chatbot=chatbot_value(messages), title=chat["title"],
                      chat_list=gr.update(choices=chat_choices(chats), value=chat_id))
        values.update(_pager(pager_label(messages, pager_target(messages, selected))))
        if opening:
            values["mode"] = chat["mode"]
            if chat["character"]:
                values["character"] = chat["character"]
    if opening:
        values.update(stats="", confirm_box=gr.update(visible=False), export_file=gr.update(visible=False, value=None))
    return values


def _pager(label: str | None) -> dict[str, Any]:
    shown = label is not None
    return {"version_prev": gr.update(visible=shown), "version_next": gr.update(visible=shown),
            "version_label": gr.update(value=label or "", visible=shown)}


def control_state(ui: Any, data: dict) -> dict[str, Any]:
    """The settings of every registered control (any tab) from an event's input dict."""
    return {key: data[component] for key, component in ui.controls.items() if component in data}


def base_params(ui: Any, preset: str | None) -> SamplerParams:
    """The preset (the chosen one, else the configured one), with the settings file's sampler values over it."""
    ctx = ui.ctx
    params = ctx.presets.load(preset or ctx.config.preset)
    overrides = {k: v for k, v in ctx.config.settings.items() if k in SAMPLER_KEYS}
    if not overrides:
        return params
    merged = {**{k: getattr(params, k) for k in SAMPLER_KEYS}, **overrides}
    return params_from_dict(merged, f"Settings file {ctx.config.settings_path}")


def turn_setup(ui: Any, user: str, data: dict) -> tuple[TurnSetup, str | None]:
    """The TurnSetup for this request from the controls' values, and the character's name (chat modes)."""
    state = control_state(ui, data)
    params = sampler_params(state, base_params(ui, state.get("preset")))
    mode = state.get("mode") or "instruct"
    name = state.get("character") if mode != "instruct" else None
    name = name if isinstance(name, str) and name.strip() and name != "None" else None
    settings = chat_settings(state, load_character(ui.ctx, user, name))
    fmt = state.get("instruction_format") or ui.ctx.config.instruction_format
    return TurnSetup(settings, params, fmt or None, state.get("start_reply_with") or "", state, name), name
