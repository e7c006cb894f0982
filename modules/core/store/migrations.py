"""Schema migrations: ``PRAGMA user_version`` says how many have been applied.

Each migration runs in its own transaction together with the version bump,
so a crash mid-migration leaves the previous version intact. To change the
schema, append a function; never edit one that has shipped.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable

from modules.core.errors import CorralError

Migration = Callable[[sqlite3.Connection], None]


def _run(conn: sqlite3.Connection, statements: str) -> None:
    # executescript() would commit the open transaction first; run statements one by one.
    for statement in statements.split(";"):
        if statement.strip():
            conn.execute(statement)


def create_initial_schema(conn: sqlite3.Connection) -> None:
    """Version 1: users, chats, messages, characters, settings, documents and chunks.

    Chats, messages and documents use AUTOINCREMENT so a deleted id is never
    handed out again: a late write from a stopped stream must not land in a
    newer message that took the old id.
    """
    _run(conn, """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL
        );
        CREATE TABLE chats (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            title TEXT NOT NULL,
            mode TEXT NOT NULL,
            character TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX chats_by_user ON chats (user_id, updated_at);
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            visible TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX messages_by_chat ON messages (chat_id, position);
        CREATE TABLE characters (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            name TEXT NOT NULL COLLATE NOCASE,
            greeting TEXT NOT NULL DEFAULT '',
            context TEXT NOT NULL DEFAULT '',
            picture BLOB,
            updated_at REAL NOT NULL,
            UNIQUE (user_id, name)
        );
        CREATE TABLE settings (
            user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            data TEXT NOT NULL
        );
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX documents_by_chat ON documents (chat_id);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            text TEXT NOT NULL,
            embedding BLOB
        );
        CREATE INDEX chunks_by_document ON chunks (document_id, position)
    """)


def add_message_versions(conn: sqlite3.Connection) -> None:
    """Version 2: which model wrote a message, and every version of it for regenerate.

    ``messages.content/visible/model`` mirror the selected version, so prompt
    building reads one table; existing messages become their own version 0.
    """
    _run(conn, """
        ALTER TABLE messages ADD COLUMN model TEXT;
        ALTER TABLE messages ADD COLUMN selected_version INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE message_versions (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            content TEXT NOT NULL,
            visible TEXT NOT NULL,
            model TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (message_id, idx)
        ) WITHOUT ROWID;
        INSERT INTO message_versions (message_id, idx, content, visible, model, created_at)
            SELECT id, 0, content, visible, NULL, created_at FROM messages
    """)


def add_arena(conn: sqlite3.Connection) -> None:
    """Version 3: arena battles (two anonymous sides answering the same prompts), their turns, and
    verdicts: one human vote per battle (``judge`` NULL) and one per judge model."""
    _run(conn, """
        CREATE TABLE arena_battles (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            model_a TEXT NOT NULL,
            model_b TEXT NOT NULL,
            question_id TEXT,
            category TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX arena_battles_by_user ON arena_battles (user_id, created_at);
        CREATE TABLE arena_turns (
            battle_id INTEGER NOT NULL REFERENCES arena_battles(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            prompt TEXT NOT NULL,
            answer_a TEXT NOT NULL,
            answer_b TEXT NOT NULL,
            PRIMARY KEY (battle_id, position)
        ) WITHOUT ROWID;
        CREATE TABLE arena_votes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            battle_id INTEGER NOT NULL REFERENCES arena_battles(id) ON DELETE CASCADE,
            judge TEXT,
            verdict TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie', 'both_bad', 'unparsed')),
            detail TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        );
        CREATE UNIQUE INDEX arena_votes_one_each ON arena_votes (battle_id, COALESCE(judge, ''))
    """)


MIGRATIONS: list[Migration] = [create_initial_schema, add_message_versions, add_arena]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def apply_migrations(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the database up to ``target``, one transaction per migration; returns the version.

    The version is re-read inside each write transaction, so two processes
    opening a new database at once do not both run the same migration.
    """
    if schema_version(conn) > len(MIGRATIONS):
        raise CorralError(
            f"The database has schema version {schema_version(conn)}, newer than this Corral "
            f"knows ({len(MIGRATIONS)}). Update Corral, or move the database aside."
        )
    while True:
        conn.execute("BEGIN IMMEDIATE")
        version = schema_version(conn)
        if version >= target:
            conn.execute("COMMIT")
            return version
        try:
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException as err:
            conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.Error):
                raise CorralError(
                    f"Upgrading the database to schema version {version + 1} failed ({err}); "
                    f"it is left at version {version}. Report this with the log."
                ) from err
            raise
        conn.execute("COMMIT")
