"""Safe names for user-editable files (chats, characters, presets, formats)."""
from __future__ import annotations

import re
from pathlib import Path

from modules.core.errors import BadNameError

_ALLOWED = re.compile(r"^[^/\\\x00-\x1f]+$")


def check_name(name: str, kind: str) -> str:
    """Return ``name`` stripped if it is a plain file name, else raise BadNameError.

    Refuses path separators, ``..``, absolute paths and control characters, so a
    name typed in the UI or sent to the API can never reach outside its folder.
    """
    if not isinstance(name, str):
        raise BadNameError(f"The {kind} name must be text, not {type(name).__name__}.")
    cleaned = name.strip()
    if not cleaned:
        raise BadNameError(f"The {kind} name is empty. Give it a name.")
    if cleaned in {".", ".."} or cleaned.startswith(".") or not _ALLOWED.match(cleaned) or Path(cleaned).is_absolute():
        raise BadNameError(
            f"{kind.capitalize()} name {name!r} is not allowed: use a plain name without "
            "'/', '\\', a leading '.', or '..'."
        )
    if len(cleaned) > 200:
        raise BadNameError(f"The {kind} name is too long (at most 200 characters).")
    return cleaned


def file_in(folder: Path, name: str, suffix: str, kind: str) -> Path:
    """The path of ``name + suffix`` inside ``folder``, after checking the name."""
    cleaned = check_name(name, kind)
    path = (folder / f"{cleaned}{suffix}").resolve()
    if path.parent != folder.resolve():
        raise BadNameError(f"{kind.capitalize()} name {name!r} points outside {folder}.")
    return path
