"""Messages and their versions.

A message's ``content`` is the text the prompt uses; ``visible`` is the text
shown (it may differ, e.g. after an extension rewrote it). Every message has
at least one version; ``messages`` mirrors the selected one so prompt building
never needs the versions table.
"""
from __future__ import annotations

import sqlite3

from modules.core.errors import CorralError
from modules.core.store.base import NotFoundError, StoreBase, now
from modules.core.store.chats import ChatsMixin

ROLES = ("system", "user", "assistant")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise CorralError(f"Unknown message role {role!r}: use one of {', '.join(ROLES)}.")
    return role


def check_text(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise CorralError(f"The message {what} must be text, not {type(text).__name__}.")
    return text


class MessagesMixin(ChatsMixin):
    @staticmethod
    def _next_position(conn: sqlite3.Connection, chat_id: int) -> int:
        row = conn.execute("SELECT MAX(position) FROM messages WHERE chat_id = ?", (chat_id,)).fetchone()
        return 0 if row[0] is None else row[0] + 1

    @staticmethod
    def _insert_version(
        conn: sqlite3.Connection, message_id: int, index: int, content: str, visible: str, model: str | None
    ) -> None:
        conn.execute(
            "INSERT INTO message_versions (message_id, idx, content, visible, model, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (message_id, index, content, visible, model, now()),
        )

    def _insert_message(
        self, conn: sqlite3.Connection, chat_id: int, role: str, content: str,
        visible: str | None, model: str | None,
    ) -> int:
        content = check_text(content, "content")
        visible = content if visible is None else check_text(visible, "visible text")
        message_id = conn.execute(
            "INSERT INTO messages (chat_id, position, role, content, visible, model, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (chat_id, self._next_position(conn, chat_id), check_role(role), content, visible, model, now()),
        ).lastrowid
        self._insert_version(conn, message_id, 0, content, visible, model)
        return message_id

    def add_message(
        self, user: str, chat_id: int, role: str, content: str,
        visible: str | None = None, model: str | None = None,
    ) -> int:
        """Appends a message to the chat; ``visible`` defaults to ``content``."""
        user_id = self.ensure_user(user)
        with self._write() as conn:
            self._owned_chat(conn, user_id, chat_id)
            message_id = self._insert_message(conn, chat_id, role, content, visible, model)
            self._touch_chat(conn, chat_id)
            return message_id

    def update_message(
        self, user: str, message_id: int, content: str | None = None, visible: str | None = None
    ) -> None:
        """Rewrites the selected version's text; ``None`` leaves that field as it is.

        Called repeatedly while a reply streams, so a stopped reply is kept as
        far as it got.
        """
        user_id = self.ensure_user(user)
        with self._write() as conn:
            message = self._owned_message(conn, user_id, message_id)
            content = message["content"] if content is None else check_text(content, "content")
            visible = message["visible"] if visible is None else check_text(visible, "visible text")
            conn.execute(
                "UPDATE messages SET content = ?, visible = ? WHERE id = ?", (content, visible, message_id)
            )
            conn.execute(
                "UPDATE message_versions SET content = ?, visible = ? WHERE message_id = ? AND idx = ?",
                (content, visible, message_id, message["selected_version"]),
            )
            self._touch_chat(conn, message["chat_id"])

    def add_version(
        self, user: str, message_id: int, content: str, visible: str | None = None, model: str | None = None
    ) -> int:
        """Adds a version (a regenerated reply) and selects it; returns its index."""
        content = check_text(content, "content")
        visible = content if visible is None else check_text(visible, "visible text")
        user_id = self.ensure_user(user)
        with self._write() as conn:
            message = self._owned_message(conn, user_id, message_id)
            index = conn.execute(
                "SELECT COUNT(*) FROM message_versions WHERE message_id = ?", (message_id,)
            ).fetchone()[0]
            self._insert_version(conn, message_id, index, content, visible, model)
            self._show_version(conn, message_id, index)
            self._touch_chat(conn, message["chat_id"])
            return index

    def select_version(self, user: str, message_id: int, index: int) -> None:
        """Makes version ``index`` (0-based) the one shown and used in prompts."""
        user_id = self.ensure_user(user)
        with self._write() as conn:
            message = self._owned_message(conn, user_id, message_id)
            self._show_version(conn, message_id, index)
            self._touch_chat(conn, message["chat_id"])

    @staticmethod
    def _show_version(conn: sqlite3.Connection, message_id: int, index: int) -> None:
        version = conn.execute(
            "SELECT content, visible, model FROM message_versions WHERE message_id = ? AND idx = ?",
            (message_id, index),
        ).fetchone()
        if version is None:
            raise NotFoundError(f"Message {message_id} has no version {index + 1}. Reload the chat.")
        conn.execute(
            "UPDATE messages SET content = ?, visible = ?, model = ?, selected_version = ? WHERE id = ?",
            (version["content"], version["visible"], version["model"], index, message_id),
        )

    def truncate_after(self, user: str, chat_id: int, message_id: int | None) -> int:
        """Deletes every message after ``message_id`` (all of them if ``None``); returns how many.

        Used for "edit a message and regenerate from there" and "remove last".
        """
        user_id = self.ensure_user(user)
        with self._write() as conn:
            self._owned_chat(conn, user_id, chat_id)
            position = -1
            if message_id is not None:
                position = self._message_in_chat(conn, user_id, chat_id, message_id)["position"]
            deleted = conn.execute(
                "DELETE FROM messages WHERE chat_id = ? AND position > ?", (chat_id, position)
            ).rowcount
            self._touch_chat(conn, chat_id)
            return deleted

    def delete_message(self, user: str, message_id: int) -> None:
        """Deletes one message; the ones after it move up a place."""
        user_id = self.ensure_user(user)
        with self._write() as conn:
            message = self._owned_message(conn, user_id, message_id)
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            conn.execute(
                "UPDATE messages SET position = position - 1 WHERE chat_id = ? AND position > ?",
                (message["chat_id"], message["position"]),
            )
            self._touch_chat(conn, message["chat_id"])
