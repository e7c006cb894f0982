"""The database connection, transactions and users, shared by every part of the store.

One connection guarded by a re-entrant lock serves all threads: SQLite
serialises writes anyway, and a single connection can be closed from any
thread (per-thread connections could not). Each public method runs in one
transaction that commits before it returns, so a crash loses at most the
write in flight.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Self

from modules.core.errors import CorralError
from modules.core.paths import check_name
from modules.core.store.migrations import apply_migrations

DEFAULT_USER = "local"


class NotFoundError(CorralError):
    """A chat, message or character does not exist, or belongs to another user."""


def now() -> float:
    """Timestamps are Unix seconds (float): sortable and easy to format."""
    return time.time()


def _casefold(text: str | None) -> str | None:
    return text.casefold() if isinstance(text, str) else text


def connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (transactions are explicit) with the house pragmas."""
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as err:
        conn.close()
        raise CorralError(
            f"{path} is not a readable Corral database ({err}). Move it aside and start again "
            "to get a fresh one."
        ) from err
    # Unicode-aware case folding for search; SQLite's own lower() only knows ASCII.
    conn.create_function("casefold", 1, _casefold, deterministic=True)
    return conn


class StoreBase:
    """Connection, locking and the user table; the other parts are mixins on top of this."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file where the folder should be, no permission, a read-only disk
            raise CorralError(f"The folder {self.path.parent} for the chat database cannot be created "
                              f"({err.strerror or err}). Choose another with --user-data-dir.") from None
        self._lock = threading.RLock()
        self._conn = connect(self.path)
        self._user_ids: dict[str, int] = {}
        try:
            apply_migrations(self._conn)
        except sqlite3.Error as err:
            self._conn.close()
            raise CorralError(f"The database {self.path} could not be opened: {err}.") from err
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute(begin)
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise CorralError(
                    f"The database {self.path} could not be used: {err}. Check the disk has free "
                    "space and that no other program holds the file."
                ) from err
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        # A failed COMMIT (e.g. the disk is full) can leave the transaction open.
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction; IMMEDIATE takes the write lock up front so it cannot deadlock."""
        return self._transaction("BEGIN IMMEDIATE")

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read transaction: every query inside sees the same snapshot."""
        return self._transaction("BEGIN")

    def ensure_user(self, name: str) -> int:
        """The id of user ``name``, created on first use."""
        name = check_name(name, "user")
        with self._lock:
            if name not in self._user_ids:
                with self._write() as conn:
                    conn.execute(
                        "INSERT OR IGNORE INTO users (name, created_at) VALUES (?, ?)", (name, now())
                    )
                    row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
                self._user_ids[name] = row["id"]
            return self._user_ids[name]

    @staticmethod
    def _owned_chat(conn: sqlite3.Connection, user_id: int, chat_id: int) -> sqlite3.Row:
        row = conn.execute(
            "SELECT * FROM chats WHERE id = ? AND user_id = ?", (chat_id, user_id)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"Chat {chat_id} was not found. It may have been deleted; pick another chat.")
        return row

    @staticmethod
    def _owned_message(conn: sqlite3.Connection, user_id: int, message_id: int) -> sqlite3.Row:
        row = conn.execute(
            "SELECT m.* FROM messages m JOIN chats c ON c.id = m.chat_id "
            "WHERE m.id = ? AND c.user_id = ?",
            (message_id, user_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(
                f"Message {message_id} was not found. It may have been deleted; reload the chat."
            )
        return row

    @staticmethod
    def _touch_chat(conn: sqlite3.Connection, chat_id: int) -> None:
        conn.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (now(), chat_id))
