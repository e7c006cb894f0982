"""Memory: what the process uses, freeing it for real, and watching a load's progress."""
from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time

import psutil

from modules.core.loaders.base import ProgressCallback


def process_rss() -> int:
    """Resident memory of this process, bytes."""
    return psutil.Process().memory_info().rss


def cuda_allocated() -> int:
    import torch

    if not torch.cuda.is_available():
        return 0
    return sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count()))


def release_memory() -> None:
    """Collect garbage, empty the CUDA cache and hand freed heap pages back to the OS.

    ``del model`` alone leaves memory held by reference cycles, the CUDA
    caching allocator and glibc's arenas; this clears all three.
    """
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


class LoadWatcher:
    """Reports load progress from memory growth towards the expected size.

    transformers offers no progress callback for weight loading; the bytes that
    land in RAM or on the GPU are an honest measure of how far it has got.
    """

    def __init__(self, expected_bytes: int, progress: ProgressCallback, start: float = 0.1, end: float = 0.95) -> None:
        self.expected = max(expected_bytes, 1)
        self.progress, self.start, self.end = progress, start, end
        self._stop = threading.Event()
        self._base = process_rss() + cuda_allocated()
        self._thread = threading.Thread(target=self._run, daemon=True, name="load-progress")

    def __enter__(self) -> "LoadWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            grown = process_rss() + cuda_allocated() - self._base
            fraction = min(max(grown / self.expected, 0.0), 1.0)
            self.progress(self.start + (self.end - self.start) * fraction, "Loading weights")


