"""Chat turns on the real default model, persisted through a real SQLite store."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modules.core.chat import Character, ChatSettings, Turn
from modules.core.config import DEFAULT_MODEL_NAME, AppConfig
from modules.core.context import build_context
from modules.core.conversation import Conversation, ReplyWriter, TurnSetup, load_character, prompt_history
from modules.core.errors import CorralError
from modules.core.generation import chat_request
from modules.core.sampling import SamplerParams
from modules.core.store import NotFoundError, Store

GREEDY = SamplerParams(do_sample=False, max_new_tokens=12)
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def ctx(default_model_dir: Path, default_model, tmp_path_factory):
    config = AppConfig(models_dir=default_model_dir.parent, user_data_dir=tmp_path_factory.mktemp("user_data"),
                       characters_dir=tmp_path_factory.mktemp("characters"))
    context = default_model.lend(build_context(config))  # the session's model; the store is this context's
    yield context
    context.models.unload()
    context.store.close()


@pytest.fixture()
def conv(ctx) -> Conversation:
    return Conversation(ctx, "alice", every_tokens=2, every_seconds=60.0)


def drain(progress) -> list:
    return list(progress)


def plain_reply(ctx, history: list[dict], turn: Turn, setup: TurnSetup) -> str:
    """The same turn generated straight through the engine, for comparison."""
    request, _ = chat_request(ctx, history, turn, setup.settings, setup.params, setup.format_name)
    return "".join(delta.text for delta in ctx.engine.generate(request))


def test_send_stores_the_question_at_once_and_the_reply_with_its_model(ctx, conv):
    setup = TurnSetup(params=GREEDY)
    chat_id = conv.new_chat(setup.settings)
    stream = conv.send(chat_id, QUESTION, setup, threading.Event())
    first = next(stream)
    with Store(ctx.store.path) as other_connection:  # what another process (a reload) would see
        seen = other_connection.get_chat("alice", chat_id)["messages"]
    assert seen[0]["role"] == "user" and seen[0]["content"] == QUESTION
    steps = [first, *stream]
    final = steps[-1]
    assert final.done and all(not s.done for s in steps[:-1])
    expected = plain_reply(ctx, [{"role": "user", "content": QUESTION}], Turn(), setup).lstrip()
    assert final.text == expected and "Paris" in final.text
    messages = conv.messages(chat_id)
    assert [(m["role"], m["content"], m["model"]) for m in messages] == [
        ("user", QUESTION, None), ("assistant", expected, DEFAULT_MODEL_NAME)]
    assert ctx.store.get_chat("alice", chat_id)["title"] == QUESTION
    stats = final.stats
    assert stats.completion_tokens > 0 and stats.context_length == ctx.engine.context_length
    assert stats.context_used > stats.completion_tokens
    assert f"context {stats.context_used}/{ctx.engine.context_length}" in stats.line()


def test_the_reply_is_in_the_database_while_it_streams(ctx, conv):
    setup = TurnSetup(params=GREEDY.replace(max_new_tokens=16, ban_eos_token=True))
    chat_id = conv.new_chat(setup.settings)
    partial_in_db = []
    for step in conv.send(chat_id, "Count from one to twenty.", setup, threading.Event()):
        if not step.done and step.message_id is not None:
            with Store(ctx.store.path) as reader:
                stored = reader.get_chat("alice", chat_id)["messages"][-1]["content"]
            partial_in_db.append((stored, step.text))
    assert len(partial_in_db) > 3
    # written every 2 tokens: always a prefix of what is shown, and growing
    assert all(step_text.startswith(stored) for stored, step_text in partial_in_db)
    assert len({stored for stored, _ in partial_in_db}) > 2


def test_stop_keeps_the_reply_as_far_as_it_got(ctx, conv):
    setup = TurnSetup(params=GREEDY.replace(max_new_tokens=40, ban_eos_token=True))
    chat_id = conv.new_chat(setup.settings)
    cancel = threading.Event()
    steps = []
    for step in conv.send(chat_id, "Tell me a long story.", setup, cancel):
        steps.append(step)
        if len(steps) == 5:
            cancel.set()
    final = steps[-1]
    assert final.stats.finish_reason == "cancelled" and "stopped" in final.stats.line()
    assert final.stats.completion_tokens < 40
    assert conv.messages(chat_id)[-1]["content"] == final.text != ""


def test_a_reader_that_goes_away_mid_reply_still_leaves_the_partial_reply(conv):
    setup = TurnSetup(params=GREEDY.replace(max_new_tokens=40, ban_eos_token=True))
    chat_id = conv.new_chat(setup.settings)
    stream = conv.send(chat_id, "Tell me a long story.", setup, threading.Event())
    shown = ""
    for _ in range(6):
        shown = next(stream).text
    stream.close()  # what Gradio does when the browser closes
    assert conv.messages(chat_id)[-1]["content"] == shown != ""


def test_regenerate_adds_a_version_and_keeps_the_old_one(conv):
    chat_id = conv.new_chat(ChatSettings())
    drain(conv.send(chat_id, QUESTION, TurnSetup(params=GREEDY), threading.Event()))
    first = conv.messages(chat_id)[-1]
    setup = TurnSetup(params=GREEDY, start_reply_with="Oh, I know!")
    final = drain(conv.regenerate(chat_id, setup, threading.Event()))[-1]
    assert final.text.startswith("Oh, I know!")
    reply = conv.messages(chat_id)[-1]
    assert reply["id"] == first["id"] and reply["selected_version"] == 1
    assert [v["content"] for v in reply["versions"]] == [first["content"], final.text]
    conv.store.select_version("alice", reply["id"], 0)
    assert conv.messages(chat_id)[-1]["content"] == first["content"]


def test_continue_extends_the_same_message(ctx, conv):
    chat_id = conv.new_chat(ChatSettings())
    short = TurnSetup(params=GREEDY.replace(max_new_tokens=4, ban_eos_token=True))
    drain(conv.send(chat_id, "Name the planets of the solar system.", short, threading.Event()))
    before = conv.messages(chat_id)[-1]
    final = drain(conv.continue_reply(chat_id, short, threading.Event()))[-1]
    after = conv.messages(chat_id)[-1]
    assert after["id"] == before["id"] and len(after["versions"]) == 1
    assert after["content"] == final.text and final.text.startswith(before["content"])
    assert len(final.text) > len(before["content"])
    history = [{"role": "user", "content": "Name the planets of the solar system."}]
    assert final.text == before["content"] + plain_reply(ctx, history, Turn(continue_reply=before["content"]), short)


def test_impersonate_writes_the_users_line_and_stores_nothing(conv):
    chat_id = conv.new_chat(ChatSettings())
    drain(conv.send(chat_id, QUESTION, TurnSetup(params=GREEDY), threading.Event()))
    count = len(conv.messages(chat_id))
    final = drain(conv.impersonate(chat_id, "And what", TurnSetup(params=GREEDY), threading.Event()))[-1]
    assert final.text.startswith("And what") and len(final.text) > len("And what")
    assert final.message_id is None and len(conv.messages(chat_id)) == count


def test_remove_last_gives_back_the_question(conv):
    chat_id = conv.new_chat(ChatSettings())
    conv.store.add_message("alice", chat_id, "user", "first")
    conv.store.add_message("alice", chat_id, "assistant", "one")
    conv.store.add_message("alice", chat_id, "user", "second")
    conv.store.add_message("alice", chat_id, "assistant", "two")
    assert conv.remove_last(chat_id) == "second"
    assert [m["content"] for m in conv.messages(chat_id)] == ["first", "one"]
    conv.store.add_message("alice", chat_id, "user", "unanswered")
    assert conv.remove_last(chat_id) == "unanswered"
    assert conv.remove_last(chat_id) == "first"
    with pytest.raises(CorralError, match="no messages"):
        conv.remove_last(chat_id)


def test_edit_a_question_and_regenerate_from_there(ctx, conv):
    setup = TurnSetup(params=GREEDY)
    chat_id = conv.new_chat(setup.settings)
    drain(conv.send(chat_id, "What is the capital of Spain?", setup, threading.Event()))
    drain(conv.send(chat_id, "And of Italy?", setup, threading.Event()))
    question = conv.messages(chat_id)[0]
    conv.edit_message(question["id"], QUESTION)
    final = drain(conv.regenerate_from(chat_id, question["id"], setup, threading.Event()))[-1]
    messages = conv.messages(chat_id)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == QUESTION and messages[1]["content"] == final.text
    assert final.text == plain_reply(ctx, prompt_history(messages[:1]), Turn(), setup).lstrip()


def test_chat_mode_opens_with_the_characters_greeting_and_uses_its_context(ctx, conv):
    ctx.store.save_character("alice", "Captain", "Ahoy, {{user}}!", "{{char}} is a pirate captain.")
    character = load_character(ctx, "alice", "Captain")
    settings = ChatSettings(mode="chat", character=character, user_name="Ann")
    chat_id = conv.new_chat(settings, "Captain")
    assert [(m["role"], m["content"]) for m in conv.messages(chat_id)] == [("assistant", "Ahoy, Ann!")]
    assert ctx.store.get_chat("alice", chat_id)["character"] == "Captain"
    request, _ = chat_request(ctx, prompt_history(conv.messages(chat_id)), Turn(user_message="Hi"), settings, GREEDY)
    assert request.prompt.startswith("Captain is a pirate captain.") and "Captain: Ahoy, Ann!" in request.prompt
    setup = TurnSetup(settings, GREEDY, character_name="Captain")
    final = drain(conv.send(chat_id, "Where are we sailing?", setup, threading.Event()))[-1]
    assert "Ann:" not in final.text and conv.messages(chat_id)[-1]["content"] == final.text
    drain(conv.send(chat_id, "Thanks.", TurnSetup(ChatSettings(mode="instruct"), GREEDY), threading.Event()))
    chat = ctx.store.get_chat("alice", chat_id)
    assert (chat["mode"], chat["character"]) == ("instruct", None)  # the chat remembers how it was last used


def test_characters_come_from_files_too_and_bad_names_are_refused(ctx):
    (ctx.config.characters_dir / "Sage.yaml").write_text("name: Sage\ngreeting: Hello.\ncontext: Wise.\n")
    assert load_character(ctx, "alice", "Sage") == Character(name="Sage", greeting="Hello.", context="Wise.")
    assert load_character(ctx, "alice", None) is None
    with pytest.raises(NotFoundError, match="Nobody"):
        load_character(ctx, "alice", "Nobody")
    with pytest.raises(CorralError, match="not allowed"):
        load_character(ctx, "alice", "../../etc/passwd")


def test_another_user_cannot_touch_the_chat(ctx, conv):
    chat_id = conv.new_chat(ChatSettings())
    conv.store.add_message("alice", chat_id, "user", "secret")
    bob = Conversation(ctx, "bob")
    with pytest.raises(NotFoundError):
        drain(bob.send(chat_id, "hello", TurnSetup(params=GREEDY), threading.Event()))
    with pytest.raises(NotFoundError):
        drain(bob.regenerate(chat_id, TurnSetup(params=GREEDY), threading.Event()))
    with pytest.raises(NotFoundError):
        bob.remove_last(chat_id)
    assert [m["content"] for m in conv.messages(chat_id)] == ["secret"]


def test_writer_writes_every_n_tokens_or_seconds_and_at_the_end(tmp_path: Path):
    now = [0.0]
    with Store(tmp_path / "db.sqlite") as store:
        chat_id = store.create_chat("u", "c")
        writer = ReplyWriter(store, "u", lambda text: store.add_message("u", chat_id, "assistant", text),
                             every_tokens=3, every_seconds=1.0, clock=lambda: now[0])
        writer.update("", 1)  # nothing to keep yet: no message is created
        assert writer.message_id is None and store.get_chat("u", chat_id)["messages"] == []
        writer.update("a", 1)
        writer.update("ab", 1)
        assert writer.message_id is not None and writer.writes == 1
        writer.update("abc", 1)
        assert writer.writes == 1  # one token since the last write, no time passed
        now[0] = 1.5
        writer.update("abcd", 1)
        assert writer.writes == 2
        writer.flush("abcde")
        writer.flush("abcde")
        assert writer.writes == 3
        assert store.get_chat("u", chat_id)["messages"][0]["content"] == "abcde"
