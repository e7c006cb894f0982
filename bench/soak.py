"""Soak: many streaming API clients and chat users at once, for minutes, on loopback.

    python -m bench.soak                          # 32 API streams + 4 chat users, 10 minutes, tiny model
    python -m bench.soak --duration 120 --model SmolLM2-135M-Instruct   # a model from models/

The API clients stream chat completions over HTTP without pause; the chat users send turns the
way the chat page does (``Conversation.send``: the user's message stored at once, the reply
stored while it streams), so the SQLite store is written while the API streams. Printed:
completions per kind, failures, the fewest completions any one client got (starvation), RSS
growth after warm-up, and how often SQLite said "database is locked".
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

CHAT = "/v1/chat/completions"


@dataclass
class Tally:
    per_client: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    first_token_waits: list[float] = field(default_factory=list)
    locked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, client: str) -> None:
        with self.lock:
            self.per_client[client] = self.per_client.get(client, 0) + 1

    def failed(self, client: str, what: str) -> None:
        with self.lock:
            self.failures.append(f"{client}: {what}")
            self.locked += "database is locked" in what


class LockedCounter(logging.Handler):
    """Counts log records that mention SQLite's "database is locked" (anything the app logs)."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        if "database is locked" in record.getMessage():
            with self.tally.lock:
                self.tally.locked += 1


def api_client(url: str, name: str, stop: threading.Event, tally: Tally, max_tokens: int) -> None:
    import httpx

    body = {"messages": [{"role": "user", "content": f"Tell me about llamas ({name})."}],
            "max_tokens": max_tokens, "stream": True}
    with httpx.Client(base_url=url, timeout=600) as client:
        while not stop.is_set():
            started, first = time.perf_counter(), None
            try:
                with client.stream("POST", CHAT, json=body) as response:
                    lines = []
                    for line in response.iter_lines():
                        if first is None and '"content"' in line:
                            first = time.perf_counter() - started
                        lines.append(line)
                if response.status_code == 200 and "data: [DONE]" in lines[-3:]:
                    tally.done(name)
                    if first is not None:
                        with tally.lock:
                            tally.first_token_waits.append(first)
                else:
                    tally.failed(name, f"HTTP {response.status_code} {''.join(lines)[-200:]}")
            except Exception as err:  # noqa: BLE001 - counted, the soak goes on
                tally.failed(name, f"{type(err).__name__}: {err}")


def chat_user(ctx, user: str, stop: threading.Event, tally: Tally, max_tokens: int) -> None:
    from modules.core.conversation import Conversation, TurnSetup
    from modules.core.sampling import SamplerParams

    conv = Conversation(ctx, user)
    setup = TurnSetup(params=SamplerParams(max_new_tokens=max_tokens))
    chat = conv.new_chat(setup.settings)
    turn = 0
    while not stop.is_set():
        try:
            if turn and turn % 10 == 0:
                chat = conv.new_chat(setup.settings)  # long chats would only measure truncation
            steps = list(conv.send(chat, f"Question {turn} from {user}: what do llamas eat?", setup,
                                   threading.Event()))
            if steps and steps[-1].done:
                tally.done(user)
            else:
                tally.failed(user, "the reply did not finish")
            conv.messages(chat)  # the page reloads the chat after each turn
        except Exception as err:  # noqa: BLE001
            tally.failed(user, f"{type(err).__name__}: {err}")
        turn += 1


def rss_sampler(stop: threading.Event, samples: list[tuple[float, int]], every: float = 5.0) -> None:
    from modules.core.loaders.memory import process_rss

    started = time.perf_counter()
    while not stop.wait(every):
        samples.append((time.perf_counter() - started, process_rss()))


def build(folder: Path, model: str | None):
    from modules.core.config import AppConfig, LoaderOptions, ServerOptions
    from modules.core.context import build_context

    if model:
        models = ROOT / "models"
    else:
        from tiny_models import build_tiny_llama

        models, model = folder / "models", "tiny-llama"
        build_tiny_llama(models / model, context=1024)
    ctx = build_context(AppConfig(models_dir=models, user_data_dir=folder / "user_data",
                                  loader=LoaderOptions(cpu=True, dtype="float32"), server=ServerOptions(api_port=0)))
    ctx.models.load(model)
    return ctx, model


def soak(duration: float, clients: int, users: int, max_tokens: int, model: str | None) -> dict:
    from modules.api.server import start_api
    from modules.core.loaders.memory import process_rss

    tally, stop, samples = Tally(), threading.Event(), []
    logging.getLogger().addHandler(LockedCounter(tally))
    with tempfile.TemporaryDirectory(prefix="corral-soak-") as tmp:
        ctx, model = build(Path(tmp), model)
        api = start_api(ctx)
        rss_start = process_rss()
        threads = [threading.Thread(target=api_client, args=(api.url, f"api-{n}", stop, tally, max_tokens))
                   for n in range(clients)]
        threads += [threading.Thread(target=chat_user, args=(ctx, f"user{n}", stop, tally, max_tokens))
                    for n in range(users)]
        threads.append(threading.Thread(target=rss_sampler, args=(stop, samples)))
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        stop.wait(duration)
        stop.set()
        for thread in threads:
            thread.join(600)
        elapsed = time.perf_counter() - started
        api.stop()
        integrity = ctx.store._conn.execute("PRAGMA integrity_check").fetchone()[0]
    warm = [rss for at, rss in samples if at >= min(60.0, duration / 5)] or [rss_start]
    names = [f"api-{n}" for n in range(clients)] + [f"user{n}" for n in range(users)]
    counts = [tally.per_client.get(name, 0) for name in names]
    return {"model": model, "seconds": elapsed, "api_clients": clients, "chat_users": users,
            "api_completions": sum(counts[:clients]), "chat_turns": sum(counts[clients:]),
            "fewest_per_client": min(counts), "failures": len(tally.failures), "failure_examples": tally.failures[:5],
            "database_is_locked": tally.locked, "integrity": integrity,
            "rss_start_mb": rss_start / 2**20, "rss_after_warmup_mb": warm[0] / 2**20,
            "rss_end_mb": (samples[-1][1] if samples else process_rss()) / 2**20,
            "rss_growth_after_warmup_mb": (warm[-1] - warm[0]) / 2**20,
            "first_token_median_s": statistics.median(tally.first_token_waits) if tally.first_token_waits else None}


def main(argv: list[str]) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent streaming API clients (default 32)")
    parser.add_argument("--chat-users", type=int, default=4, help="concurrent chat users (default 4)")
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens per reply (default 24)")
    parser.add_argument("--model", help="a model in models/ (default: a tiny LLaMA built on the spot)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = soak(args.duration, args.clients, args.chat_users, args.max_tokens, args.model)
    width = max(map(len, result))
    for key, value in result.items():
        shown = f"{value:.1f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    healthy = (result["failures"] == 0 and result["database_is_locked"] == 0 and result["fewest_per_client"] > 0
               and result["integrity"] == "ok")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
