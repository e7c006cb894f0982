"""Shared pieces of the store tests: a fresh database per test and a chat filled with turns."""
from __future__ import annotations

from pathlib import Path

import pytest

from modules.core.store import Store

A, B = "alice", "bob"


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "data" / "corral.db") as opened:
        yield opened


def chat_with_messages(store: Store, user: str = A, texts=("one", "two", "three", "four")) -> tuple[int, list[int]]:
    chat_id = store.create_chat(user, "test chat")
    roles = ["user", "assistant"] * len(texts)
    ids = [store.add_message(user, chat_id, role, text) for role, text in zip(roles, texts)]
    return chat_id, ids


def message_ids(store: Store, chat_id: int, user: str = A) -> list[int]:
    return [m["id"] for m in store.get_chat(user, chat_id)["messages"]]
