"""Progress from worker threads into a Gradio progress bar.

``gr.Progress`` finds its event through context variables, so it only works when
called from the event's own thread; a model load or a download reports from other
threads (the loader's memory watcher, huggingface_hub's workers). ``run_reporting``
runs the work in a thread and relays each report through a queue to that thread.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
Report = Callable[[float, str], None]


def run_reporting(work: Callable[[Report], T], progress: Callable[..., object]) -> T:
    """Run ``work(report)`` in a thread; every ``report(fraction, text)`` reaches ``progress``."""
    updates: queue.Queue = queue.Queue()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = work(lambda fraction, text: updates.put((fraction, text)))
        except BaseException as err:  # noqa: BLE001 - handed back to the caller's thread
            outcome["error"] = err
        finally:
            updates.put(None)

    threading.Thread(target=target, daemon=True, name="ui-work").start()
    while (item := updates.get()) is not None:
        progress(item[0], desc=item[1])
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
