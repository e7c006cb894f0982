"""Chat turns over the store: what the chat page's buttons do, with no screen attached.

Send, regenerate (a new version of the last reply; the old ones are kept),
continue, impersonate, remove last, edit a message and regenerate from there,
"start reply with". Each turn is persisted as it happens: the user's message at
once, the reply while it streams (every few tokens or half a second, and at the
end), so a stopped reply -- or a browser closed mid-reply -- keeps what was
written. Every reply records the model that wrote it. Generation goes through
``generation.prepare_chat`` and ``generation.run_generation`` only, so the
extensions' hooks apply: the stored user message is the hooks' prompt form (and
their shown form), a reply's shown text is its output_modifier result.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from modules.core.character_cards import parse_character_file
from modules.core.chat import Character, ChatSettings, Turn, fill_names
from modules.core.context import Context
from modules.core.engine import Delta
from modules.core.errors import CorralError
from modules.core.generation import PreparedGeneration, prepare_chat, run_generation
from modules.core.paths import check_name
from modules.core.sampling import SamplerParams
from modules.core.store import NotFoundError, Store
from modules.core.store.chats import DEFAULT_TITLE

TITLE_CHARS = 48
CHARACTER_SUFFIXES = (".yaml", ".yml", ".json", ".png")


@dataclass
class TurnSetup:
    """How to generate this turn: the settings the screen's controls hold right now."""

    settings: ChatSettings = field(default_factory=ChatSettings)
    params: SamplerParams = field(default_factory=SamplerParams)
    format_name: str | None = None  # None: the loaded model's own format
    start_reply_with: str = ""
    state: dict[str, Any] = field(default_factory=dict)  # the controls' values: extensions' ``state``
    character_name: str | None = None  # the chosen character's stored name (chat modes)


@dataclass
class ReplyStats:
    """What is shown under a reply: speed, length, and how full the context is."""

    tokens_per_second: float
    completion_tokens: int
    context_used: int
    context_length: int
    model: str | None
    finish_reason: str | None = None

    @classmethod
    def from_delta(cls, delta: Delta, context_length: int, model: str | None) -> ReplyStats:
        return cls(delta.tokens_per_second, delta.completion_tokens,
                   delta.prompt_tokens + delta.completion_tokens, context_length, model, delta.finish_reason)

    def line(self) -> str:
        """'12.3 tokens/s · 45 tokens · context 120/8192 · SmolLM2-135M-Instruct'."""
        parts = [f"{self.tokens_per_second:.1f} tokens/s", f"{self.completion_tokens} tokens",
                 f"context {self.context_used}/{self.context_length}"]
        if self.model:
            parts.append(self.model)
        if self.finish_reason == "cancelled":
            parts.append("stopped")
        elif self.finish_reason == "length":
            parts.append("hit the new-token limit (Continue for more)")
        return " · ".join(parts)


@dataclass
class Progress:
    """One step of a streaming reply (or impersonated message), for a screen to show."""

    text: str  # the whole text so far
    message_id: int | None  # where it is stored; None before the first write, and for impersonate
    stats: ReplyStats | None = None
    done: bool = False
    warnings: list[str] = field(default_factory=list)


class ReplyWriter:
    """Keeps a streaming reply in the store: every ``every_tokens`` tokens or ``every_seconds``, and at the end.

    The message (or version) is created by ``start`` on the first non-empty
    text, so a reply stopped before its first token leaves nothing behind.
    """

    def __init__(self, store: Store, user: str, start: Callable[[str], int] | None = None,
                 message_id: int | None = None, every_tokens: int = 8, every_seconds: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.user, self.start, self.message_id = store, user, start, message_id
        self.every_tokens, self.every_seconds, self.clock = every_tokens, every_seconds, clock
        self.writes = 0
        self._written: str | None = None
        self._pending_tokens = 0
        self._last_write = clock()

    def update(self, text: str, new_tokens: int) -> None:
        self._pending_tokens += new_tokens
        due = self._pending_tokens >= self.every_tokens or self.clock() - self._last_write >= self.every_seconds
        if due:
            self.flush(text)

    def flush(self, text: str) -> int | None:
        if text == self._written:
            return self.message_id
        if self.message_id is None:
            if not text or self.start is None:
                return None
            self.message_id = self.start(text)
        else:
            self.store.update_message(self.user, self.message_id, content=text, visible=text)
        self._written, self._pending_tokens, self._last_write = text, 0, self.clock()
        self.writes += 1
        return self.message_id


def prompt_history(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Stored messages in prompt form (``content``, not the shown text); system notes left out."""
    return [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] in ("user", "assistant")]


def title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1].rstrip() + "…"


class Conversation:
    """One user's chats: every turn of the chat page, persisted as it happens."""

    def __init__(self, ctx: Context, user: str, every_tokens: int = 8, every_seconds: float = 0.5) -> None:
        if ctx.store is None:
            raise CorralError("No chat database is open, so chats cannot be saved. Start Corral with app.py.")
        self.ctx, self.store, self.user = ctx, ctx.store, check_name(user, "user")
        self.every_tokens, self.every_seconds = every_tokens, every_seconds

    # -- chats -------------------------------------------------------------------------
    def new_chat(self, settings: ChatSettings, character_name: str | None = None) -> int:
        """A new chat; in the chat modes it opens with the character's greeting."""
        chat_id = self.store.create_chat(self.user, DEFAULT_TITLE, settings.mode, character_name)
        greeting = settings.character.greeting.strip() if settings.mode != "instruct" else ""
        if greeting:
            text = fill_names(greeting, settings.character.name, settings.user_name)
            state = {"chat_id": chat_id, "user": self.user, "interface": "chat"}
            shown = self.ctx.extensions.turn(state=state, is_chat=True).output_modifier(text, state, True)
            self.store.add_message(self.user, chat_id, "assistant", text, visible=shown)
        return chat_id

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        return self.store.get_chat(self.user, chat_id)["messages"]

    # -- turns -------------------------------------------------------------------------
    def send(self, chat_id: int, text: str, setup: TurnSetup, cancel: threading.Event) -> Iterator[Progress]:
        """Store the user's message at once, then stream and store the reply."""
        if not text.strip():
            raise CorralError("The message is empty. Type something to send.")
        chat = self.store.get_chat(self.user, chat_id)
        turn = Turn(user_message=text, bot_prefix=setup.start_reply_with)
        prepared = self._prepare(chat_id, prompt_history(chat["messages"]), turn, setup)
        self.store.add_message(self.user, chat_id, "user", prepared.user_text or text,
                               visible=prepared.visible_text or text)
        if chat["title"] == DEFAULT_TITLE and not any(m["role"] == "user" for m in chat["messages"]):
            self.store.rename_chat(self.user, chat_id, title_from(text))
        used = (setup.settings.mode, setup.character_name if setup.settings.mode != "instruct" else None)
        if (chat["mode"], chat["character"]) != used:  # reopening the chat restores what it is used with
            self.store.set_chat_mode(self.user, chat_id, *used)
        yield from self._new_reply(chat_id, setup, cancel, prepared)

    def regenerate(self, chat_id: int, setup: TurnSetup, cancel: threading.Event) -> Iterator[Progress]:
        """A new version of the last reply (earlier versions are kept); a reply if the user spoke last."""
        messages = self.messages(chat_id)
        if not messages:
            raise CorralError("There is nothing to regenerate yet: send a message first.")
        last = messages[-1]
        if last["role"] != "assistant":
            yield from self._new_reply(chat_id, setup, cancel)
            return
        model = self.ctx.models.loaded_name

        def start(text: str) -> int:
            self.store.add_version(self.user, last["id"], text, model=model)
            return last["id"]

        turn = Turn(bot_prefix=setup.start_reply_with)
        yield from self._stream(prompt_history(messages[:-1]), turn, setup, cancel,
                                self._writer(start=start), setup.start_reply_with, chat_id=chat_id)

    def continue_reply(self, chat_id: int, setup: TurnSetup, cancel: threading.Event) -> Iterator[Progress]:
        """Let the model go on writing the last reply, in place."""
        messages = self.messages(chat_id)
        if not messages or messages[-1]["role"] != "assistant":
            raise CorralError("There is no reply to continue. Send a message (or Regenerate) first.")
        last = messages[-1]
        turn = Turn(continue_reply=last["content"])
        writer = self._writer(message_id=last["id"])
        yield from self._stream(prompt_history(messages[:-1]), turn, setup, cancel, writer, last["content"],
                                strip=False, chat_id=chat_id)

    def impersonate(self, chat_id: int | None, partial: str, setup: TurnSetup,
                    cancel: threading.Event) -> Iterator[Progress]:
        """The model writes the user's next message (starting from ``partial``); nothing is stored."""
        history = prompt_history(self.messages(chat_id)) if chat_id is not None else []
        turn = Turn(impersonate=True, continue_reply=partial or None)
        yield from self._stream(history, turn, setup, cancel, self._writer(), partial, strip=not partial,
                                chat_id=chat_id)

    def preview(self, chat_id: int | None, text: str, setup: TurnSetup) -> PreparedGeneration:
        """What the next turn would send, built exactly as it will be (hooks included); nothing stored.

        With ``text``: a reply to it. Without: the reply behind the last one (as Regenerate makes it),
        or the reply to a last user message.
        """
        messages = self.messages(chat_id) if chat_id is not None else []
        if text.strip():
            turn = Turn(user_message=text, bot_prefix=setup.start_reply_with)
            return self._prepare(chat_id, prompt_history(messages), turn, setup)
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        return self._prepare(chat_id, prompt_history(messages), Turn(bot_prefix=setup.start_reply_with), setup)

    def remove_last(self, chat_id: int) -> str:
        """Remove the last reply and the user message it answered; returns that message's text."""
        messages = self.messages(chat_id)
        if not messages:
            raise CorralError("This chat has no messages to remove.")
        cut = len(messages) - 1
        if messages[cut]["role"] == "assistant" and cut > 0 and messages[cut - 1]["role"] == "user":
            cut -= 1
        self.store.truncate_after(self.user, chat_id, messages[cut - 1]["id"] if cut > 0 else None)
        return messages[cut]["visible"] if messages[cut]["role"] == "user" else ""

    def edit_message(self, message_id: int, text: str) -> None:
        """Rewrite a message's text (both what the prompt uses and what is shown)."""
        self.store.update_message(self.user, message_id, content=text, visible=text)

    def regenerate_from(self, chat_id: int, message_id: int, setup: TurnSetup,
                        cancel: threading.Event) -> Iterator[Progress]:
        """Drop every message after ``message_id``, then reply to it (or regenerate it, if a reply)."""
        self.store.truncate_after(self.user, chat_id, message_id)
        yield from self.regenerate(chat_id, setup, cancel)

    # -- the one generation loop ---------------------------------------------------------
    def _writer(self, start: Callable[[str], int] | None = None, message_id: int | None = None) -> ReplyWriter:
        return ReplyWriter(self.store, self.user, start, message_id, self.every_tokens, self.every_seconds)

    def _new_reply(self, chat_id: int, setup: TurnSetup, cancel: threading.Event,
                   prepared: PreparedGeneration | None = None) -> Iterator[Progress]:
        model = self.ctx.models.loaded_name

        def start(text: str) -> int:
            return self.store.add_message(self.user, chat_id, "assistant", text, model=model)

        history = prompt_history(self.messages(chat_id))
        yield from self._stream(history, Turn(bot_prefix=setup.start_reply_with), setup, cancel,
                                self._writer(start=start), setup.start_reply_with, prepared=prepared, chat_id=chat_id)

    def _prepare(self, chat_id: int | None, history: list[dict], turn: Turn, setup: TurnSetup) -> PreparedGeneration:
        """The turn through the extensions' input hooks; they see the chat as ``state["chat_id"]``."""
        state = {**setup.state, "chat_id": chat_id, "user": self.user}
        return prepare_chat(self.ctx, history, turn, setup.settings, setup.params, setup.format_name, state=state)

    def _stream(self, history: list[dict], turn: Turn, setup: TurnSetup, cancel: threading.Event,
                writer: ReplyWriter, prefix: str = "", strip: bool = True,
                prepared: PreparedGeneration | None = None, chat_id: int | None = None) -> Iterator[Progress]:
        """Generate, showing and storing ``prefix`` + the new text; the store gets the last word even if
        the caller stops reading (a closed browser) or the generation fails half-way."""
        prepared = prepared or self._prepare(chat_id, history, turn, setup)
        prepared.request.cancel = cancel
        prepared.reply_prefix, prepared.lstrip_reply = prefix, strip
        generation = run_generation(self.ctx, prepared)
        model = self.ctx.models.loaded_name
        context_length = setup.params.truncation_length or self.ctx.engine.context_length
        generated, last, warnings = "", Delta(), [str(n) for n in prepared.notices]
        text = prefix
        try:
            with closing(iter(generation)) as deltas:
                for delta in deltas:
                    generated += delta.text
                    text = prefix + (generated.lstrip() if strip and not prefix else generated)
                    last = delta
                    warnings += delta.warnings
                    writer.update(text, len(delta.token_ids))
                    if delta.finish_reason is None:
                        yield Progress(text, writer.message_id,
                                       ReplyStats.from_delta(delta, context_length, model), warnings=warnings)
        finally:
            writer.flush(text)
        shown = generation.shown if generation.finished and generation.reply == text else text
        if shown != text and writer.message_id is not None:
            self.store.update_message(self.user, writer.message_id, visible=shown)
        warnings += [str(n) for n in generation.notices if str(n) not in warnings]
        yield Progress(shown, writer.message_id, ReplyStats.from_delta(last, context_length, model), True, warnings)


def load_character(ctx: Context, user: str, name: str | None) -> Character | None:
    """The user's character ``name`` from the store, else a character file in characters/."""
    if not name:
        return None
    name = check_name(name, "character")
    if ctx.store is not None:
        try:
            found = ctx.store.get_character(user, name)
            return Character(name=found["name"], greeting=found["greeting"], context=found["context"])
        except NotFoundError:
            pass
    for suffix in CHARACTER_SUFFIXES:
        path = ctx.config.characters_dir / f"{name}{suffix}"
        if path.is_file():
            fields = parse_character_file(path.name, path.read_bytes())
            return Character(name=fields["name"], greeting=fields["greeting"], context=fields["context"])
    raise NotFoundError(f"Character {name!r} was not found. Create it on the Characters tab or pick another one.")
