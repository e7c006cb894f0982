"""Translating between Corral's data and the shapes the extension convention expects.

History: Corral keeps a list of ``{"role", "content", "visible"?}`` messages;
extensions expect ``{"internal": [[user, bot], ...], "visible": [[user, bot], ...]}``
(prompt text and shown text). State: one dict of every generation setting, with
the convention's aliases (``name1`` the user, ``name2`` the character,
``context`` the character's context) and ``interface`` (who asked: "chat",
"notebook" or "api").
"""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from modules.core.presets import params_from_dict
from modules.core.sampling import SamplerParams

SAMPLER_KEYS = tuple(f.name for f in fields(SamplerParams))


def history_to_pairs(history: list[dict]) -> dict[str, list[list[str]]]:
    """Messages -> ``{"internal": pairs, "visible": pairs}``; a reply without a question gets ''."""
    internal: list[list[str]] = []
    visible: list[list[str]] = []
    for message in history:
        role = message.get("role")
        if role not in ("user", "assistant"):
            continue
        content = str(message.get("content", ""))
        shown = str(message.get("visible", content) or content)
        if role == "user" or not internal or internal[-1][1] != "":
            internal.append(["", ""])
            visible.append(["", ""])
        slot = 0 if role == "user" else 1
        internal[-1][slot], visible[-1][slot] = content, shown
    return {"internal": internal, "visible": visible}


def pairs_to_history(pairs: dict[str, list[list[str]]]) -> list[dict]:
    """The inverse of :func:`history_to_pairs` (empty sides are left out)."""
    out: list[dict] = []
    shown_pairs = pairs.get("visible") or []
    for index, pair in enumerate(pairs.get("internal") or []):
        shown = shown_pairs[index] if index < len(shown_pairs) else pair
        for slot, role in ((0, "user"), (1, "assistant")):
            text = str(pair[slot]) if len(pair) > slot else ""
            if text:
                vis = str(shown[slot]) if len(shown) > slot and shown[slot] else text
                out.append({"role": role, "content": text, "visible": vis})
    return out


def default_state(params: SamplerParams, settings: Any = None, format_name: str | None = None,
                  interface: str = "chat") -> dict[str, Any]:
    """The state dict extensions see, built from the request's settings."""
    state: dict[str, Any] = asdict(params)
    state.update(instruction_format=format_name, interface=interface)
    if settings is not None:
        character = settings.character
        state.update(mode=settings.mode, system=settings.system, user_name=settings.user_name,
                     user_bio=settings.user_bio, chat_instruct_command=settings.chat_instruct_command,
                     character=character.name, name1=settings.user_name, name2=character.name,
                     context=character.context, greeting=character.greeting)
    return state


def params_after_state(params: SamplerParams, before: dict[str, Any], after: dict[str, Any]) -> SamplerParams:
    """``params`` with the sampler values a state_modifier changed; raises CorralError if one is invalid."""
    changed = {k: after[k] for k in SAMPLER_KEYS if k in after and after[k] != before.get(k)}
    if not changed:
        return params
    return params_from_dict({**params.non_neutral(), **changed}, "A value set by an extension's state_modifier")

