"""The engine: the one place that generates.

Every caller (chat UI, notebook, API, extensions) asks the engine. Requests to a
Transformers model run concurrently, sharing decode steps (``batching.py``);
remote servers get them concurrently too; other backends (llama.cpp) queue them
fairly, one generation at a time. It streams typed deltas, applies stop strings, EOS and max_new_tokens, truncates prompts to the
context, cancels within one token, and counts tokens and speed.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from modules.core.batching import Batcher, batcher_for
from modules.core.errors import CancelledError, EmptyPromptError, NoModelLoadedError
from modules.core.loaders.base import Backend
from modules.core.sampling import SamplerParams, unsupported_parameters
from modules.core.streaming import IncrementalDecoder, StopStringFilter

log = logging.getLogger(__name__)


@dataclass
class GenerationRequest:
    """One generation. ``prompt`` is the full prompt text (templates already applied)."""

    prompt: str
    params: SamplerParams = field(default_factory=SamplerParams)
    stop_strings: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    input_ids: list[int] | None = None  # when given, used instead of tokenizing ``prompt``
    logits_processors: list = field(default_factory=list)  # extra processors (extensions)


@dataclass
class Delta:
    """A piece of the reply. The last delta of a stream has ``finish_reason`` set."""

    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stopped_by: str | None = None  # the stop string that ended the reply
    seconds: float = 0.0  # from start of generation to this delta
    first_token_seconds: float | None = None
    truncated_prompt_tokens: int = 0  # tokens cut from the start of the prompt to fit

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class FairQueue:
    """First come, first served: one holder at a time, waiters in arrival order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()

    def acquire(self, cancel: threading.Event) -> object:
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            while self._waiting[0] is not ticket:
                if cancel.is_set():
                    self._waiting.remove(ticket)
                    self._cond.notify_all()
                    raise CancelledError("The request was cancelled while it waited in the queue.")
                self._cond.wait(timeout=0.05)
        return ticket

    def release(self, ticket: object) -> None:
        with self._cond:
            if self._waiting and self._waiting[0] is ticket:
                self._waiting.popleft()
            self._cond.notify_all()

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._waiting)


class SwapGate:
    """Generations pass side by side; a model swap waits for all of them and holds new ones back."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._swapping = False

    def enter(self, cancel: threading.Event) -> None:
        with self._cond:
            while self._swapping:
                if cancel.is_set():
                    raise CancelledError("The request was cancelled while the model was being swapped.")
                self._cond.wait(timeout=0.05)
            self._inside += 1

    def leave(self) -> None:
        with self._cond:
            self._inside -= 1
            self._cond.notify_all()

    @contextmanager
    def swap(self) -> Iterator[None]:
        """Hold new generations back and wait for the running ones to end; the body swaps the model."""
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._swapping = True
            while self._inside:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


class Engine:
    """Holds the loaded backend and generates with it."""

    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.batcher: Batcher | None = None  # batches a Transformers backend's concurrent requests
        self.queue = FairQueue()  # one at a time, for backends that are not batched
        self._gate = SwapGate()
        self._active: set[threading.Event] = set()
        self._active_lock = threading.Lock()

    # -- model -----------------------------------------------------------------
    def set_backend(self, backend: Backend | None) -> None:
        """Swap the model; waits for the running generations to end first."""
        with self._gate.swap():
            old, self.backend = self.backend, backend
            self._choose_batching()
            if old is not None:
                old.unload()

    def refresh_batching(self) -> None:
        """Decide again whether requests are batched, after the backend's decoding path changed
        (the compiled static-cache path serves one request at a time); waits for running generations."""
        with self._gate.swap():
            self._choose_batching()

    def _choose_batching(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.batcher = batcher_for(self.backend) if self.backend is not None else None

    def require_backend(self) -> Backend:
        if self.backend is None:
            raise NoModelLoadedError("No model is loaded. Choose one on the Model tab (or start with --model NAME).")
        return self.backend

    @property
    def context_length(self) -> int:
        return self.require_backend().info.context_length

    def count_tokens(self, text: str) -> int:
        return self.require_backend().count_tokens(text)

    @property
    def busy(self) -> int:
        """Requests inside the engine, waiting for their turn or generating (batched ones included)."""
        with self._active_lock:
            return len(self._active)

    def stop_all(self) -> int:
        """Cancel every running or queued request; returns how many were told."""
        with self._active_lock:
            events = list(self._active)
        for event in events:
            event.set()
        return len(events)

    # -- generation --------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> Iterator[Delta]:
        """Stream deltas for ``request``; waits its turn in the queue first."""
        with self._active_lock:
            self._active.add(request.cancel)
        ticket = None
        try:
            self._gate.enter(request.cancel)
            if not self._concurrent():
                try:
                    ticket = self.queue.acquire(request.cancel)
                except CancelledError:
                    self._gate.leave()
                    raise
        except CancelledError:
            with self._active_lock:
                self._active.discard(request.cancel)
            yield Delta(finish_reason="cancelled")
            return
        try:
            backend = self.require_backend()
            yield from self._run(backend, request)
        finally:
            if ticket is not None:
                self.queue.release(ticket)
            self._gate.leave()
            with self._active_lock:
                self._active.discard(request.cancel)

    def _concurrent(self) -> bool:
        """Whether requests may run side by side: batched locally, or sent on to a remote server."""
        return self.batcher is not None or bool(self.backend is not None and self.backend.streams_text)

    def _pieces(self, backend: Backend, request: GenerationRequest, input_ids: list[int] | None,
                budget: int) -> Iterator:
        if self.batcher is not None and input_ids is not None:
            return self.batcher.stream(input_ids, request.params, request.cancel, request.logits_processors, budget)
        return backend.stream(request.prompt, input_ids, request.params, request.cancel, request.logits_processors)

    def _run(self, backend: Backend, request: GenerationRequest) -> Iterator[Delta]:
        params = request.params
        warnings = self._warnings(backend, params)
        input_ids, cut = self._prompt_ids(backend, request)
        budget = self._token_budget(backend, params, len(input_ids) if input_ids is not None else 0)
        prompt_tokens = len(input_ids) if input_ids is not None else backend.count_tokens(request.prompt)
        stops = StopStringFilter(list(request.stop_strings) + list(params.stop))
        decoder = None if backend.streams_text else IncrementalDecoder(backend.decode)
        state = _RunState(prompt_tokens=prompt_tokens, started=time.perf_counter())
        pieces = self._pieces(backend, request, input_ids, budget)
        try:
            yield Delta(prompt_tokens=prompt_tokens, warnings=warnings, truncated_prompt_tokens=cut)
            for piece in pieces:
                if piece.token_id is not None and piece.token_id in backend.eos_token_ids and not params.ban_eos_token:
                    state.finish = "stop"
                    break
                state.count(piece)
                raw = piece.text if piece.text is not None else decoder.push(piece.token_id)
                shown = stops.push(raw)
                if shown or piece.token_id is not None:
                    yield state.delta(shown, piece)
                if stops.stopped_by is not None:
                    state.finish = "stop"
                    break
                if request.cancel.is_set():
                    state.finish = "cancelled"
                    break
                if state.completion_tokens >= budget:
                    state.finish = "length"
                    break
            else:
                state.finish = state.finish or ("cancelled" if request.cancel.is_set() else "stop")
        finally:
            pieces.close()
        yield state.final(stops.flush(), stops.stopped_by)

    def _warnings(self, backend: Backend, params: SamplerParams) -> list[str]:
        missing = unsupported_parameters(params, backend.supported_samplers)
        if not missing:
            return []
        text = f"Not supported by the {backend.info.loader} loader, so not applied: {', '.join(missing)}."
        log.warning(text)
        return [text]

    def _prompt_ids(self, backend: Backend, request: GenerationRequest) -> tuple[list[int] | None, int]:
        """Token ids (local backends), cut from the left to leave room for the reply; BOS kept."""
        if backend.streams_text:
            return None, 0
        ids = request.input_ids if request.input_ids is not None else backend.encode(request.prompt)
        if not ids:
            raise EmptyPromptError("The prompt is empty: write something for the model to continue.")
        limit = self._prompt_limit(backend, request.params)
        if len(ids) <= limit:
            return ids, 0
        bos = list(backend.bos_prefix)
        keep_bos = bos if bos and ids[:len(bos)] == bos else []
        cut = len(ids) - limit
        return keep_bos + ids[cut + len(keep_bos):], cut

    @staticmethod
    def _prompt_limit(backend: Backend, params: SamplerParams) -> int:
        context = params.truncation_length or backend.info.context_length
        return max(context - min(params.max_new_tokens, context // 2), 1)

    @staticmethod
    def _token_budget(backend: Backend, params: SamplerParams, prompt_len: int) -> int:
        """max_new_tokens, clamped so prompt + reply fit the context."""
        context = params.truncation_length or backend.info.context_length
        room = context - prompt_len if prompt_len else params.max_new_tokens
        return max(min(params.max_new_tokens, room), 1)


@dataclass
class _RunState:
    prompt_tokens: int
    started: float
    completion_tokens: int = 0
    first_token: float | None = None
    finish: str | None = None

    def count(self, piece: object) -> None:
        self.completion_tokens += 1
        if self.first_token is None:
            self.first_token = time.perf_counter() - self.started

    def delta(self, text: str, piece: object) -> Delta:
        ids = [piece.token_id] if piece.token_id is not None else []
        probs = [piece.logprob] if piece.logprob is not None else []
        return Delta(text=text, prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                     token_ids=ids, logprobs=probs, seconds=time.perf_counter() - self.started,
                     first_token_seconds=self.first_token)

    def final(self, text: str, stopped_by: str | None) -> Delta:
        return Delta(text=text, finish_reason=self.finish or "stop", prompt_tokens=self.prompt_tokens,
                     completion_tokens=self.completion_tokens, seconds=time.perf_counter() - self.started,
                     first_token_seconds=self.first_token, stopped_by=stopped_by)
