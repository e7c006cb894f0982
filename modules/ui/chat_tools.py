"""The chat column's quick events: Stop, Remove last, picking a message, paging its versions, Branch.

None of them generates. Those that change the chat are refused while this
tab's reply is still streaming, so the screen and the store never disagree.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from modules.core.conversation import Conversation
from modules.core.errors import CorralError
from modules.ui.auth import user_of
from modules.ui.chat_events import message_index, needs_chat
from modules.ui.chat_render import pager_target, shown_messages
from modules.ui.chat_view import BUSY, frame, outputs, view

Action = Callable[[Any, Conversation, dict], dict]  # (ui, the user's conversation, inputs) -> output values


def guarded(ui: Any, action: Action, mid_reply: bool = False) -> Callable:
    """``action`` for the signed-in user, refused while a reply streams unless ``mid_reply``;
    errors become a warning and a status line."""
    def handler(data: dict, request: gr.Request):
        conv = Conversation(ui.ctx, user_of(request))
        try:
            if not mid_reply and ui.cancels.running(request.session_hash):
                raise CorralError(BUSY)
            return frame(**action(ui, conv, data))
        except CorralError as err:
            gr.Warning(str(err))
            return frame(stats=f"⚠️ {err}")
    return handler


def remove_last(ui: Any, conv: Conversation, data: dict) -> dict:
    """Drop the last reply and its question; the question goes back into the message box."""
    c = ui.components
    chat_id = needs_chat(data[c["chat_id"]], "remove")
    text = conv.remove_last(chat_id)
    return {**view(conv, chat_id, None, data[c["search"]]), "message": text or gr.skip(), "stats": ""}


def page(step: int) -> Action:
    """Show the previous (-1) or next (+1) version of the picked message (else the last one)."""
    def action(ui: Any, conv: Conversation, data: dict) -> dict:
        c = ui.components
        chat_id, selected = needs_chat(data[c["chat_id"]], "page"), data[c["selected"]]
        messages = conv.messages(chat_id)
        target = pager_target(messages, selected)
        if target is None:
            raise CorralError("This chat has no messages yet.")
        message = shown_messages(messages)[target]
        index = message["selected_version"] + step
        if 0 <= index < len(message["versions"]):
            conv.store.select_version(conv.user, message["id"], index)
        return view(conv, chat_id, selected, data[c["search"]])
    return action


def branch(ui: Any, conv: Conversation, data: dict) -> dict:
    """A new chat with the messages up to the picked one (else the whole chat)."""
    c = ui.components
    chat_id = needs_chat(data[c["chat_id"]], "branch")
    messages = conv.messages(chat_id)
    target = pager_target(messages, data[c["selected"]])
    if target is None:
        raise CorralError("This chat has no messages to branch from yet.")
    new_id = conv.store.branch_chat(conv.user, chat_id, shown_messages(messages)[target]["id"])
    return {**view(conv, new_id, None, data[c["search"]], opening=True), "stats": "Branched into a new chat."}


def _select(ui: Any) -> Callable:
    """Clicking a message picks it for the pager and Branch."""
    c = ui.components

    def select(data: dict, evt: gr.SelectData, request: gr.Request):
        conv, chat_id = Conversation(ui.ctx, user_of(request)), data[c["chat_id"]]
        if chat_id is None or ui.cancels.running(request.session_hash):
            return frame()
        values = view(conv, chat_id, message_index(evt.index), data[c["search"]])
        return frame(**{k: v for k, v in values.items() if k.startswith("version_") or k == "selected"})
    return select


def wire(ui: Any) -> None:
    c = ui.components
    inputs = {c["message"], c["chat_id"], c["selected"], c["search"], *ui.controls.values()}
    outs, quick = outputs(ui), {"show_progress": "hidden"}

    def stop(request: gr.Request) -> None:
        ui.cancels.cancel(request.session_hash)

    c["remove_last"].click(guarded(ui, remove_last), inputs, outs, api_name="chat_remove_last", **quick)
    c["version_prev"].click(guarded(ui, page(-1)), inputs, outs, api_name="chat_version_prev", **quick)
    c["version_next"].click(guarded(ui, page(+1)), inputs, outs, api_name="chat_version_next", **quick)
    c["branch"].click(guarded(ui, branch), inputs, outs, api_name="chat_branch", **quick)
    c["chatbot"].select(_select(ui), inputs, outs, api_name="chat_select", **quick)
    c["stop"].click(stop, None, None, queue=False, api_name="chat_stop")
