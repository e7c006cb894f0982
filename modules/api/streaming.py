"""Generation off the event loop, server-sent events, and cancelling when the client hangs up.

Why a thread of our own per request rather than starlette's ``iterate_in_threadpool``: the
engine's iterator releases the model (its queue turn) only when it runs to its end. A
thread that owns the iterator always runs it to the end -- promptly, since a hang-up sets the
request's cancel event and the engine stops within a token -- whereas a cancelled task would
leave a suspended generator holding the model until garbage collection.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any, AsyncIterator, Callable, Iterator

from fastapi import Request

from modules.api.errors import ApiError, from_corral_error
from modules.core.engine import Delta
from modules.core.errors import CorralError

log = logging.getLogger(__name__)
_END = object()
_NOTHING = object()  # no delta arrived before the next hang-up check
POLL_SECONDS = 0.25  # how often a non-streaming request checks whether its client is still there


class ClientGone(Exception):
    """The client closed the connection before the reply was complete."""


class DeltaPump:
    """Runs a blocking iterator of deltas in a thread; the event loop reads them from a queue."""

    def __init__(self, deltas: Iterator[Delta], cancel: threading.Event) -> None:
        self.cancel = cancel
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, args=(deltas,), name="api-generation", daemon=True)
        self._thread.start()

    def _run(self, deltas: Iterator[Delta]) -> None:
        try:
            for delta in deltas:
                self._put(delta)
        except BaseException as err:  # noqa: BLE001 - handed to the reader, which answers with it
            self._put(err)
        finally:
            self._put(_END)

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server stopping): nobody reads, stop generating
            self.cancel.set()

    async def next(self, timeout: float | None = None) -> Delta | None:
        """The next delta; None at the end. Raises what the generation raised, or TimeoutError."""
        item = await asyncio.wait_for(self._queue.get(), timeout) if timeout else await self._queue.get()
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def __aiter__(self) -> AsyncIterator[Delta]:
        while (delta := await self.next()) is not None:
            yield delta


async def collect(pump: DeltaPump, request: Request) -> list[Delta]:
    """Every delta of a non-streaming reply; a client that hangs up cancels the generation.

    The hang-up check runs every ``POLL_SECONDS`` whether tokens are arriving or not: a
    steady stream of tokens must not hide a client that left.
    """
    deltas: list[Delta] = []
    loop = asyncio.get_running_loop()
    next_check = loop.time() + POLL_SECONDS
    while True:
        try:
            delta = await pump.next(max(0.001, next_check - loop.time()))
        except (TimeoutError, asyncio.TimeoutError):
            delta = _NOTHING
        if loop.time() >= next_check:
            if await request.is_disconnected():
                pump.cancel.set()
                raise ClientGone() from None
            next_check = loop.time() + POLL_SECONDS
        if delta is None:
            return deltas
        if delta is not _NOTHING:
            deltas.append(delta)


def sse(data: Any) -> str:
    """One server-sent event: ``data: <json>`` and a blank line (``[DONE]`` goes as it is)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n"


def error_event(err: BaseException) -> str:
    if not isinstance(err, CorralError):
        log.error("A streamed generation failed", exc_info=err)
    api_error = from_corral_error(err) if isinstance(err, CorralError) else \
        ApiError(500, f"The generation failed: {type(err).__name__}: {err}. See the server log.", "server_error")
    return sse(api_error.body())


async def event_stream(pump: DeltaPump, head: list[dict], chunks: Callable[[Delta], list[dict]],
                       tail: Callable[[], list[dict]]) -> AsyncIterator[str]:
    """SSE text: the head chunks at once, each delta's chunks, the tail chunks, then ``[DONE]``.

    When the client hangs up, the response task is cancelled inside this generator; the
    ``finally`` then sets the cancel event and the engine lets go of the model within a token.
    """
    try:
        for chunk in head:
            yield sse(chunk)
        try:
            async for delta in pump:
                for chunk in chunks(delta):
                    yield sse(chunk)
            for chunk in tail():
                yield sse(chunk)
        except Exception as err:  # noqa: BLE001 - headers are sent; the error travels as an event
            yield error_event(err)
            return
        yield sse("[DONE]")
    finally:
        pump.cancel.set()
