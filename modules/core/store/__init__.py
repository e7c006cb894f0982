"""The persistence layer: chats, messages, characters, settings and documents in one SQLite file.

``Store(path)`` is the only entry point; each concern lives in its own mixin
file. Every method takes the user's name and sees only that user's rows.
"""
from __future__ import annotations

from modules.core.store.arena import ArenaMixin
from modules.core.store.base import DEFAULT_USER, NotFoundError
from modules.core.store.characters import CharactersMixin
from modules.core.store.chats import MODES
from modules.core.store.messages import ROLES
from modules.core.store.migrations import MIGRATIONS, SCHEMA_VERSION, apply_migrations
from modules.core.store.transfer import EXPORT_FORMAT, TransferMixin


class Store(TransferMixin, CharactersMixin, ArenaMixin):
    """Chats, messages (with versions), characters, settings, documents, arena battles; export and import."""


__all__ = [
    "DEFAULT_USER", "EXPORT_FORMAT", "MIGRATIONS", "MODES", "NotFoundError", "ROLES",
    "SCHEMA_VERSION", "Store", "apply_migrations",
]
