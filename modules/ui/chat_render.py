"""Stored chats as the chat page shows them: Chatbot messages, the version pager, the chat list.

Pure functions over the store's dicts (no gradio), so they are easy to test.
The Chatbot shows user and assistant messages only; index ``i`` of the
Chatbot is ``shown_messages(messages)[i]`` of the store.
"""
from __future__ import annotations

import re
from typing import Any

SHOWN_ROLES = ("user", "assistant")


def shown_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["role"] in SHOWN_ROLES]


def chatbot_value(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The Chatbot's messages-format value: the shown text of each message."""
    return [{"role": m["role"], "content": m["visible"]} for m in shown_messages(messages)]


def pager_target(messages: list[dict[str, Any]], selected: int | None) -> int | None:
    """The Chatbot index the version pager and Branch act on: the clicked message, else the last one."""
    shown = shown_messages(messages)
    if selected is not None and 0 <= selected < len(shown):
        return selected
    return len(shown) - 1 if shown else None


def pager_label(messages: list[dict[str, Any]], target: int | None) -> str | None:
    """'version 2/3' for a message with several versions; None hides the pager."""
    if target is None:
        return None
    message = shown_messages(messages)[target]
    count = len(message["versions"])
    if count < 2:
        return None
    return f"version {message['selected_version'] + 1}/{count}"


def chat_choices(chats: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(label, id) pairs for the chat list; titles may repeat, so the label is just the title."""
    return [(chat["title"], chat["id"]) for chat in chats]


def export_file_name(title: str, suffix: str) -> str:
    """A safe file name for an exported chat: letters, digits, '-', '_' and spaces."""
    stem = re.sub(r"[^\w\- ]+", "", title, flags=re.UNICODE).strip()[:60] or "chat"
    return f"{stem}{suffix}"
