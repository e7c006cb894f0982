"""Chat export (our JSON, Markdown) and import (our JSON, text-generation-webui chat logs).

Parsing is done by pure functions that turn a file's data into message specs
(role, versions, selected version); the mixin only writes the specs.
"""
from __future__ import annotations

import html
import sqlite3
import time
from typing import Any

from modules.core.errors import CorralError
from modules.core.store.chats import check_mode
from modules.core.store.documents import DocumentsMixin
from modules.core.store.messages import MessagesMixin, ROLES

EXPORT_FORMAT = "corral-chat"
EXPORT_VERSION = 1
WEBUI_GREETING_MARKER = "<|BEGIN-VISIBLE-CHAT|>"
IMPORTED_TITLE = "Imported chat"

MessageSpec = dict[str, Any]  # role, versions: [{content, visible, model}], selected_version


def chat_to_export(chat: dict[str, Any]) -> dict[str, Any]:
    """A chat from ``get_chat`` as our JSON export (ids left out: they mean nothing elsewhere)."""
    message_keys = ("role", "content", "visible", "model", "created_at", "selected_version", "versions")
    messages = [{key: message[key] for key in message_keys} for message in chat["messages"]]
    chat_keys = ("title", "mode", "character", "created_at", "updated_at")
    return {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        **{key: chat[key] for key in chat_keys}, "messages": messages,
    }


def chat_to_markdown(chat: dict[str, Any]) -> str:
    """The shown text of each message under a heading naming who wrote it."""
    speaker = {"system": "System", "user": "You", "assistant": chat["character"] or "Assistant"}
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat["updated_at"]))
    about = f"{chat['mode']} mode" + (f" with {chat['character']}" if chat["character"] else "")
    lines = [f"# {chat['title']}", "", f"*{about}, last changed {stamp}*", ""]
    for message in chat["messages"]:
        model = f" ({message['model']})" if message["model"] else ""
        lines += [f"### {speaker[message['role']]}{model}", "", message["visible"], ""]
    return "\n".join(lines)


def _fail(problem: str) -> CorralError:
    return CorralError(f"This chat file cannot be imported: {problem}")


def _version_from(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("content"), str):
        raise _fail(f"{where} has no text ('content' must be a string).")
    visible = raw.get("visible")
    model = raw.get("model")
    if visible is not None and not isinstance(visible, str):
        raise _fail(f"{where}: 'visible' must be a string.")
    if model is not None and not isinstance(model, str):
        raise _fail(f"{where}: 'model' must be a string.")
    content = raw["content"]
    return {"content": content, "visible": content if visible is None else visible, "model": model}


def _message_from_export(raw: Any, number: int) -> MessageSpec:
    where = f"message {number}"
    if not isinstance(raw, dict):
        raise _fail(f"{where} is not an object.")
    if raw.get("role") not in ROLES:
        raise _fail(f"{where} has role {raw.get('role')!r}; expected one of {', '.join(ROLES)}.")
    raw_versions = raw.get("versions") or [raw]
    if not isinstance(raw_versions, list):
        raise _fail(f"{where}: 'versions' must be a list.")
    versions = [_version_from(v, f"{where}, version {i + 1}") for i, v in enumerate(raw_versions)]
    selected = raw.get("selected_version", 0)
    if not isinstance(selected, int) or not 0 <= selected < len(versions):
        raise _fail(f"{where}: selected_version {selected!r} is not one of its {len(versions)} versions.")
    return {"role": raw["role"], "versions": versions, "selected_version": selected}


def messages_from_export(data: dict[str, Any]) -> list[MessageSpec]:
    """Message specs from our own JSON export."""
    version = data.get("version", EXPORT_VERSION)
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise _fail(f"its format version {version!r} is not one this Corral reads (up to {EXPORT_VERSION}).")
    if not isinstance(data.get("messages"), list):
        raise _fail("'messages' must be a list.")
    return [_message_from_export(raw, number) for number, raw in enumerate(data["messages"], start=1)]


def _webui_pairs(data: dict[str, Any], key: str) -> list[list[str]]:
    pairs = data.get(key)
    if not isinstance(pairs, list):
        raise _fail(f"'{key}' must be a list of [user text, bot text] pairs.")
    for number, pair in enumerate(pairs, start=1):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise _fail(f"'{key}' entry {number} is not a [user text, bot text] pair of strings.")
    return pairs


def _spec(role: str, content: str, visible: str) -> MessageSpec:
    version = {"content": content, "visible": visible, "model": None}
    return {"role": role, "versions": [version], "selected_version": 0}


def messages_from_webui(data: dict[str, Any]) -> list[MessageSpec]:
    """Message specs from a text-generation-webui chat log ``{"internal": [...], "visible": [...]}``.

    Each pair becomes a user and an assistant message (an empty side is
    skipped); a first pair whose user text is the greeting marker holds only
    the character's greeting. The web UI HTML-escapes its visible text, so it
    is unescaped here.
    """
    internal = _webui_pairs(data, "internal")
    visible = _webui_pairs(data, "visible") if "visible" in data else internal
    if len(visible) != len(internal):
        raise _fail(f"'internal' has {len(internal)} pairs but 'visible' has {len(visible)}.")
    specs = []
    for number, ((user_in, bot_in), (user_vis, bot_vis)) in enumerate(zip(internal, visible)):
        is_greeting = number == 0 and WEBUI_GREETING_MARKER in (user_in, user_vis)
        if (user_in or user_vis) and not is_greeting:
            specs.append(_spec("user", user_in, html.unescape(user_vis)))
        if bot_in or bot_vis:
            specs.append(_spec("assistant", bot_in, html.unescape(bot_vis)))
    return specs


class TransferMixin(MessagesMixin, DocumentsMixin):
    def export_chat_json(self, user: str, chat_id: int) -> dict[str, Any]:
        """The chat as a JSON-ready dict that ``import_chat`` reads back."""
        return chat_to_export(self.get_chat(user, chat_id))

    def export_chat_markdown(self, user: str, chat_id: int) -> str:
        return chat_to_markdown(self.get_chat(user, chat_id))

    def import_chat(
        self, user: str, data: dict[str, Any], title: str | None, character: str | None = None
    ) -> int:
        """A new chat from our export or a text-generation-webui log; returns its id.

        ``title`` (blank: the file's own title, else "Imported chat") names it.
        ``character`` overrides the file's; a web UI log (which names none)
        becomes a "chat" mode chat when one is given, else an "instruct" one.
        """
        if not isinstance(data, dict):
            raise _fail(f"expected a JSON object, got {type(data).__name__}.")
        if data.get("format") == EXPORT_FORMAT:
            specs = messages_from_export(data)
            mode, character = check_mode(data.get("mode", "instruct")), character or data.get("character")
        elif "internal" in data:
            specs = messages_from_webui(data)
            mode = "chat" if character else "instruct"
        else:
            raise _fail(
                f"it is neither a Corral export (\"format\": \"{EXPORT_FORMAT}\") nor a "
                "text-generation-webui chat log (keys \"internal\" and \"visible\")."
            )
        title = title if title and title.strip() else data.get("title") or IMPORTED_TITLE
        user_id = self.ensure_user(user)
        with self._write() as conn:
            chat_id = self._insert_chat(conn, user_id, str(title), mode, character)
            for spec in specs:
                self._insert_spec(conn, chat_id, spec)
            return chat_id

    def _insert_spec(self, conn: sqlite3.Connection, chat_id: int, spec: MessageSpec) -> None:
        first, *more = spec["versions"]
        message_id = self._insert_message(conn, chat_id, spec["role"], **first)
        for index, version in enumerate(more, start=1):
            self._insert_version(conn, message_id, index, **version)
        if spec["selected_version"]:
            self._show_version(conn, message_id, spec["selected_version"])
