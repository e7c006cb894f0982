"""Shared set-up for the API tests: a context with the default model, served on a free port."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from modules.core.config import DEFAULT_MODEL_NAME, AppConfig, LoaderOptions, ServerOptions
from modules.core.context import Context, build_context
from modules.core.engine import Delta, Engine, GenerationRequest
from session_model import SharedModel

GREEDY_QUESTION = "What is the capital of France?"


def default_context(models_dir: Path, user_data: Path, load: bool = True, shared: SharedModel | None = None,
                    **server: object) -> Context:
    """A context over the repository's models/, the default model loaded in float32 on the CPU.

    With ``shared`` (the ``default_model`` session fixture) the session's loaded model is lent
    instead of loading another copy; ``load=False`` leaves the context without a model.
    """
    config = AppConfig(loader=LoaderOptions(dtype="float32", cpu=True), models_dir=models_dir,
                       user_data_dir=user_data, characters_dir=user_data / "characters",
                       extensions_dir=user_data / "extensions")
    config.server = ServerOptions(api_port=0, **server)
    ctx = build_context(config)
    if shared is not None:
        shared.lend(ctx)
    elif load:
        ctx.models.load(DEFAULT_MODEL_NAME)
    return ctx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_engine(ctx: Context, request: GenerationRequest) -> tuple[str, list[Delta]]:
    deltas = list(ctx.engine.generate(request))
    return "".join(d.text for d in deltas), deltas


def wait_until(predicate, timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until true; False after ``timeout`` (an upper bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def sse_lines(response: httpx.Response) -> Iterator[str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line[len("data: "):]


class GenerationWatch:
    """Events for the generations an engine runs: a test waits on these instead of polling with a timer.

    ``started`` is set at a generation's first token (its prompt joins ``started_prompts``);
    ``finished`` when a generation's stream has ended (finished, cancelled, or closed by its
    reader), its last delta joining ``last``. ``wait_for(predicate)`` wakes on each of these.
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finished = threading.Event()
        self.started_prompts: list[str] = []
        self.last: list[Delta | None] = []
        self._changed = threading.Condition()

    def note_started(self, prompt: str) -> None:
        with self._changed:
            self.started_prompts.append(prompt)
            self.started.set()
            self._changed.notify_all()

    def note_finished(self, last: Delta | None) -> None:
        with self._changed:
            self.last.append(last)
            self.finished.set()
            self._changed.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        """Wait until ``predicate()`` holds, checked at each event; False after ``timeout`` (an upper bound)."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)


@contextmanager
def watch_generations(engine: Engine) -> Iterator[GenerationWatch]:
    """Wrap ``engine.generate`` while inside: every caller (API routes, UI, extensions) goes through it."""
    watch = GenerationWatch()
    real = engine.generate

    def generate(request: GenerationRequest) -> Iterator[Delta]:
        last, started = None, False
        try:
            for delta in real(request):
                last = delta
                if delta.token_ids and not started:
                    started = True
                    watch.note_started(request.prompt)
                yield delta
        finally:
            watch.note_finished(last)

    engine.generate = generate  # type: ignore[method-assign]
    try:
        yield watch
    finally:
        del engine.generate  # the class's method again
