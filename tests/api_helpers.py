"""Shared set-up for the API tests: a context with the default model, served on a free port."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import httpx

from modules.core.config import DEFAULT_MODEL_NAME, AppConfig, LoaderOptions, ServerOptions
from modules.core.context import Context, build_context
from modules.core.engine import Delta, GenerationRequest

GREEDY_QUESTION = "What is the capital of France?"


def default_context(models_dir: Path, user_data: Path, load: bool = True, **server: object) -> Context:
    """A context over the repository's models/, the default model loaded in float32 on the CPU."""
    config = AppConfig(loader=LoaderOptions(dtype="float32", cpu=True), models_dir=models_dir,
                       user_data_dir=user_data, characters_dir=user_data / "characters",
                       extensions_dir=user_data / "extensions")
    config.server = ServerOptions(api_port=0, **server)
    ctx = build_context(config)
    if load:
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
