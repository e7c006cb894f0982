"""Per-browser state that cannot live in gr.State: the cancel event of the running reply."""
from __future__ import annotations

import threading


class CancelRegistry:
    """One cancel event per browser session, so Stop stops only that browser's reply."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def fresh(self, session: str) -> threading.Event:
        with self._lock:
            event = threading.Event()
            self._events[session] = event
            return event

    def cancel(self, session: str) -> bool:
        with self._lock:
            event = self._events.get(session)
        if event is None:
            return False
        event.set()
        return True
