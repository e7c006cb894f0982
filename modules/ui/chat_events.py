"""The chat column's streaming turns: send, regenerate, continue, impersonate, edit.

Thin: each handler asks :class:`modules.core.conversation.Conversation` to do
the turn (which stores it as it happens) and turns its progress into frames.
The user comes from the request (sign-in), the open chat from per-browser
``gr.State``, and Stop from the per-session cancel registry, so two browsers
never share a reply.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import gradio as gr

from modules.core.conversation import Conversation, Progress, TurnSetup
from modules.core.errors import CorralError
from modules.ui.auth import user_of
from modules.ui.chat_render import chatbot_value, shown_messages
from modules.ui.chat_view import BUSY, frame, outputs, turn_setup, view

# (conversation, chat id, setup, cancel) -> (chat id, messages shown above the reply, the reply's progress)
Starter = Callable[[Conversation, "int | None", TurnSetup, threading.Event], tuple[int | None, list, Iterator[Progress]]]


def stats_text(progress: Progress) -> str:
    """Speed, length and context use under the reply; 'writing…' while it streams."""
    line = progress.stats.line() if progress.stats and progress.stats.completion_tokens else ""
    if not progress.done:
        line = f"writing… {line}".strip()
    return "\n\n".join([line, *(f"⚠️ {w}" for w in dict.fromkeys(progress.warnings))])


def run_reply(ui: Any, data: dict, request: gr.Request, starter: Starter, into_message: bool = False,
              on_error: Callable[[Conversation, "int | None"], dict] | None = None) -> Iterator[tuple]:
    """Stream one reply into the Chatbot (or the message box), then redraw the stored chat.

    ``on_error`` tidies up after a failed turn and returns extra output values.
    """
    c, session = ui.components, request.session_hash
    cancel = ui.cancels.begin(session)
    if cancel is None:
        gr.Warning(BUSY)
        yield frame()
        return
    conv, chat_id = None, data[c["chat_id"]]
    try:
        conv = Conversation(ui.ctx, user_of(request))
        setup, _ = turn_setup(ui, conv.user, data)
        chat_id, base, steps = starter(conv, chat_id, setup, cancel)
        last = None
        with closing(steps):
            for last in steps:
                if into_message:
                    yield frame(message=last.text, stats=stats_text(last))
                else:
                    yield frame(chatbot=[*base, {"role": "assistant", "content": last.text}],
                                stats=stats_text(last), chat_id=chat_id)
        done = view(conv, chat_id, None, data[c["search"]]) if chat_id is not None else {}
        yield frame(**done, stats=stats_text(last) if last else "")
    except CorralError as err:
        gr.Warning(str(err))
        extra = on_error(conv, chat_id) if on_error and conv else {}
        chat_id = extra.pop("chat_id", chat_id)
        done = view(conv, chat_id, None, data[c["search"]]) if conv else {}
        yield frame(**{**done, **extra, "stats": f"⚠️ {err}"})
    finally:
        ui.cancels.end(session, cancel)


def _shown(conv: Conversation, chat_id: int | None) -> list[dict]:
    return chatbot_value(conv.messages(chat_id)) if chat_id is not None else []


def needs_chat(chat_id: int | None, what: str) -> int:
    if chat_id is None:
        raise CorralError(f"There is nothing to {what} yet: send a message first.")
    return chat_id


def _send(ui: Any) -> Callable:
    c = ui.components

    def send(data: dict, request: gr.Request):
        text = data[c["message"]] or ""
        if not text.strip() or ui.cancels.running(request.session_hash):
            if text.strip():
                gr.Warning(BUSY)
            yield frame()
            return
        created: list[int] = []

        def starter(conv, chat_id, setup, cancel):
            if chat_id is None:
                chat_id = conv.new_chat(setup.settings, setup.character_name)
                created.append(chat_id)
            base = [*_shown(conv, chat_id), {"role": "user", "content": text}]
            return chat_id, base, conv.send(chat_id, text, setup, cancel)

        def on_error(conv: Conversation, chat_id: int | None) -> dict:
            """Nothing stored: drop the chat made for this message and give the text back to edit."""
            messages = conv.messages(chat_id) if chat_id is not None else []
            if chat_id in created and not any(m["role"] == "user" for m in messages):
                conv.store.delete_chat(conv.user, chat_id)
                return {"chat_id": None, "message": text}
            stored = [m["visible"] for m in messages if m["role"] == "user"]
            return {} if stored and stored[-1] == text else {"message": text}

        shown = _shown(Conversation(ui.ctx, user_of(request)), data[c["chat_id"]])
        yield frame(message="", chatbot=[*shown, {"role": "user", "content": text}], stats="writing…")
        yield from run_reply(ui, data, request, starter, on_error=on_error)
    return send


def _regenerate(ui: Any) -> Callable:
    def regenerate(data: dict, request: gr.Request):
        def starter(conv, chat_id, setup, cancel):
            shown = _shown(conv, needs_chat(chat_id, "regenerate"))
            base = shown[:-1] if shown and shown[-1]["role"] == "assistant" else shown
            return chat_id, base, conv.regenerate(chat_id, setup, cancel)
        yield from run_reply(ui, data, request, starter)
    return regenerate


def _continue(ui: Any) -> Callable:
    def continue_reply(data: dict, request: gr.Request):
        def starter(conv, chat_id, setup, cancel):
            shown = _shown(conv, needs_chat(chat_id, "continue"))
            return chat_id, shown[:-1], conv.continue_reply(chat_id, setup, cancel)
        yield from run_reply(ui, data, request, starter)
    return continue_reply


def _impersonate(ui: Any) -> Callable:
    def impersonate(data: dict, request: gr.Request):
        def starter(conv, chat_id, setup, cancel):
            return chat_id, [], conv.impersonate(chat_id, data[ui.components["message"]] or "", setup, cancel)
        yield from run_reply(ui, data, request, starter, into_message=True)
    return impersonate


def _edit(ui: Any) -> Callable:
    """The Chatbot's pencil: save the new text; an edited question is answered again from there."""
    c = ui.components

    def edit(data: dict, evt: gr.EditData, request: gr.Request):
        conv, chat_id = Conversation(ui.ctx, user_of(request)), data[c["chat_id"]]
        try:
            if ui.cancels.running(request.session_hash):
                raise CorralError(BUSY)
            shown = shown_messages(conv.messages(needs_chat(chat_id, "edit")))
            if not 0 <= message_index(evt.index) < len(shown):
                raise CorralError("That message is no longer in this chat. Reload the page.")
            message, text = shown[message_index(evt.index)], _text_of(evt.value)
            conv.edit_message(message["id"], text)
        except CorralError as err:
            gr.Warning(str(err))
            yield frame(**view(conv, chat_id, None, data[c["search"]])) if chat_id is not None else frame()
            return
        if message["role"] != "user":
            yield frame(**view(conv, chat_id, None, data[c["search"]]), stats="Edited.")
            return

        def starter(conv, chat_id, setup, cancel):
            base = chatbot_value(conv.messages(chat_id))[:message_index(evt.index) + 1]
            return chat_id, base, conv.regenerate_from(chat_id, message["id"], setup, cancel)
        yield from run_reply(ui, data, request, starter)
    return edit


def wire(ui: Any) -> None:
    """The streaming turns; each has the same inputs (every control) and outputs (the whole column)."""
    c = ui.components
    inputs = {c["message"], c["chat_id"], c["selected"], c["search"], *ui.controls.values()}
    events = ((c["message"].submit, _send, "chat_send"), (c["send"].click, _send, None),
              (c["regenerate"].click, _regenerate, "chat_regenerate"), (c["continue"].click, _continue, "chat_continue"),
              (c["impersonate"].click, _impersonate, "chat_impersonate"), (c["chatbot"].edit, _edit, "chat_edit"))
    for trigger, make, name in events:
        trigger(make(ui), inputs, outputs(ui), api_name=name, api_visibility="public" if name else "private",
                show_progress="hidden")


def message_index(index: Any) -> int:
    """A Chatbot event's message index (an int, or [message, part] for some events)."""
    return int(index[0] if isinstance(index, (list, tuple)) else index)


def _text_of(value: Any) -> str:
    """Gradio may hand back a message's content as text or as [{"type": "text", "text": ...}]."""
    if isinstance(value, list):
        return "".join(part.get("text", "") for part in value if isinstance(part, dict))
    if isinstance(value, dict):
        return str(value.get("text", value.get("content", "")))
    return str(value)
