"""What went wrong with extensions, kept where the UI, the API and the log can all read it.

Two kinds of failure, both survivable: an extension that could not load (listed
as failed, with the pip command when a package is missing), and a hook that
raised during a turn (that hook is skipped for that turn, the reply still
arrives, and a notice names the extension and the hook).
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

from modules.core.errors import CorralError

log = logging.getLogger("corral.extensions")

RECENT_NOTICES = 50


class ExtensionError(CorralError):
    """An extension could not be loaded or enabled."""


@dataclass(frozen=True)
class Notice:
    """One hook failure: which extension, which hook, what it raised."""

    extension: str
    hook: str
    message: str
    at: float = field(default_factory=time.time)

    def __str__(self) -> str:
        return (f"Extension '{self.extension}' failed in {self.hook}(): {self.message} "
                f"Its {self.hook} was skipped for this reply; the reply still went on.")


def describe(err: BaseException) -> str:
    """``TypeName: message`` plus the innermost frame, so an author can find the line."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = str(err).strip() or "no message"
    return f"{type(err).__name__}: {text}{where}."


class ExtensionReport:
    """Load failures by extension name, and the most recent hook notices (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failed: dict[str, str] = {}
        self._notices: deque[Notice] = deque(maxlen=RECENT_NOTICES)

    def load_failed(self, name: str, message: str) -> None:
        log.error("Extension %r was not loaded: %s", name, message)
        with self._lock:
            self._failed[name] = message

    def loaded(self, name: str) -> None:
        with self._lock:
            self._failed.pop(name, None)

    def failed(self) -> dict[str, str]:
        """Extension name -> why it is not loaded (what to do is part of the message)."""
        with self._lock:
            return dict(self._failed)

    def hook_failed(self, extension: str, hook: str, err: BaseException) -> Notice:
        notice = Notice(extension, hook, describe(err))
        log.error("%s", notice, exc_info=(type(err), err, err.__traceback__))
        with self._lock:
            self._notices.append(notice)
        return notice

    def hook_misbehaved(self, extension: str, hook: str, message: str) -> Notice:
        """A hook returned something unusable (wrong type); treated like a failure."""
        notice = Notice(extension, hook, message)
        log.error("%s", notice)
        with self._lock:
            self._notices.append(notice)
        return notice

    def recent(self, limit: int = 10) -> list[Notice]:
        with self._lock:
            return list(self._notices)[-limit:]
