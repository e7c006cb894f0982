"""Chats: create, list and search, rename, delete, read with messages, branch."""
from __future__ import annotations

import sqlite3
from typing import Any

from modules.core.errors import CorralError
from modules.core.paths import check_name
from modules.core.store.base import StoreBase, now

MODES = ("chat", "chat-instruct", "instruct")
DEFAULT_TITLE = "New chat"
_CHAT_COLUMNS = "id, title, updated_at, mode, character"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise CorralError(f"Unknown chat mode {mode!r}: use one of {', '.join(MODES)}.")
    return mode


def check_title(title: str) -> str:
    if not isinstance(title, str) or not title.strip():
        raise CorralError("A chat title cannot be empty. Type a title.")
    return title.strip()


def _versions_by_message(conn: sqlite3.Connection, chat_id: int) -> dict[int, list[dict[str, Any]]]:
    rows = conn.execute(
        "SELECT v.message_id, v.content, v.visible, v.model, v.created_at FROM message_versions v "
        "JOIN messages m ON m.id = v.message_id WHERE m.chat_id = ? ORDER BY v.message_id, v.idx",
        (chat_id,),
    )
    versions: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        version = dict(row)
        versions.setdefault(version.pop("message_id"), []).append(version)
    return versions


def read_messages(conn: sqlite3.Connection, chat_id: int) -> list[dict[str, Any]]:
    """The chat's messages in order, each with ``versions`` and ``selected_version``."""
    versions = _versions_by_message(conn, chat_id)
    rows = conn.execute(
        "SELECT id, chat_id, position, role, content, visible, model, created_at, selected_version "
        "FROM messages WHERE chat_id = ? ORDER BY position, id",
        (chat_id,),
    )
    return [{**dict(row), "versions": versions.get(row["id"], [])} for row in rows]


class ChatsMixin(StoreBase):
    def _insert_chat(
        self, conn: sqlite3.Connection, user_id: int, title: str, mode: str, character: str | None
    ) -> int:
        title = title.strip() if isinstance(title, str) and title.strip() else DEFAULT_TITLE
        character = check_name(character, "character") if character is not None else None
        stamp = now()
        cursor = conn.execute(
            "INSERT INTO chats (user_id, title, mode, character, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (user_id, title, check_mode(mode), character, stamp, stamp),
        )
        return cursor.lastrowid

    def create_chat(
        self, user: str, title: str, mode: str = "instruct", character: str | None = None
    ) -> int:
        """A new empty chat; a blank title becomes "New chat"."""
        user_id = self.ensure_user(user)
        with self._write() as conn:
            return self._insert_chat(conn, user_id, title, mode, character)

    def list_chats(self, user: str, search: str | None = None) -> list[dict[str, Any]]:
        """The user's chats, newest first; ``search`` matches title or message text, any case."""
        user_id = self.ensure_user(user)
        query = f"SELECT {_CHAT_COLUMNS} FROM chats c WHERE user_id = ?"
        params: list[Any] = [user_id]
        if search and search.strip():
            needle = search.strip().casefold()
            query += (
                " AND (instr(casefold(title), ?) > 0 OR EXISTS (SELECT 1 FROM messages m "
                "WHERE m.chat_id = c.id AND (instr(casefold(m.content), ?) > 0 "
                "OR instr(casefold(m.visible), ?) > 0)))"
            )
            params += [needle, needle, needle]
        with self._read() as conn:
            rows = conn.execute(query + " ORDER BY updated_at DESC, id DESC", params).fetchall()
        return [dict(row) for row in rows]

    def rename_chat(self, user: str, chat_id: int, title: str) -> None:
        title = check_title(title)
        user_id = self.ensure_user(user)
        with self._write() as conn:
            self._owned_chat(conn, user_id, chat_id)
            conn.execute("UPDATE chats SET title = ?, updated_at = ? WHERE id = ?", (title, now(), chat_id))

    def set_chat_mode(self, user: str, chat_id: int, mode: str, character: str | None) -> None:
        """Record the mode (and character) the chat is now used with, so reopening it restores them."""
        character = check_name(character, "character") if character is not None else None
        user_id = self.ensure_user(user)
        with self._write() as conn:
            self._owned_chat(conn, user_id, chat_id)
            conn.execute("UPDATE chats SET mode = ?, character = ? WHERE id = ?",
                         (check_mode(mode), character, chat_id))

    def delete_chat(self, user: str, chat_id: int) -> None:
        """Deletes the chat with its messages, versions and documents (foreign-key cascade)."""
        user_id = self.ensure_user(user)
        with self._write() as conn:
            self._owned_chat(conn, user_id, chat_id)
            conn.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    def get_chat(self, user: str, chat_id: int) -> dict[str, Any]:
        """The chat (id, title, mode, character, created_at, updated_at) and its ``messages``."""
        user_id = self.ensure_user(user)
        with self._read() as conn:
            chat = dict(self._owned_chat(conn, user_id, chat_id))
            chat.pop("user_id")
            chat["messages"] = read_messages(conn, chat_id)
        return chat

    def branch_chat(self, user: str, chat_id: int, upto_message_id: int) -> int:
        """A new chat holding this chat's messages up to and including ``upto_message_id``.

        Versions are copied with each message, and the chat's documents come
        along so a branch keeps the same retrieval context.
        """
        user_id = self.ensure_user(user)
        with self._write() as conn:
            chat = self._owned_chat(conn, user_id, chat_id)
            last = self._message_in_chat(conn, user_id, chat_id, upto_message_id)
            new_id = self._insert_chat(
                conn, user_id, f"{chat['title']} (branch)", chat["mode"], chat["character"]
            )
            for message_id in self._message_ids_upto(conn, chat_id, last["position"]):
                self._copy_message(conn, message_id, new_id)
            self._copy_documents(conn, chat_id, new_id)
            return new_id

    def _message_in_chat(
        self, conn: sqlite3.Connection, user_id: int, chat_id: int, message_id: int
    ) -> sqlite3.Row:
        message = self._owned_message(conn, user_id, message_id)
        if message["chat_id"] != chat_id:
            raise CorralError(f"Message {message_id} is not in chat {chat_id}. Reload the chat.")
        return message

    @staticmethod
    def _message_ids_upto(conn: sqlite3.Connection, chat_id: int, position: int) -> list[int]:
        rows = conn.execute(
            "SELECT id FROM messages WHERE chat_id = ? AND position <= ? ORDER BY position, id",
            (chat_id, position),
        )
        return [row["id"] for row in rows]

    @staticmethod
    def _copy_message(conn: sqlite3.Connection, message_id: int, to_chat: int) -> None:
        new_id = conn.execute(
            "INSERT INTO messages (chat_id, position, role, content, visible, model, created_at, "
            "selected_version) SELECT ?, position, role, content, visible, model, created_at, "
            "selected_version FROM messages WHERE id = ?",
            (to_chat, message_id),
        ).lastrowid
        conn.execute(
            "INSERT INTO message_versions (message_id, idx, content, visible, model, created_at) "
            "SELECT ?, idx, content, visible, model, created_at FROM message_versions "
            "WHERE message_id = ?",
            (new_id, message_id),
        )

    @staticmethod
    def _copy_documents(conn: sqlite3.Connection, from_chat: int, to_chat: int) -> None:
        documents = conn.execute(
            "SELECT id FROM documents WHERE chat_id = ? ORDER BY id", (from_chat,)
        ).fetchall()
        for document in documents:
            new_id = conn.execute(
                "INSERT INTO documents (user_id, chat_id, name, created_at) "
                "SELECT user_id, ?, name, created_at FROM documents WHERE id = ?",
                (to_chat, document["id"]),
            ).lastrowid
            conn.execute(
                "INSERT INTO chunks (document_id, position, text, embedding) "
                "SELECT ?, position, text, embedding FROM chunks WHERE document_id = ?",
                (new_id, document["id"]),
            )
