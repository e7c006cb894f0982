"""The chat tab's endpoints through a real client (gradio_client) against the app serving the default model.

The app is built in-process with sign-in for two users and a fresh database;
every gradio_client ``Client`` is one browser session with its own per-session
state (the open chat), as two browser tabs would be.
"""
from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402

from api_helpers import watch_generations  # noqa: E402

from modules.core.config import DEFAULT_MODEL_NAME, AppConfig  # noqa: E402
from modules.core.context import build_context  # noqa: E402
from modules.core.errors import CorralError  # noqa: E402
from modules.ui.app_ui import CSS, build_ui  # noqa: E402
from modules.ui.auth import load_credentials, parse_credentials, user_of  # noqa: E402
from modules.ui.chat_render import export_file_name, pager_label, pager_target  # noqa: E402

USERS = {"alice": "wonderland", "bob": "builder"}
STATS = re.compile(r"[\d.]+ tokens/s · (\d+) tokens · context (\d+)/(\d+) · " + re.escape(DEFAULT_MODEL_NAME))
QUESTION = "What is the capital of France?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(default_model_dir: Path, default_model, tmp_path_factory):
    config = AppConfig(models_dir=default_model_dir.parent, user_data_dir=tmp_path_factory.mktemp("user_data"),
                       characters_dir=tmp_path_factory.mktemp("characters"))
    ctx = build_context(config)
    ctx.config.settings = {"max_new_tokens": 16, "do_sample": False}  # short greedy replies
    default_model.lend(ctx)  # the session's model, not a second copy
    demo = build_ui(ctx)
    port = free_port()
    demo.queue(default_concurrency_limit=8).launch(server_port=port, prevent_thread_lock=True, quiet=True,
                                                   auth=list(USERS.items()), css=CSS)
    yield ctx, f"http://127.0.0.1:{port}"
    demo.close()
    ctx.models.unload()


class Session:
    """One browser session of ``user``: endpoints called by their components' labels."""

    def __init__(self, url: str, user: str) -> None:
        self.user = user
        self.client = Client(url, auth=(user, USERS[user]), verbose=False)
        self.api = self.client.view_api(return_format="dict", print_info=False)["named_endpoints"]

    def _args(self, name: str, values: dict) -> dict:
        params = self.api[f"/{name}"]["parameters"]
        by_label = {p["label"].split(" (")[0]: p["parameter_name"] for p in params}
        unknown = set(values) - set(by_label)
        assert not unknown, f"/{name} has no input labelled {unknown}"
        args = {p["parameter_name"]: p.get("parameter_default") for p in params}
        args.update({by_label[label]: value for label, value in values.items()})
        return args

    def _named(self, name: str, output) -> dict:
        labels = [r["label"] for r in self.api[f"/{name}"]["returns"]]
        return dict(zip(labels, output if isinstance(output, (list, tuple)) else (output,)))

    def call(self, name: str, values: dict | None = None) -> dict:
        return self._named(name, self.client.predict(**self._args(name, values or {}), api_name=f"/{name}"))

    def stream(self, name: str, values: dict | None = None) -> list[dict]:
        job = self.client.submit(**self._args(name, values or {}), api_name=f"/{name}")
        return [self._named(name, output) for output in job]

    def submit(self, name: str, values: dict | None = None):
        return self.client.submit(**self._args(name, values or {}), api_name=f"/{name}")


def chat_texts(chatbot) -> list[tuple[str, str]]:
    def text(content) -> str:
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content)
        return str(content)
    return [(m["role"], text(m["content"])) for m in chatbot]


def value(update):
    return update.get("value") if isinstance(update, dict) else update


def choices(update) -> list:
    return [choice[1] for choice in update["choices"]]


# --- through the client --------------------------------------------------------------------------

def test_send_streams_the_reply_and_stores_it_with_its_model(app):
    ctx, url = app
    alice = Session(url, "alice")
    frames = alice.stream("chat_send", {"Message": QUESTION})
    replies = [chat_texts(f["Chat"])[-1][1] for f in frames
               if isinstance(f["Chat"], list) and f["Chat"] and f["Chat"][-1]["role"] == "assistant"]
    distinct = list(dict.fromkeys(replies))
    assert len(distinct) >= 2, f"the reply did not stream: {distinct}"
    assert all(distinct[-1].startswith(partial) for partial in distinct)
    final = frames[-1]
    assert chat_texts(final["Chat"]) == [("user", QUESTION), ("assistant", distinct[-1])]
    assert "Paris" in distinct[-1]
    generated, used, length = map(int, STATS.search(final["Reply stats"]).groups())
    assert 0 < generated <= 16 and used > generated and length == ctx.engine.context_length
    chats = ctx.store.list_chats("alice")
    assert [c["title"] for c in chats] == [QUESTION] and choices(final["Chats"]) == [chats[0]["id"]]
    stored = ctx.store.get_chat("alice", chats[0]["id"])["messages"]
    assert [(m["role"], m["content"], m["model"]) for m in stored] == [
        ("user", QUESTION, None), ("assistant", distinct[-1], DEFAULT_MODEL_NAME)]


def test_regenerate_pages_versions_and_branches(app):
    ctx, url = app
    alice = Session(url, "alice")
    alice.call("chat_new")
    first = alice.stream("chat_send", {"Message": "Name a primary colour."})[-1]
    first_reply = chat_texts(first["Chat"])[-1][1]
    again = alice.stream("chat_regenerate", {"Start reply with": "Sure! My favourite is"})[-1]
    second_reply = chat_texts(again["Chat"])[-1][1]
    assert second_reply.startswith("Sure! My favourite is") and len(again["Chat"]) == 2
    assert value(again["Version"]) == "version 2/2"
    back = alice.call("chat_version_prev")
    assert value(back["Version"]) == "version 1/2" and chat_texts(back["Chat"])[-1][1] == first_reply
    forth = alice.call("chat_version_next")
    assert value(forth["Version"]) == "version 2/2" and chat_texts(forth["Chat"])[-1][1] == second_reply
    branched = alice.call("chat_branch")
    branch_id = value(branched["Chats"])
    branch = ctx.store.get_chat("alice", branch_id)
    assert branch["title"] == "Name a primary colour. (branch)" and value(branched["Title"]) == branch["title"]
    assert [v["content"] for v in branch["messages"][1]["versions"]] == [first_reply, second_reply]


def test_continue_impersonate_and_remove_last(app):
    ctx, url = app
    alice = Session(url, "alice")
    alice.call("chat_new")
    short = {"max_new_tokens": 4, "ban_eos_token": True}
    first = chat_texts(alice.stream("chat_send", {"Message": "List the days of the week.", **short})[-1]["Chat"])
    longer = alice.stream("chat_continue", short)[-1]
    continued = chat_texts(longer["Chat"])
    assert len(continued) == 2 and continued[1][1].startswith(first[1][1]) and len(continued[1][1]) > len(first[1][1])
    frames = alice.stream("chat_impersonate", {"Message": "Thanks, and", **short})
    drafted = [f["Message"] for f in frames if isinstance(f["Message"], str)][-1]  # the last frame leaves it be
    assert drafted.startswith("Thanks, and") and len(drafted) > len("Thanks, and")
    chat_id = ctx.store.list_chats("alice")[0]["id"]
    assert len(ctx.store.get_chat("alice", chat_id)["messages"]) == 2  # impersonating stores nothing
    removed = alice.call("chat_remove_last")
    assert removed["Message"] == "List the days of the week." and removed["Chat"] == []
    assert ctx.store.get_chat("alice", chat_id)["messages"] == []


def test_rename_search_export_import_and_delete(app, tmp_path: Path):
    ctx, url = app
    alice = Session(url, "alice")
    alice.call("chat_new")
    alice.stream("chat_send", {"Message": "Say hello."})
    renamed = alice.call("chat_rename", {"Title": "Greetings log"})
    chat_id = value(renamed["Chats"])
    assert ctx.store.get_chat("alice", chat_id)["title"] == "Greetings log"
    assert choices(alice.call("chat_search", {"Search chats": "greetings"})["Chats"]) == [chat_id]
    assert choices(alice.call("chat_search", {"Search chats": "no such words"})["Chats"]) == []
    alice.call("chat_search", {"Search chats": ""})
    exported = value(alice.call("chat_export_json")["Exported chat"])
    data = json.loads(Path(exported).read_text(encoding="utf-8"))
    assert data["format"] == "corral-chat" and data["title"] == "Greetings log"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    markdown = Path(value(alice.call("chat_export_markdown")["Exported chat"])).read_text(encoding="utf-8")
    assert markdown.startswith("# Greetings log") and "### You\n\nSay hello." in markdown
    log = tmp_path / "webui-log.json"
    log.write_text(json.dumps({"internal": [["Hi there", "Hello! How can I help?"]],
                               "visible": [["Hi there", "Hello! How can I help?"]]}))
    imported = alice.call("chat_import", {"Import a chat": handle_file(str(log))})
    assert chat_texts(imported["Chat"]) == [("user", "Hi there"), ("assistant", "Hello! How can I help?")]
    alice.call("chat_open", {"Chats": chat_id})
    after = alice.call("chat_delete")
    assert chat_id not in choices(after["Chats"])
    assert chat_id not in [c["id"] for c in ctx.store.list_chats("alice")]


def test_two_browsers_at_once_never_mix_and_stop_is_per_browser(app):
    ctx, url = app
    one, two = Session(url, "alice"), Session(url, "alice")
    for session in (one, two):
        session.call("chat_new")
    long = {"max_new_tokens": 48, "ban_eos_token": True}
    with watch_generations(ctx.engine) as watch:
        job_one = one.submit("chat_send", {"Message": "Tell me a story about a cat.", **long})
        job_two = two.submit("chat_send", {"Message": "Tell me a story about a dog.", **long})
        # stop the first once its reply is under way (its first token is out)
        assert watch.wait_for(lambda: any("a cat." in p for p in watch.started_prompts), 240)
        one.client.predict(api_name="/chat_stop")
    final_one = one._named("chat_send", job_one.result(timeout=300))
    final_two = two._named("chat_send", job_two.result(timeout=300))
    assert "stopped" in final_one["Reply stats"]
    assert "stopped" not in final_two["Reply stats"] and int(STATS.search(final_two["Reply stats"]).group(1)) == 48
    assert chat_texts(final_one["Chat"])[0] == ("user", "Tell me a story about a cat.")
    assert chat_texts(final_two["Chat"])[0] == ("user", "Tell me a story about a dog.")
    one_id, two_id = value(final_one["Chats"]), value(final_two["Chats"])
    assert one_id != two_id
    for chat_id, shown in ((one_id, final_one), (two_id, final_two)):
        stored = ctx.store.get_chat("alice", chat_id)["messages"]
        assert [(m["role"], m["visible"]) for m in stored] == chat_texts(shown["Chat"])


def test_each_user_sees_only_their_own_chats(app):
    ctx, url = app
    bob = Session(url, "bob")
    loaded = bob.call("chat_load")
    assert choices(loaded["Chats"]) == [] and loaded["Chat"] == []
    alice_chat = ctx.store.list_chats("alice")[0]["id"]
    with pytest.raises(Exception, match="not in the list of choices"):
        bob.call("chat_open", {"Chats": alice_chat})
    bob.stream("chat_send", {"Message": "Bob's question"})
    assert [c["title"] for c in ctx.store.list_chats("bob")] == ["Bob's question"]
    assert "Bob's question" not in [c["title"] for c in ctx.store.list_chats("alice")]
    alice_list = Session(url, "alice").call("chat_load")["Chats"]
    assert [c[0] for c in alice_list["choices"]] == [c["title"] for c in ctx.store.list_chats("alice")]


def test_a_character_name_with_a_path_is_refused(app):
    ctx, url = app
    alice = Session(url, "alice")
    alice.call("chat_new")
    before = len(ctx.store.list_chats("alice"))
    frame = alice.stream("chat_send", {"Message": "hi", "Mode": "chat", "Character": "../../etc/passwd"})[-1]
    assert "not allowed" in frame["Reply stats"] and "⚠️" in frame["Reply stats"]
    assert frame["Message"] == "hi"  # given back to edit
    assert len(ctx.store.list_chats("alice")) == before


# --- pure parts ----------------------------------------------------------------------------------

def test_credentials_from_flags_and_file(tmp_path: Path):
    assert parse_credentials("alice:pw1, bob:p:w:2\n# comment\n\ncarol:x", "test") == [
        ("alice", "pw1"), ("bob", "p:w:2"), ("carol", "x")]
    file = tmp_path / "auth.txt"
    file.write_text("dave:secret\nalice:pw1\n")
    assert load_credentials(["alice:pw1"], file) == [("alice", "pw1"), ("dave", "secret")]
    assert load_credentials(None, None) is None
    with pytest.raises(CorralError, match="different passwords"):
        load_credentials(["alice:one", "alice:two"], None)
    with pytest.raises(CorralError, match="not 'user:password'"):
        load_credentials(["alice"], None)
    with pytest.raises(CorralError, match="not allowed"):
        load_credentials(["../root:pw"], None)
    with pytest.raises(CorralError, match="cannot read"):
        load_credentials(None, tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n")
    with pytest.raises(CorralError, match="holds no user:password"):
        load_credentials(None, empty)


def test_user_of_a_request():
    class Request:
        username = "alice"
    assert user_of(Request()) == "alice" and user_of(None) == "local"
    Request.username = None
    assert user_of(Request()) == "local"


def test_app_flags_for_sign_in_and_user_data(tmp_path: Path, repo_root: Path):
    import app as app_module

    args = app_module.parse_args(["--gradio-auth", "a:1", "--gradio-auth", "b:2", "--gradio-auth-path",
                                  str(tmp_path / "f.txt"), "--user-data-dir", str(tmp_path / "ud")])
    config = app_module.build_config(args, repo_root)
    assert config.server.gradio_auth == ["a:1", "b:2"] and config.server.gradio_auth_path == str(tmp_path / "f.txt")
    assert config.user_data_dir == tmp_path / "ud"
    assert app_module.main(["--gradio-auth", "nocolon", "--user-data-dir", str(tmp_path / "ud")]) == 2


def test_pager_and_export_names():
    def message(role, versions, selected=0):
        return {"role": role, "versions": [{}] * versions, "selected_version": selected}
    messages = [message("system", 1), message("user", 1), message("assistant", 3, 1)]
    assert pager_target(messages, None) == 1 and pager_target(messages, 0) == 0 and pager_target(messages, 9) == 1
    assert pager_label(messages, 1) == "version 2/3" and pager_label(messages, 0) is None
    assert pager_target([], None) is None and pager_label([], None) is None
    assert export_file_name("../../etc/passwd: a chat!", ".json") == "etcpasswd a chat.json"
    assert export_file_name("///", ".md") == "chat.md"
