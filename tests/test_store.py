"""The SQLite store against real database files: CRUD, isolation, crashes, migrations, import/export."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modules.core.errors import BadNameError, CorralError
from modules.core.store import SCHEMA_VERSION, NotFoundError, Store, apply_migrations
from modules.core.store import migrations

ROOT = Path(__file__).resolve().parents[1]
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


# --- opening ---------------------------------------------------------------------------------

def test_open_creates_folder_with_wal_and_current_schema(tmp_path: Path):
    path = tmp_path / "new" / "folder" / "corral.db"
    with Store(path):
        pass
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


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


# --- export and import -----------------------------------------------------------------------

def test_export_json_imports_back_identically(store: Store):
    chat_id = store.create_chat(A, "Trip", mode="chat", character="Guide")
    store.add_message(A, chat_id, "user", "Where to?", visible="Where to? (shown)")
    reply = store.add_message(A, chat_id, "assistant", "Rome", model="m1")
    store.add_version(A, reply, "Paris", model="m2")
    store.select_version(A, reply, 0)
    exported = store.export_chat_json(A, chat_id)
    assert exported["format"] == "corral-chat"
    copy_id = store.import_chat(B, exported, None)
    copy = store.get_chat(B, copy_id)
    original = store.get_chat(A, chat_id)
    assert (copy["title"], copy["mode"], copy["character"]) == ("Trip", "chat", "Guide")

    def essentials(chat):
        return [(m["role"], m["content"], m["visible"], m["model"], m["selected_version"],
                 [(v["content"], v["model"]) for v in m["versions"]]) for m in chat["messages"]]
    assert essentials(copy) == essentials(original)
    assert store.get_chat(B, store.import_chat(B, exported, "Other title"))["title"] == "Other title"


def test_export_markdown_shows_visible_text_and_speakers(store: Store):
    chat_id = store.create_chat(A, "Story time", mode="chat", character="Narrator")
    store.add_message(A, chat_id, "user", "internal question", visible="Tell me a story")
    store.add_message(A, chat_id, "assistant", "Once upon a time.", model="tiny")
    markdown = store.export_chat_markdown(A, chat_id)
    assert markdown.startswith("# Story time\n")
    assert "### You\n\nTell me a story" in markdown
    assert "### Narrator (tiny)\n\nOnce upon a time." in markdown
    assert "internal question" not in markdown


def test_import_text_generation_webui_log_with_greeting(store: Store):
    log = {
        "internal": [
            ["<|BEGIN-VISIBLE-CHAT|>", "Hello, I'm Aria."],
            ["What's 2+2?", "It's 4 <internal note>"],
            ["Thanks", "You're welcome"],
        ],
        "visible": [
            ["", "Hello, I&#x27;m Aria."],
            ["What&#x27;s 2+2?", "It&#x27;s 4"],
            ["Thanks", "You&#x27;re welcome"],
        ],
    }
    chat_id = store.import_chat(A, log, "From the web UI", character="Aria")
    chat = store.get_chat(A, chat_id)
    assert (chat["title"], chat["mode"], chat["character"]) == ("From the web UI", "chat", "Aria")
    assert [(m["role"], m["content"], m["visible"]) for m in chat["messages"]] == [
        ("assistant", "Hello, I'm Aria.", "Hello, I'm Aria."),
        ("user", "What's 2+2?", "What's 2+2?"),
        ("assistant", "It's 4 <internal note>", "It's 4"),
        ("user", "Thanks", "Thanks"),
        ("assistant", "You're welcome", "You're welcome"),
    ]
    assert store.get_chat(A, store.import_chat(A, {"internal": [["hi", "yo"]]}, ""))["mode"] == "instruct"


@pytest.mark.parametrize("data, problem", [
    ({"internal": "nope"}, "'internal' must be a list"),
    ({"internal": [["only one"]]}, "entry 1 is not a"),
    ({"internal": [["a", "b"]], "visible": []}, "'internal' has 1 pairs but 'visible' has 0"),
    ({"internal": [["a", 3]]}, "pair of strings"),
    ({"format": "corral-chat", "messages": [{"role": "wizard", "content": "x"}]}, "message 1 has role 'wizard'"),
    ({"format": "corral-chat", "messages": [{"role": "user"}]}, "message 1, version 1 has no text"),
    ({"format": "corral-chat", "messages": "x"}, "'messages' must be a list"),
    ({"format": "corral-chat", "version": 9, "messages": []}, "format version 9"),
    ({"format": "corral-chat", "messages": [{"role": "user", "content": "x", "selected_version": 4}]},
     "selected_version 4"),
    ({"hello": "world"}, "neither a Corral export"),
    (["not", "a", "dict"], "expected a JSON object"),
])
def test_malformed_imports_say_what_is_wrong(store: Store, data, problem: str):
    with pytest.raises(CorralError, match="cannot be imported") as caught:
        store.import_chat(A, data, "x")
    assert problem in str(caught.value)
    assert store.list_chats(A) == []


# --- durability, concurrency, migrations -----------------------------------------------------

WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from modules.core.store import Store
store = Store(Path(sys.argv[2]))
chat_id = store.create_chat("local", "crash test")
print(chat_id, flush=True)
number = 0
while True:
    message_id = store.add_message("local", chat_id, "user", f"message {number} " + "x" * 4000)
    print(message_id, flush=True)
    number += 1
"""


def test_a_process_killed_mid_write_loses_no_committed_message(tmp_path: Path):
    path = tmp_path / "corral.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(ROOT), str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = writer.stdout.readline()
        assert first.endswith("\n"), writer.stderr.read()
        chat_id = int(first)
        committed = [int(writer.stdout.readline()) for _ in range(150)]
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    # Ids printed between our last read and the kill were committed too.
    committed += [int(line) for line in writer.stdout.read().splitlines(keepends=True) if line.endswith("\n")]
    with Store(path) as store:
        stored = message_ids(store, chat_id, user="local")
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert set(committed) <= set(stored)
    assert len(stored) >= len(committed) >= 150


def test_threads_can_write_at_once(store: Store):
    chat_id = store.create_chat(A, "busy")

    def write(thread: int) -> None:
        for number in range(25):
            store.add_message(A, chat_id, "user", f"{thread}-{number}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    messages = store.get_chat(A, chat_id)["messages"]
    assert sorted(m["position"] for m in messages) == list(range(100))
    assert len({m["content"] for m in messages}) == 100


def version_1_database(path: Path) -> None:
    """A database as the first release left it: schema 1 with a user, a chat, a message, a character."""
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, target=1)
    conn.execute("INSERT INTO users (id, name, created_at) VALUES (1, 'local', 1.0)")
    conn.execute("INSERT INTO chats (id, user_id, title, mode, character, created_at, updated_at) "
                 "VALUES (1, 1, 'Old chat', 'chat', 'Alice', 1.0, 2.0)")
    conn.execute("INSERT INTO messages (chat_id, position, role, content, visible, created_at) "
                 "VALUES (1, 0, 'user', 'hello', 'hello', 1.5), (1, 1, 'assistant', 'hi internal', 'hi shown', 1.6)")
    conn.execute("INSERT INTO characters (user_id, name, greeting, context, updated_at) "
                 "VALUES (1, 'Alice', 'Hi!', 'Alice is kind.', 1.0)")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


def test_a_version_1_database_is_migrated_and_keeps_its_data(tmp_path: Path):
    path = tmp_path / "corral.db"
    version_1_database(path)
    with Store(path) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        chat = store.get_chat("local", 1)
        assert (chat["title"], chat["character"]) == ("Old chat", "Alice")
        reply = chat["messages"][1]
        assert (reply["content"], reply["visible"], reply["model"], reply["selected_version"]) == (
            "hi internal", "hi shown", None, 0)
        assert [v["content"] for v in reply["versions"]] == ["hi internal"]
        store.add_version("local", reply["id"], "regenerated", model="new-model")
        store.select_version("local", reply["id"], 0)
        assert store.get_chat("local", 1)["messages"][1]["content"] == "hi internal"
        assert store.get_character("local", "Alice")["context"] == "Alice is kind."


def test_a_failed_migration_leaves_the_previous_version(tmp_path: Path, monkeypatch):
    path = tmp_path / "corral.db"
    version_1_database(path)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE messages ADD COLUMN model TEXT")
        conn.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(migrations, "MIGRATIONS", [migrations.MIGRATIONS[0], broken])
    with pytest.raises(CorralError, match="left at version 1"):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "model" not in [row[1] for row in conn.execute("PRAGMA table_info(messages)")]


def test_a_write_that_fails_halfway_is_rolled_back(store: Store, monkeypatch):
    chat_id = store.create_chat(A, "c")

    def fail(*args) -> None:
        raise RuntimeError("disk pulled out")

    monkeypatch.setattr(store, "_insert_version", fail)
    with pytest.raises(RuntimeError):
        store.add_message(A, chat_id, "user", "half written")
    monkeypatch.undo()
    assert store.get_chat(A, chat_id)["messages"] == []
    store.add_message(A, chat_id, "user", "whole")
    assert [m["content"] for m in store.get_chat(A, chat_id)["messages"]] == ["whole"]
