"""Sign-in: ``--gradio-auth user:pass`` (repeatable) and ``--gradio-auth-path FILE``.

Each signed-in user sees only their own chats and characters: every event
asks :func:`user_of` for the name to hand the store. Without sign-in everyone
is the one local user.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from modules.core.errors import BadNameError, CorralError
from modules.core.paths import check_name
from modules.core.store import DEFAULT_USER


def parse_credentials(text: str, source: str) -> list[tuple[str, str]]:
    """``user:pass`` pairs separated by commas or new lines; blank lines and ``#`` comments are skipped.

    A password may itself contain ':' (the first one splits). User names must be
    plain names, since they key each user's data.
    """
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for item in (part.strip() for part in line.split(",")):
            if item:
                pairs.append(_pair(item, source))
    return pairs


def _pair(item: str, source: str) -> tuple[str, str]:
    user, sep, password = item.partition(":")
    if not sep or not user.strip() or not password:
        raise CorralError(f"{source}: {item.split(':')[0]!r} is not 'user:password'. Write each one as user:password.")
    try:
        return check_name(user, "user"), password
    except BadNameError as err:
        raise CorralError(f"{source}: {err}") from None


def load_credentials(pairs: list[str] | None, path: str | Path | None) -> list[tuple[str, str]] | None:
    """Every ``user:pass`` from the flags and the file; None when sign-in is off."""
    found: list[tuple[str, str]] = []
    for item in pairs or []:
        found += parse_credentials(item, "--gradio-auth")
    if path:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as err:
            raise CorralError(f"--gradio-auth-path: cannot read {file} ({err.strerror}). Check the path.") from None
        found += parse_credentials(text, str(file))
        if not found:
            raise CorralError(f"--gradio-auth-path: {file} holds no user:password lines.")
    passwords: dict[str, str] = {}
    for user, password in found:
        if passwords.setdefault(user, password) != password:
            raise CorralError(f"Sign-in: user {user!r} is listed twice with different passwords. Keep one.")
    return list(passwords.items()) or None


def user_of(request: Any) -> str:
    """The signed-in user's name, or the local user when sign-in is off."""
    name = getattr(request, "username", None) if request is not None else None
    return name or DEFAULT_USER
