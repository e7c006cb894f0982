"""Past chats beside the chat column: list, search, new, open, rename, delete (confirmed), export, import.

On page load the user's most recent chat opens, so a reload (or a restart)
shows everything as it was. Switching chats is refused while this tab's reply
is still streaming, so a reply never lands in the wrong chat on screen.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from modules.core.conversation import Conversation
from modules.core.errors import CorralError
from modules.ui.chat_render import chat_choices, export_file_name
from modules.ui.chat_tools import guarded
from modules.ui.chat_view import outputs, turn_setup, view


def most_recent(conv: Conversation) -> int | None:
    chats = conv.store.list_chats(conv.user)
    return chats[0]["id"] if chats else None


def write_export(conv: Conversation, chat_id: int, kind: str) -> Path:
    """The chat as a file in a fresh temporary folder (Gradio serves it from there)."""
    chat = conv.store.get_chat(conv.user, chat_id)
    folder = Path(tempfile.mkdtemp(prefix="corral-export-"))
    if kind == "json":
        path = folder / export_file_name(chat["title"], ".json")
        path.write_text(json.dumps(conv.store.export_chat_json(conv.user, chat_id), ensure_ascii=False, indent=2),
                        encoding="utf-8")
    else:
        path = folder / export_file_name(chat["title"], ".md")
        path.write_text(conv.store.export_chat_markdown(conv.user, chat_id), encoding="utf-8")
    return path


def read_import(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CorralError(f"This chat file cannot be imported: it is not JSON ({err}).") from None


def _search(ui: Any, data: dict) -> str:
    return data[ui.components["search"]] or ""


def on_load(ui: Any, conv: Conversation, data: dict) -> dict:
    """A (re)loaded page opens the user's most recent chat."""
    return view(conv, most_recent(conv), None, _search(ui, data), opening=True)


def new_chat(ui: Any, conv: Conversation, data: dict) -> dict:
    """A fresh chat, stored at the first message; in a chat mode with a greeting, at once, greeting first."""
    setup, character = turn_setup(ui, conv.user, data)
    chat_id = None
    if setup.settings.mode != "instruct" and setup.settings.character.greeting.strip():
        chat_id = conv.new_chat(setup.settings, character)
    return view(conv, chat_id, None, _search(ui, data), opening=True)


def open_chat(ui: Any, conv: Conversation, data: dict) -> dict:
    chosen = data[ui.components["chat_list"]]
    return view(conv, int(chosen) if chosen is not None else None, None, _search(ui, data), opening=True)


def search(ui: Any, conv: Conversation, data: dict) -> dict:
    chats = conv.store.list_chats(conv.user, _search(ui, data) or None)
    return {"chat_list": gr.update(choices=chat_choices(chats), value=data[ui.components["chat_id"]])}


def rename(ui: Any, conv: Conversation, data: dict) -> dict:
    c = ui.components
    chat_id = _open(data[c["chat_id"]])
    conv.store.rename_chat(conv.user, chat_id, data[c["title"]] or "")
    return {**view(conv, chat_id, data[c["selected"]], _search(ui, data)), "stats": "Renamed."}


def ask_delete(ui: Any, conv: Conversation, data: dict) -> dict:
    _open(data[ui.components["chat_id"]])
    return {"confirm_box": gr.update(visible=True)}


def delete(ui: Any, conv: Conversation, data: dict) -> dict:
    conv.store.delete_chat(conv.user, _open(data[ui.components["chat_id"]]))
    return {**view(conv, most_recent(conv), None, _search(ui, data), opening=True), "stats": "Chat deleted."}


def export(kind: str) -> Callable[[Any, Conversation, dict], dict]:
    def action(ui: Any, conv: Conversation, data: dict) -> dict:
        path = write_export(conv, _open(data[ui.components["chat_id"]]), kind)
        return {"export_file": gr.update(value=str(path), visible=True)}
    return action


def import_chat(ui: Any, conv: Conversation, data: dict) -> dict:
    chat_id = conv.store.import_chat(conv.user, read_import(data[ui.components["import_chat"]]), None)
    return {**view(conv, chat_id, None, _search(ui, data), opening=True), "stats": "Imported."}


def wire(ui: Any) -> None:
    c = ui.components
    inputs = {c["chat_id"], c["selected"], c["search"], c["title"], *ui.controls.values()}
    outs, quick = outputs(ui), {"show_progress": "hidden"}
    if "app" in c:
        c["app"].load(guarded(ui, on_load, mid_reply=True), inputs, outs, api_name="chat_load", **quick)
        c["app"].load(who_is, None, c["who"], api_visibility="private", **quick)
    c["new_chat"].click(guarded(ui, new_chat), inputs, outs, api_name="chat_new", **quick)
    c["chatbot"].clear(guarded(ui, new_chat), inputs, outs, api_visibility="private", **quick)  # its trash icon
    c["chat_list"].input(guarded(ui, open_chat), {*inputs, c["chat_list"]}, outs, api_name="chat_open", **quick)
    c["search"].change(guarded(ui, search, mid_reply=True), inputs, outs, api_name="chat_search", **quick)
    c["rename"].click(guarded(ui, rename, mid_reply=True), inputs, outs, api_name="chat_rename", **quick)
    c["title"].submit(guarded(ui, rename, mid_reply=True), inputs, outs, api_visibility="private", **quick)
    c["delete"].click(guarded(ui, ask_delete), inputs, outs, api_visibility="private", **quick)
    c["delete_cancel"].click(lambda: gr.update(visible=False), None, c["confirm_box"], api_visibility="private")
    c["delete_confirm"].click(guarded(ui, delete), inputs, outs, api_name="chat_delete", **quick)
    for kind, name in (("json", "chat_export_json"), ("md", "chat_export_markdown")):
        c[f"export_{kind}"].click(guarded(ui, export(kind), mid_reply=True), inputs, outs, api_name=name, **quick)
    c["import_chat"].upload(guarded(ui, import_chat), {*inputs, c["import_chat"]}, outs, api_name="chat_import",
                            **quick)


def who_is(request: gr.Request) -> Any:
    """'Signed in as alice · Log out' when sign-in is on; nothing otherwise."""
    name = getattr(request, "username", None)
    return gr.update(value=f"Signed in as **{name}** · [Log out](/logout)", visible=True) if name else gr.update()


def _open(chat_id: int | None) -> int:
    if chat_id is None:
        raise CorralError("No chat is open yet: send a message first, or pick a chat from the list.")
    return chat_id
