"""Which backends serve requests side by side: remote servers get them concurrently, llama.cpp queues them.

Fake backends, no model: each test is deterministic (it waits on the other request, never on time).
"""
from __future__ import annotations

import threading
import time

from modules.core.batching import batcher_for
from modules.core.engine import Engine, GenerationRequest
from modules.core.loaders.base import BackendInfo, Piece
from modules.core.sampling import SamplerParams

PARAMS = SamplerParams(do_sample=False, max_new_tokens=3)


class FakeBackend:
    """Streams three pieces; ``hold`` runs inside stream() before the first one."""

    supported_samplers = {"temperature", "seed"}
    eos_token_ids: set[int] = set()
    bos_prefix: list[int] = []

    def __init__(self, loader: str, streams_text: bool, hold) -> None:
        self.info = BackendInfo(name="fake", loader=loader, context_length=256)
        self.streams_text, self.hold = streams_text, hold
        self.inside, self.most_inside = 0, 0
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 50 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(97 + i % 26) for i in ids)

    def count_tokens(self, text: str) -> int:
        return len(text)

    def stream(self, prompt, input_ids, params, cancel, logits_processors=()):
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.hold()
            for index in range(3):
                yield Piece(text="x") if self.streams_text else Piece(token_id=index)
        finally:
            with self._lock:
                self.inside -= 1

    def unload(self) -> None:
        pass


def run_two(engine: Engine) -> list[int]:
    finished: list[int] = []

    def worker() -> None:
        deltas = list(engine.generate(GenerationRequest(prompt="hello", params=PARAMS)))
        finished.append(deltas[-1].completion_tokens)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return finished


def test_a_remote_backend_gets_concurrent_requests_side_by_side():
    both_inside = threading.Barrier(2, timeout=30)  # breaks (and fails the test) if the engine queued them
    backend = FakeBackend("remote", streams_text=True, hold=both_inside.wait)
    engine = Engine()
    engine.set_backend(backend)
    assert engine.batcher is None
    assert run_two(engine) == [3, 3]
    assert backend.most_inside == 2


def test_llamacpp_keeps_its_queue_one_generation_at_a_time():
    engine = Engine()

    calls = []

    def until_the_other_waits() -> None:
        calls.append(1)
        deadline = time.monotonic() + 30
        while len(calls) == 1 and engine.queue.depth < 2 and backend.inside == 1 and time.monotonic() < deadline:
            time.sleep(0.005)

    backend = FakeBackend("llama.cpp", streams_text=False, hold=until_the_other_waits)
    engine.set_backend(backend)
    assert engine.batcher is None and batcher_for(backend) is None
    assert run_two(engine) == [3, 3]
    assert backend.most_inside == 1


def test_a_model_swap_waits_for_running_generations_and_holds_new_ones():
    release = threading.Event()
    backend = FakeBackend("remote", streams_text=True, hold=lambda: release.wait(30))
    engine = Engine()
    engine.set_backend(backend)
    stream = engine.generate(GenerationRequest(prompt="hello", params=PARAMS))
    next(stream)  # the request is inside the engine now
    swapped = threading.Event()
    swapper = threading.Thread(target=lambda: (engine.set_backend(None), swapped.set()))
    swapper.start()
    assert not swapped.wait(0.3)  # still running: the swap waits
    release.set()
    assert sum(1 for _ in stream) > 0
    swapper.join(timeout=30)
    assert swapped.is_set() and engine.backend is None
