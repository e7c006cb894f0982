"""Events of the chat column: send, regenerate, continue, impersonate, remove last, edit, versions, stop.

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
from modules.ui.chat_render import chatbot_value, pager_target, shown_messages
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


def _needs_chat(chat_id: int | None, what: str) -> int:
    if chat_id is None:
        raise CorralError(f"There is nothing to {what} yet: send a message first.")
    return chat_id


def wire(ui: Any) -> None:
    c = ui.components
    inputs = {c["message"], c["chat_id"], c["selected"], c["search"], *ui.controls.values()}
    outs = outputs(ui)
    streaming = {"show_progress": "hidden"}

    def send(data: dict, request: gr.Request):
        text = data[c["message"]] or ""
        if not text.strip():
            yield frame()
            return

        created: list[int] = []

        def starter(conv, chat_id, setup, cancel):
            if chat_id is None:
                _, character = turn_setup(ui, conv.user, data)
                chat_id = conv.new_chat(setup.settings, character)
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

        if ui.cancels.running(request.session_hash):
            gr.Warning(BUSY)
            yield frame()
            return
        shown = _shown(Conversation(ui.ctx, user_of(request)), data[c["chat_id"]])
        yield frame(message="", chatbot=[*shown, {"role": "user", "content": text}], stats="writing…")
        yield from run_reply(ui, data, request, starter, on_error=on_error)

    def regenerate(data: dict, request: gr.Request):
        def starter(conv, chat_id, setup, cancel):
            shown = _shown(conv, _needs_chat(chat_id, "regenerate"))
            base = shown[:-1] if shown and shown[-1]["role"] == "assistant" else shown
            return chat_id, base, conv.regenerate(chat_id, setup, cancel)
        yield from run_reply(ui, data, request, starter)

    def continue_(data: dict, request: gr.Request):
        def starter(conv, chat_id, setup, cancel):
            shown = _shown(conv, _needs_chat(chat_id, "continue"))
            return chat_id, shown[:-1], conv.continue_reply(chat_id, setup, cancel)
        yield from run_reply(ui, data, request, starter)

    def impersonate(data: dict, request: gr.Request):
        def starter(conv, chat_id, setup, cancel):
            return chat_id, [], conv.impersonate(chat_id, data[c["message"]] or "", setup, cancel)
        yield from run_reply(ui, data, request, starter, into_message=True)

    def edit(data: dict, evt: gr.EditData, request: gr.Request):
        conv, chat_id = Conversation(ui.ctx, user_of(request)), data[c["chat_id"]]
        try:
            if ui.cancels.running(request.session_hash):
                raise CorralError(BUSY)
            shown = shown_messages(conv.messages(_needs_chat(chat_id, "edit")))
            message, text = shown[_index(evt.index)], _text_of(evt.value)
            conv.edit_message(message["id"], text)
        except (CorralError, IndexError) as err:
            gr.Warning(str(err) if isinstance(err, CorralError) else "That message is gone. Reload the chat.")
            yield frame(**view(conv, chat_id, None, data[c["search"]])) if chat_id is not None else frame()
            return
        if message["role"] != "user":
            yield frame(**view(conv, chat_id, None, data[c["search"]]), stats="Edited.")
            return

        def starter(conv, chat_id, setup, cancel):
            base = chatbot_value(conv.messages(chat_id))[:_index(evt.index) + 1]
            return chat_id, base, conv.regenerate_from(chat_id, message["id"], setup, cancel)
        yield from run_reply(ui, data, request, starter)

    for trigger, handler, name in ((c["message"].submit, send, "chat_send"), (c["send"].click, send, None),
                                   (c["regenerate"].click, regenerate, "chat_regenerate"),
                                   (c["continue"].click, continue_, "chat_continue"),
                                   (c["impersonate"].click, impersonate, "chat_impersonate"),
                                   (c["chatbot"].edit, edit, "chat_edit")):
        trigger(handler, inputs, outs, api_name=name, api_visibility="public" if name else "private", **streaming)
    _wire_small(ui, inputs, outs)


def _wire_small(ui: Any, inputs: set, outs: list) -> None:
    """Quick events: stop, remove last, select a message, page versions, branch."""
    c = ui.components

    def guarded(action: Callable[[Conversation, dict], dict]) -> Callable:
        def handler(data: dict, request: gr.Request):
            conv = Conversation(ui.ctx, user_of(request))
            try:
                if ui.cancels.running(request.session_hash):
                    raise CorralError(BUSY)
                return frame(**action(conv, data))
            except CorralError as err:
                gr.Warning(str(err))
                return frame(stats=f"⚠️ {err}")
        return handler

    def remove_last(conv: Conversation, data: dict) -> dict:
        chat_id = _needs_chat(data[c["chat_id"]], "remove")
        text = conv.remove_last(chat_id)
        return {**view(conv, chat_id, None, data[c["search"]]), "message": text or gr.skip(), "stats": ""}

    def page(step: int) -> Callable[[Conversation, dict], dict]:
        def action(conv: Conversation, data: dict) -> dict:
            chat_id, selected = _needs_chat(data[c["chat_id"]], "page"), data[c["selected"]]
            messages = conv.messages(chat_id)
            target = pager_target(messages, selected)
            message = shown_messages(messages)[target]
            index = message["selected_version"] + step
            if 0 <= index < len(message["versions"]):
                conv.store.select_version(conv.user, message["id"], index)
            return view(conv, chat_id, selected, data[c["search"]])
        return action

    def branch(conv: Conversation, data: dict) -> dict:
        chat_id = _needs_chat(data[c["chat_id"]], "branch")
        messages = conv.messages(chat_id)
        target = pager_target(messages, data[c["selected"]])
        new_id = conv.store.branch_chat(conv.user, chat_id, shown_messages(messages)[target]["id"])
        return {**view(conv, new_id, None, data[c["search"]], opening=True), "stats": "Branched into a new chat."}

    def select(data: dict, evt: gr.SelectData, request: gr.Request):
        conv, chat_id = Conversation(ui.ctx, user_of(request)), data[c["chat_id"]]
        if chat_id is None or ui.cancels.running(request.session_hash):
            return frame()
        values = view(conv, chat_id, _index(evt.index), data[c["search"]])
        return frame(**{k: v for k, v in values.items() if k.startswith("version_") or k == "selected"})

    def stop(request: gr.Request) -> None:
        ui.cancels.cancel(request.session_hash)

    quick = {"show_progress": "hidden"}
    c["remove_last"].click(guarded(remove_last), inputs, outs, api_name="chat_remove_last", **quick)
    c["version_prev"].click(guarded(page(-1)), inputs, outs, api_name="chat_version_prev", **quick)
    c["version_next"].click(guarded(page(+1)), inputs, outs, api_name="chat_version_next", **quick)
    c["branch"].click(guarded(branch), inputs, outs, api_name="chat_branch", **quick)
    c["chatbot"].select(select, inputs, outs, api_name="chat_select", **quick)
    c["stop"].click(stop, None, None, queue=False, api_name="chat_stop")


def _index(index: Any) -> int:
    """A Chatbot event's message index (an int, or [message, part] for some events)."""
    return int(index[0] if isinstance(index, (list, tuple)) else index)


def _text_of(value: Any) -> str:
    """Gradio may hand back a message's content as text or as [{"type": "text", "text": ...}]."""
    if isinstance(value, list):
        return "".join(part.get("text", "") for part in value if isinstance(part, dict))
    if isinstance(value, dict):
        return str(value.get("text", value.get("content", "")))
    return str(value)
