"""The per-request settings dict: every tab's controls gathered into one ``state``.

Tabs register components in ``ui.controls`` under a settings key (a SamplerParams
field, or one of CHAT_KEYS). Events take ``control_inputs(ui)`` as inputs and turn
the values back into a dict with ``state_from_values``; extensions see that
dict as ``state`` (the convention their ``state_modifier`` expects).
"""
from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from modules.core.chat import Character, ChatSettings
from modules.core.errors import PresetError
from modules.core.presets import params_from_dict
from modules.core.sampling import SamplerParams

CHAT_KEYS = ("mode", "instruction_format", "system", "character", "user_name", "user_bio",
             "chat_instruct_command", "preset", "start_reply_with")
SAMPLER_KEYS = tuple(f.name for f in fields(SamplerParams))


def control_inputs(ui: Any) -> list[Any]:
    """The registered components, in a fixed order (the order of ``control_keys``)."""
    return [ui.controls[k] for k in control_keys(ui)]


def control_keys(ui: Any) -> list[str]:
    return sorted(ui.controls)


def state_from_values(ui: Any, values: tuple | list) -> dict[str, Any]:
    return dict(zip(control_keys(ui), values))


def sampler_params(state: dict[str, Any], base: SamplerParams | None = None) -> SamplerParams:
    """SamplerParams from the state; missing keys keep ``base`` (the loaded preset) values."""
    base = base or SamplerParams()
    values = {k: v for k, v in state.items() if k in SAMPLER_KEYS and v is not None}
    if isinstance(values.get("stop"), str):
        values["stop"] = [unescape_text(s) for s in values["stop"].splitlines() if s]
    if isinstance(values.get("logit_bias"), str):
        values["logit_bias"] = parse_logit_bias(values["logit_bias"])
    merged = {**{k: getattr(base, k) for k in SAMPLER_KEYS}, **values}
    return params_from_dict(merged, "The Parameters tab")


def chat_settings(state: dict[str, Any], character: Character | None = None) -> ChatSettings:
    settings = ChatSettings(mode=state.get("mode") or "instruct", system=state.get("system") or None,
                            user_name=state.get("user_name") or "You", user_bio=state.get("user_bio") or "")
    if state.get("chat_instruct_command"):
        settings.chat_instruct_command = state["chat_instruct_command"]
    if character is not None:
        settings.character = character
    return settings


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape_text(text: str) -> str:
    """``\\n``, ``\\t``, ``\\r`` and ``\\\\`` typed in a one-line box become the characters; other text is kept
    as typed (``unicode_escape`` would garble anything beyond ASCII)."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def parse_logit_bias(text: str) -> dict[int, float]:
    """``token_id: bias`` per line (or comma-separated) -> {id: bias}; a bad line is an error naming it."""
    out: dict[int, float] = {}
    for item in re.split(r"[\n,]+", text):
        if not item.strip():
            continue
        token, sep, bias = item.partition(":")
        try:
            if not sep:
                raise ValueError
            out[int(token.strip().strip('"'))] = float(bias)
        except ValueError:
            raise PresetError(f"Logit bias {item.strip()!r} is not 'token_id: bias' (e.g. 50256: -100).") from None
    return out
