"""Characters and per-user settings."""
from __future__ import annotations

import json
from typing import Any

from modules.core.errors import CorralError
from modules.core.paths import check_name
from modules.core.store.base import NotFoundError, StoreBase, now


class CharactersMixin(StoreBase):
    def save_character(
        self, user: str, name: str, greeting: str, context: str, picture: bytes | None = None
    ) -> None:
        """Creates or replaces the character ``name`` (names compare case-insensitively).

        The whole character is replaced: ``picture=None`` means no picture.
        """
        name = check_name(name, "character")
        if not isinstance(greeting, str) or not isinstance(context, str):
            raise CorralError(f"Character {name!r}: greeting and context must be text.")
        if picture is not None and not isinstance(picture, (bytes, bytearray, memoryview)):
            raise CorralError(f"Character {name!r}: the picture must be image bytes.")
        user_id = self.ensure_user(user)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO characters (user_id, name, greeting, context, picture, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, name) DO UPDATE SET "
                "name = excluded.name, greeting = excluded.greeting, context = excluded.context, "
                "picture = excluded.picture, updated_at = excluded.updated_at",
                (user_id, name, greeting, context, None if picture is None else bytes(picture), now()),
            )

    def get_character(self, user: str, name: str) -> dict[str, Any]:
        """name, greeting, context, picture (bytes or None), updated_at."""
        name = check_name(name, "character")
        user_id = self.ensure_user(user)
        with self._read() as conn:
            row = conn.execute(
                "SELECT name, greeting, context, picture, updated_at FROM characters "
                "WHERE user_id = ? AND name = ?",
                (user_id, name),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"Character {name!r} was not found. Create it or pick another one.")
        return dict(row)

    def list_characters(self, user: str) -> list[dict[str, Any]]:
        """The user's characters by name: name, greeting, context, has_picture, updated_at.

        Pictures are left out so listing stays cheap; ``get_character`` has them.
        """
        user_id = self.ensure_user(user)
        with self._read() as conn:
            rows = conn.execute(
                "SELECT name, greeting, context, picture IS NOT NULL AS has_picture, updated_at "
                "FROM characters WHERE user_id = ? ORDER BY name",
                (user_id,),
            ).fetchall()
        return [{**dict(row), "has_picture": bool(row["has_picture"])} for row in rows]

    def delete_character(self, user: str, name: str) -> None:
        name = check_name(name, "character")
        user_id = self.ensure_user(user)
        with self._write() as conn:
            deleted = conn.execute(
                "DELETE FROM characters WHERE user_id = ? AND name = ?", (user_id, name)
            ).rowcount
        if not deleted:
            raise NotFoundError(f"Character {name!r} was not found, so nothing was deleted.")

    def get_settings(self, user: str) -> dict[str, Any]:
        """The user's saved settings; empty if none were saved."""
        user_id = self.ensure_user(user)
        with self._read() as conn:
            row = conn.execute("SELECT data FROM settings WHERE user_id = ?", (user_id,)).fetchone()
        return {} if row is None else json.loads(row["data"])

    def save_settings(self, user: str, settings: dict[str, Any]) -> None:
        """Replaces the user's settings with ``settings`` (anything JSON can hold)."""
        if not isinstance(settings, dict):
            raise CorralError(f"Settings must be a mapping, not {type(settings).__name__}.")
        try:
            data = json.dumps(settings)
        except (TypeError, ValueError) as err:
            raise CorralError(f"These settings cannot be saved: {err}.") from err
        user_id = self.ensure_user(user)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO settings (user_id, data) VALUES (?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET data = excluded.data",
                (user_id, data),
            )
