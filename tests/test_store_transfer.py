"""The store: export and import, durability, concurrency and migrations."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modules.core.errors import CorralError
from modules.core.store import SCHEMA_VERSION, Store, apply_migrations
from modules.core.store import migrations

ROOT = Path(__file__).resolve().parents[1]
from processes import child_env  # noqa: E402
from store_helpers import A, B, chat_with_messages, message_ids, store  # noqa: F401,E402 (store is a fixture)



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
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
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
