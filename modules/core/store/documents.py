"""Documents attached to a chat, stored as chunks with their embeddings (for retrieval).

The store keeps embeddings as opaque bytes; the retrieval extension decides
their encoding (e.g. float32 little-endian).
"""
from __future__ import annotations

from typing import Any

from modules.core.errors import CorralError
from modules.core.store.base import NotFoundError, now
from modules.core.store.chats import ChatsMixin


def check_chunks(name: str, chunks: list[tuple[str, bytes]]) -> list[tuple[str, bytes | None]]:
    checked = []
    for number, chunk in enumerate(chunks, start=1):
        if not (isinstance(chunk, (tuple, list)) and len(chunk) == 2 and isinstance(chunk[0], str)):
            raise CorralError(f"Document {name!r}: chunk {number} must be a (text, embedding bytes) pair.")
        text, embedding = chunk
        if embedding is not None and not isinstance(embedding, (bytes, bytearray, memoryview)):
            raise CorralError(f"Document {name!r}: the embedding of chunk {number} must be bytes.")
        checked.append((text, None if embedding is None else bytes(embedding)))
    return checked


class DocumentsMixin(ChatsMixin):
    def add_document(self, user: str, chat_id: int, name: str, chunks: list[tuple[str, bytes]]) -> int:
        """Stores a document's chunks, in order, for the chat; returns the document id."""
        if not isinstance(name, str) or not name.strip():
            raise CorralError("A document needs a name (usually its file name).")
        checked = check_chunks(name, chunks)
        user_id = self.ensure_user(user)
        with self._write() as conn:
            self._owned_chat(conn, user_id, chat_id)
            document_id = conn.execute(
                "INSERT INTO documents (user_id, chat_id, name, created_at) VALUES (?, ?, ?, ?)",
                (user_id, chat_id, name.strip(), now()),
            ).lastrowid
            rows = [(document_id, position, *chunk) for position, chunk in enumerate(checked)]
            conn.executemany(
                "INSERT INTO chunks (document_id, position, text, embedding) VALUES (?, ?, ?, ?)", rows
            )
            return document_id

    def list_documents(self, user: str, chat_id: int) -> list[dict[str, Any]]:
        """id, name, created_at and chunk count of each document in the chat, oldest first."""
        user_id = self.ensure_user(user)
        with self._read() as conn:
            self._owned_chat(conn, user_id, chat_id)
            rows = conn.execute(
                "SELECT d.id, d.name, d.created_at, COUNT(k.id) AS chunks FROM documents d "
                "LEFT JOIN chunks k ON k.document_id = d.id WHERE d.chat_id = ? "
                "GROUP BY d.id ORDER BY d.id",
                (chat_id,),
            ).fetchall()
        return [dict(row) for row in rows]

    def delete_document(self, user: str, document_id: int) -> None:
        user_id = self.ensure_user(user)
        with self._write() as conn:
            deleted = conn.execute(
                "DELETE FROM documents WHERE id = ? AND user_id = ?", (document_id, user_id)
            ).rowcount
        if not deleted:
            raise NotFoundError(f"Document {document_id} was not found, so nothing was deleted.")

    def chunks_for_chat(self, user: str, chat_id: int) -> list[tuple[str, bytes | None, str]]:
        """(text, embedding bytes, document name) for every chunk of the chat's documents."""
        user_id = self.ensure_user(user)
        with self._read() as conn:
            self._owned_chat(conn, user_id, chat_id)
            rows = conn.execute(
                "SELECT k.text, k.embedding, d.name FROM chunks k JOIN documents d ON d.id = k.document_id "
                "WHERE d.chat_id = ? ORDER BY d.id, k.position",
                (chat_id,),
            ).fetchall()
        return [(row["text"], row["embedding"], row["name"]) for row in rows]
