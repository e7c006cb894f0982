"""Incremental decoding and stop strings.

Text is released to the client only when it can no longer change: bytes of a
multi-byte character wait for the rest, and a tail that could be the start of
a stop string waits until it is clearly not one.
"""
from __future__ import annotations

from typing import Callable


class IncrementalDecoder:
    """Turns token ids into text one step at a time, without splitting characters.

    Decodes a sliding window of recent tokens (decoding one token alone loses
    leading spaces with SentencePiece) and emits only the new stable suffix.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the window
        self._read_offset = 0  # tokens already turned into emitted text

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset:self._read_offset])
        full = self._decode(self._ids[self._prefix_offset:])
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return ""  # an incomplete character: wait for its other bytes
        new_text = full[len(prefix):]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text


class StopStringFilter:
    """Holds back text that might be the beginning of a stop string."""

    def __init__(self, stop_strings: list[str]) -> None:
        self.stops = [s for s in stop_strings if s]
        self._pending = ""
        self.stopped_by: str | None = None

    def push(self, text: str) -> str:
        """Add text; return what is safe to show. After a stop string, nothing more."""
        if self.stopped_by is not None:
            return ""
        self._pending += text
        cut = self._earliest_stop()
        if cut is not None:
            index, stop = cut
            self.stopped_by = stop
            out, self._pending = self._pending[:index], ""
            return out
        keep = self._longest_partial_tail()
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep:]
        return out

    def flush(self) -> str:
        """At the end of generation the held-back tail was not a stop string after all."""
        out, self._pending = self._pending, ""
        return "" if self.stopped_by is not None else out

    def _earliest_stop(self) -> tuple[int, str] | None:
        found = [(self._pending.find(s), s) for s in self.stops if s in self._pending]
        return min(found) if found else None

    def _longest_partial_tail(self) -> int:
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self._pending)), 0, -1):
                if self._pending.endswith(stop[:size]):
                    longest = max(longest, size)
                    break
        return longest
