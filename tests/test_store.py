"""The SQLite store against real database files: chats, messages, characters, documents, isolation."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from modules.core.errors import BadNameError, CorralError
from modules.core.store import SCHEMA_VERSION, NotFoundError, Store

from store_helpers import A, B, chat_with_messages, message_ids, store  # noqa: F401 (store is a fixture)


# --- opening ---------------------------------------------------------------------------------

def test_open_creates_folder_with_wal_and_current_schema(tmp_path: Path):
    path = tmp_path / "new" / "folder" / "corral.db"
    with Store(path):
        pass
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def test_a_file_that_is_not_a_database_is_refused_with_advice(tmp_path: Path):
    path = tmp_path / "corral.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorralError, match="not a readable Corral database"):
        Store(path)


def test_a_database_from_a_newer_corral_is_refused(tmp_path: Path):
    path = tmp_path / "corral.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(CorralError, match="newer than this Corral"):
        Store(path)


def test_ensure_user_is_idempotent_and_checks_names(store: Store):
    assert store.ensure_user("local") == store.ensure_user("local")
    assert store.ensure_user("local") != store.ensure_user(B)
    with pytest.raises(BadNameError):
        store.ensure_user("../root")


# --- chats -----------------------------------------------------------------------------------

def test_create_get_rename_delete_chat(store: Store):
    chat_id = store.create_chat(A, "  First  ", mode="chat", character="Alice")
    chat = store.get_chat(A, chat_id)
    assert (chat["title"], chat["mode"], chat["character"], chat["messages"]) == ("First", "chat", "Alice", [])
    store.rename_chat(A, chat_id, "Renamed")
    assert store.get_chat(A, chat_id)["title"] == "Renamed"
    store.delete_chat(A, chat_id)
    with pytest.raises(NotFoundError):
        store.get_chat(A, chat_id)
    assert store.list_chats(A) == []


def test_chat_arguments_are_checked(store: Store):
    assert store.get_chat(A, store.create_chat(A, "   "))["title"] == "New chat"
    with pytest.raises(CorralError, match="Unknown chat mode"):
        store.create_chat(A, "x", mode="story")
    with pytest.raises(BadNameError):
        store.create_chat(A, "x", character="../x")
    with pytest.raises(CorralError, match="cannot be empty"):
        store.rename_chat(A, store.create_chat(A, "x"), " ")


def test_list_chats_newest_first_with_fields(store: Store):
    first = store.create_chat(A, "first")
    second = store.create_chat(A, "second", mode="chat", character="Bo")
    assert [c["id"] for c in store.list_chats(A)] == [second, first]
    store.add_message(A, first, "user", "bump")
    listed = store.list_chats(A)
    assert [c["id"] for c in listed] == [first, second]
    assert set(listed[0]) == {"id", "title", "updated_at", "mode", "character"}
    assert listed[1]["character"] == "Bo"


def test_search_matches_title_or_message_text_in_any_case(store: Store):
    fruit = store.create_chat(A, "Fruit talk")
    store.add_message(A, fruit, "user", "Tell me about ÄPFEL and pears")
    other = store.create_chat(A, "Weather")
    store.add_message(A, other, "user", "rain", visible="Shown only: Umbrella")
    assert [c["id"] for c in store.list_chats(A, search="äpfel")] == [fruit]
    assert [c["id"] for c in store.list_chats(A, search="FRUIT")] == [fruit]
    assert [c["id"] for c in store.list_chats(A, search="umbrella")] == [other]
    assert store.list_chats(A, search="100%_") == []
    assert len(store.list_chats(A, search="  ")) == 2


# --- messages --------------------------------------------------------------------------------

def test_messages_keep_order_internal_and_visible_text_and_model(store: Store):
    chat_id = store.create_chat(A, "c")
    store.add_message(A, chat_id, "system", "Be brief.")
    store.add_message(A, chat_id, "user", "hi")
    store.add_message(A, chat_id, "assistant", "internal text", visible="shown text", model="tiny-1")
    messages = store.get_chat(A, chat_id)["messages"]
    assert [(m["position"], m["role"]) for m in messages] == [(0, "system"), (1, "user"), (2, "assistant")]
    assert messages[1]["visible"] == "hi"
    last = messages[2]
    assert (last["content"], last["visible"], last["model"]) == ("internal text", "shown text", "tiny-1")
    assert last["selected_version"] == 0 and len(last["versions"]) == 1
    with pytest.raises(CorralError, match="Unknown message role"):
        store.add_message(A, chat_id, "narrator", "x")


def test_update_message_while_streaming_keeps_what_was_written(tmp_path: Path):
    path = tmp_path / "corral.db"
    with Store(path) as store:
        chat_id = store.create_chat(A, "c")
        reply = store.add_message(A, chat_id, "assistant", "")
        for partial in ("Once", "Once upon", "Once upon a"):
            store.update_message(A, reply, content=partial, visible=partial + "…")
        store.update_message(A, reply, visible="edited view")
    with Store(path) as reopened:
        message = reopened.get_chat(A, chat_id)["messages"][0]
    assert (message["content"], message["visible"]) == ("Once upon a", "edited view")
    assert message["versions"][0]["content"] == "Once upon a"


def test_versions_can_be_added_and_paged(store: Store):
    chat_id = store.create_chat(A, "c")
    reply = store.add_message(A, chat_id, "assistant", "first", model="m1")
    assert store.add_version(A, reply, "second", visible="second shown", model="m2") == 1
    message = store.get_chat(A, chat_id)["messages"][0]
    assert (message["content"], message["visible"], message["model"], message["selected_version"]) == (
        "second", "second shown", "m2", 1)
    assert [v["content"] for v in message["versions"]] == ["first", "second"]
    store.select_version(A, reply, 0)
    message = store.get_chat(A, chat_id)["messages"][0]
    assert (message["content"], message["model"], message["selected_version"]) == ("first", "m1", 0)
    store.update_message(A, reply, content="first, edited")
    versions = store.get_chat(A, chat_id)["messages"][0]["versions"]
    assert [v["content"] for v in versions] == ["first, edited", "second"]
    with pytest.raises(NotFoundError, match="no version 3"):
        store.select_version(A, reply, 2)


def test_truncate_after_keeps_up_to_the_message(store: Store):
    chat_id, ids = chat_with_messages(store)
    assert store.truncate_after(A, chat_id, ids[1]) == 2
    assert message_ids(store, chat_id) == ids[:2]
    assert store.add_message(A, chat_id, "user", "new") not in ids  # ids are never reused
    assert [m["position"] for m in store.get_chat(A, chat_id)["messages"]] == [0, 1, 2]
    store.truncate_after(A, chat_id, None)
    assert message_ids(store, chat_id) == []


def test_truncate_after_refuses_a_message_of_another_chat(store: Store):
    chat_id, _ = chat_with_messages(store)
    _, other_ids = chat_with_messages(store)
    with pytest.raises(CorralError, match="is not in chat"):
        store.truncate_after(A, chat_id, other_ids[0])


def test_delete_message_closes_the_gap(store: Store):
    chat_id, ids = chat_with_messages(store)
    store.delete_message(A, ids[1])
    messages = store.get_chat(A, chat_id)["messages"]
    assert [m["id"] for m in messages] == [ids[0], ids[2], ids[3]]
    assert [m["position"] for m in messages] == [0, 1, 2]
    with pytest.raises(NotFoundError):
        store.delete_message(A, ids[1])


def test_branch_copies_messages_versions_and_documents_up_to_the_message(store: Store):
    chat_id, ids = chat_with_messages(store)
    store.add_version(A, ids[1], "two, again")
    store.add_document(A, chat_id, "notes.txt", [("chunk", b"\x00\x01")])
    branch = store.branch_chat(A, chat_id, ids[1])
    copied = store.get_chat(A, branch)
    assert copied["title"] == "test chat (branch)"
    assert [m["content"] for m in copied["messages"]] == ["one", "two, again"]
    assert [v["content"] for v in copied["messages"][1]["versions"]] == ["two", "two, again"]
    assert copied["messages"][1]["selected_version"] == 1
    assert store.chunks_for_chat(A, branch) == [("chunk", b"\x00\x01", "notes.txt")]
    store.add_message(A, branch, "user", "only in the branch")
    assert len(store.get_chat(A, chat_id)["messages"]) == 4


# --- characters and settings -----------------------------------------------------------------

def test_character_crud(store: Store):
    store.save_character(A, "Alice", "Hello!", "Alice is kind.", picture=b"\x89PNG fake")
    store.save_character(A, "Bob", "Hey", "Bob is grumpy.")
    character = store.get_character(A, "Alice")
    assert (character["greeting"], character["context"], character["picture"]) == (
        "Hello!", "Alice is kind.", b"\x89PNG fake")
    listed = store.list_characters(A)
    assert [(c["name"], c["has_picture"]) for c in listed] == [("Alice", True), ("Bob", False)]
    store.save_character(A, "alice", "Hi again", "changed")
    assert [c["name"] for c in store.list_characters(A)] == ["alice", "Bob"]
    assert store.get_character(A, "ALICE")["picture"] is None
    store.delete_character(A, "Alice")
    with pytest.raises(NotFoundError):
        store.get_character(A, "alice")
    with pytest.raises(NotFoundError):
        store.delete_character(A, "alice")


@pytest.mark.parametrize("name", ["../evil", "../../etc/passwd", "/etc/passwd", "a/b", "..", "a\\b", "  "])
def test_character_names_with_paths_are_refused(store: Store, name: str):
    with pytest.raises(BadNameError):
        store.save_character(A, name, "g", "c")
    with pytest.raises(BadNameError):
        store.get_character(A, name)
    with pytest.raises(BadNameError):
        store.delete_character(A, name)


def test_settings_round_trip_per_user(store: Store):
    assert store.get_settings(A) == {}
    store.save_settings(A, {"preset": "Creative", "max_new_tokens": 300, "stop": ["###"]})
    store.save_settings(A, {"preset": "Precise"})
    assert store.get_settings(A) == {"preset": "Precise"}
    assert store.get_settings(B) == {}
    with pytest.raises(CorralError, match="cannot be saved"):
        store.save_settings(A, {"bad": object()})


# --- documents -------------------------------------------------------------------------------

def test_documents_and_chunks(store: Store):
    chat_id = store.create_chat(A, "rag")
    first = store.add_document(A, chat_id, "a.txt", [("alpha", b"\x01"), ("beta", b"\x02")])
    store.add_document(A, chat_id, "b.md", [("gamma", b"\x03")])
    assert store.chunks_for_chat(A, chat_id) == [
        ("alpha", b"\x01", "a.txt"), ("beta", b"\x02", "a.txt"), ("gamma", b"\x03", "b.md")]
    assert [(d["name"], d["chunks"]) for d in store.list_documents(A, chat_id)] == [("a.txt", 2), ("b.md", 1)]
    store.delete_document(A, first)
    assert [c[0] for c in store.chunks_for_chat(A, chat_id)] == ["gamma"]
    with pytest.raises(CorralError, match="chunk 1"):
        store.add_document(A, chat_id, "bad", [("text", "not bytes")])
    store.delete_chat(A, chat_id)
    raw = sqlite3.connect(store.path)
    assert raw.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0


# --- isolation between users -----------------------------------------------------------------

def test_another_user_cannot_see_or_change_a_chat(store: Store):
    chat_id, ids = chat_with_messages(store, A)
    store.add_document(A, chat_id, "secret.txt", [("secret", b"")])
    assert store.list_chats(B) == [] and store.list_chats(B, search="one") == []
    attempts = [
        lambda: store.get_chat(B, chat_id),
        lambda: store.rename_chat(B, chat_id, "mine now"),
        lambda: store.delete_chat(B, chat_id),
        lambda: store.add_message(B, chat_id, "user", "intruder"),
        lambda: store.update_message(B, ids[0], content="changed"),
        lambda: store.add_version(B, ids[1], "changed"),
        lambda: store.select_version(B, ids[1], 0),
        lambda: store.truncate_after(B, chat_id, ids[0]),
        lambda: store.delete_message(B, ids[0]),
        lambda: store.branch_chat(B, chat_id, ids[0]),
        lambda: store.add_document(B, chat_id, "x", []),
        lambda: store.chunks_for_chat(B, chat_id),
        lambda: store.export_chat_json(B, chat_id),
    ]
    for attempt in attempts:
        with pytest.raises(NotFoundError):
            attempt()
    chat = store.get_chat(A, chat_id)
    assert chat["title"] == "test chat" and [m["content"] for m in chat["messages"]] == ["one", "two", "three", "four"]
    assert len(store.chunks_for_chat(A, chat_id)) == 1


def test_another_user_has_separate_characters(store: Store):
    store.save_character(A, "Alice", "A's greeting", "A's context")
    assert store.list_characters(B) == []
    with pytest.raises(NotFoundError):
        store.get_character(B, "Alice")
    with pytest.raises(NotFoundError):
        store.delete_character(B, "Alice")
    store.save_character(B, "Alice", "B's greeting", "B's context")
    assert store.get_character(A, "Alice")["greeting"] == "A's greeting"
    assert store.get_character(B, "Alice")["greeting"] == "B's greeting"
