"""Per-browser state that cannot live in gr.State: the cancel event of the running reply.

Keyed by Gradio's session hash (one per open page), so Stop in one browser
never stops another's reply, and one page cannot start a second reply while
its first is still being written.
"""
from __future__ import annotations

import threading


class CancelRegistry:
    """One cancel event per browser session, and whether that session's reply is running."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def fresh(self, session: str) -> threading.Event:
        """A new cancel event for ``session`` (replacing the old one), running or not."""
        with self._lock:
            event = threading.Event()
            self._events[session] = event
            return event

    def begin(self, session: str) -> threading.Event | None:
        """A cancel event for a new reply, or None while this session's last reply still runs."""
        with self._lock:
            if session in self._running:
                return None
            event = threading.Event()
            self._events[session] = self._running[session] = event
            return event

    def end(self, session: str, event: threading.Event) -> None:
        with self._lock:
            if self._running.get(session) is event:
                del self._running[session]

    def running(self, session: str) -> bool:
        with self._lock:
            return session in self._running

    def cancel(self, session: str) -> bool:
        with self._lock:
            event = self._events.get(session)
        if event is None:
            return False
        event.set()
        return True
