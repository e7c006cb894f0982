"""Chat modes and prompt building: instruct, chat (a character) and chat-instruct.

History is a list of ``{"role": "user"|"assistant", "content": str}`` turns in
prompt form (what the model sees; the UI keeps the shown form separately).
Truncation drops the oldest turns first and always keeps the system text and
the character's context.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from modules.core.errors import TemplateError
from modules.core.prompt_render import continuation_segments, impersonation_segments, render_segments
from modules.core.prompt_tokens import Segment, joined, trusted_text, untrusted_text
from modules.core.templates import InstructionFormat

MODES = ("instruct", "chat", "chat-instruct")
DEFAULT_CHAT_INSTRUCT = ('Continue the chat dialogue below. Write a single reply for the character '
                         '"<|character|>".\n\n<|prompt|>')


@dataclass
class Character:
    name: str = "Assistant"
    greeting: str = ""
    context: str = ""


@dataclass
class ChatSettings:
    mode: str = "instruct"
    system: str | None = None  # None: the format's default system text
    character: Character = field(default_factory=Character)
    user_name: str = "You"
    user_bio: str = ""
    chat_instruct_command: str = DEFAULT_CHAT_INSTRUCT


@dataclass
class PromptPlan:
    prompt: str
    stop_strings: list[str]
    dropped_turns: int = 0  # oldest history turns left out to fit the context
    segments: list[Segment] | None = None  # None: the whole prompt is the author's (an extension's own prompt)

    @property
    def prompt_segments(self) -> list[Segment]:
        return self.segments if self.segments is not None else trusted_text(self.prompt)


@dataclass
class Turn:
    """What to build: a reply to ``user_message``, a continuation, or the user's next line."""

    user_message: str | None = None
    continue_reply: str | None = None  # the partial reply to continue
    bot_prefix: str = ""  # "start reply with"
    impersonate: bool = False


def build_prompt(history: list[dict], turn: Turn, settings: ChatSettings, fmt: InstructionFormat,
                 count_tokens: Callable[[str], int], max_prompt_tokens: int,
                 bos_token: str = "", eos_token: str = "") -> PromptPlan:
    """The prompt for ``turn``, dropping the oldest turns until it fits ``max_prompt_tokens``."""
    if settings.mode not in MODES:
        raise TemplateError(f"Unknown chat mode {settings.mode!r}: choose one of {', '.join(MODES)}.")
    candidates = _drop_candidates(len(history))

    def build(index: int) -> tuple[list[Segment], list[str]]:
        return _build(history[candidates[index]:], turn, settings, fmt, bos_token, eos_token)

    def fits(built: tuple[list[Segment], list[str]]) -> bool:
        return count_tokens(joined(built[0])) <= max_prompt_tokens

    built = {0: build(0)}
    low, high = (0, 0) if len(candidates) == 1 or fits(built[0]) else (1, len(candidates) - 1)
    while low < high:  # the fewest dropped turns that fit: a prompt only shrinks as turns are dropped
        middle = (low + high) // 2
        built[middle] = build(middle)
        low, high = (low, middle) if fits(built[middle]) else (middle + 1, high)
    segments, stops = built[low] if low in built else build(low)
    return PromptPlan(joined(segments), stops, candidates[low], segments)


def _drop_candidates(turns: int) -> list[int]:
    """How many of the oldest turns may be left out: whole exchanges first, then everything."""
    candidates = list(range(0, turns + 1, 2))
    return candidates if candidates[-1] == turns else [*candidates, turns]


def _build(history: list[dict], turn: Turn, settings: ChatSettings, fmt: InstructionFormat,
           bos: str, eos: str) -> tuple[list[Segment], list[str]]:
    if settings.mode == "instruct":
        return _instruct(history, turn, settings, fmt, bos, eos), list(fmt.stop_strings)
    transcript, stops = _transcript(history, turn, settings)
    if settings.mode == "chat":
        return untrusted_text(transcript), stops
    command = settings.chat_instruct_command.replace("<|character|>", settings.character.name)
    wrapped = command.replace("<|prompt|>", transcript.rsplit("\n", 1)[0].rstrip("\n"))
    speaker = settings.user_name if turn.impersonate else settings.character.name
    partial = f"{speaker}:" + _partial_text(turn)
    messages = _system(settings) + [{"role": "user", "content": wrapped}]
    return continuation_segments(fmt, messages, partial, bos, eos), stops + list(fmt.stop_strings)


def _instruct(history: list[dict], turn: Turn, settings: ChatSettings, fmt: InstructionFormat,
              bos: str, eos: str) -> list[Segment]:
    messages = _system(settings) + [{"role": m["role"], "content": m["content"]} for m in history]
    if turn.user_message is not None:
        messages.append({"role": "user", "content": turn.user_message})
    if turn.impersonate:
        return impersonation_segments(fmt, messages, turn.continue_reply or "", bos, eos)
    if turn.continue_reply is not None or turn.bot_prefix:
        return continuation_segments(fmt, messages, _partial_text(turn), bos, eos)
    return render_segments(fmt, messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)


def _partial_text(turn: Turn) -> str:
    if turn.continue_reply is not None:
        return turn.continue_reply
    return turn.bot_prefix


def _system(settings: ChatSettings) -> list[dict]:
    return [{"role": "system", "content": settings.system}] if settings.system else []


def _transcript(history: list[dict], turn: Turn, settings: ChatSettings) -> tuple[str, list[str]]:
    """A character's context and a plain ``Name: text`` transcript ending where the reply starts."""
    char, user = settings.character.name, settings.user_name
    context = fill_names(settings.character.context, char, user).strip()
    lines = [f"{context}\n" if context else ""]
    for message in history:
        speaker = user if message["role"] == "user" else char
        lines.append(f"{speaker}: {message['content']}\n")
    if turn.user_message is not None:
        lines.append(f"{user}: {turn.user_message}\n")
    if turn.impersonate:
        lines.append(f"{user}:" + _spaced(turn.continue_reply or ""))
        return "".join(lines), [f"\n{char}:"]
    lines.append(f"{char}:" + _spaced(_partial_text(turn)))
    return "".join(lines), [f"\n{user}:", f"\n{char}:"]


def _spaced(text: str) -> str:
    return f" {text}" if text else ""


def fill_names(text: str, char: str, user: str) -> str:
    """Replace the ``{{char}}`` / ``{{user}}`` placeholders character cards use."""
    for token in ("{{char}}", "{{Char}}", "<BOT>"):
        text = text.replace(token, char)
    for token in ("{{user}}", "{{User}}", "<USER>"):
        text = text.replace(token, user)
    return text
