"""Faults the app must survive: hang-ups, failed and out-of-memory loads, raising extensions, a full
disk, and ``kill -9`` in the middle of a streamed reply. Each returns (survived, detail)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Hello"}]
LONG = {"messages": HI, "max_tokens": 900, "temperature": 0, "ban_eos_token": True}
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def answers(client: httpx.Client) -> bool:
    reply = client.post(CHAT, json={"messages": HI, "max_tokens": 2})
    return reply.status_code == 200 and "choices" in reply.json()


def hang_up_streaming(ctx: Any, client: httpx.Client) -> tuple[bool, str]:
    with client.stream("POST", CHAT, json={**LONG, "stream": True}) as response:
        for count, _ in enumerate(response.iter_lines()):
            if count > 4:
                break
    freed = wait_until(lambda: ctx.engine.queue.depth == 0, 60)
    return freed and answers(client), "model freed after the hang-up" if freed else "model still busy after 60 s"


def hang_up_waiting(ctx: Any, client: httpx.Client) -> tuple[bool, str]:
    with httpx.Client(base_url=str(client.base_url), timeout=httpx.Timeout(60, read=0.5)) as impatient:
        try:
            impatient.post(CHAT, json=LONG)
        except httpx.ReadTimeout:
            pass
    freed = wait_until(lambda: ctx.engine.queue.depth == 0, 60)
    return freed and answers(client), "model freed after the hang-up" if freed else "model still busy after 60 s"


def failed_load(ctx: Any, client: httpx.Client, broken: str) -> tuple[bool, str]:
    before = ctx.models.loaded_name
    reply = client.post("/v1/internal/model/load", json={"model_name": broken})
    message = reply.json().get("error", {}).get("message", "")
    ok = reply.status_code == 400 and ctx.models.loaded_name == before and answers(client)
    return ok, message[:120]


def out_of_memory_load(ctx: Any, client: httpx.Client) -> tuple[bool, str]:
    import torch
    from transformers import AutoModelForCausalLM

    before = ctx.models.loaded_name
    real = AutoModelForCausalLM.from_pretrained
    calls: list[int] = []

    def first_call_runs_out(*args: Any, **kwargs: Any) -> Any:  # the reload of the previous model fits
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)

    with mock.patch("transformers.AutoModelForCausalLM.from_pretrained", side_effect=first_call_runs_out):
        reply = client.post("/v1/internal/model/load", json={"model_name": before})
    message = reply.json().get("error", {}).get("message", "")
    ok = reply.status_code == 400 and "memory" in message and ctx.models.loaded_name == before and answers(client)
    return ok, message[:120]


RAISER = "\n".join(f"def {hook}(*args, **kwargs):\n    raise RuntimeError('{hook} is broken')\n" for hook in (
    "history_modifier", "state_modifier", "chat_input_modifier", "input_modifier", "bot_prefix_modifier",
    "tokenizer_modifier", "custom_tokenized_length", "logits_processor_modifier", "output_modifier",
    "custom_generate_chat_prompt", "custom_generate_reply", "ui", "custom_css", "custom_js"))


def raising_extension(ctx: Any, client: httpx.Client) -> tuple[bool, str]:
    """An extension raising in every hook: the API reply and a stored chat reply still arrive."""
    from modules.core.conversation import Conversation, TurnSetup
    from modules.core.sampling import SamplerParams

    for name, script in (("raiser", RAISER), ("setup_raiser", "def setup():\n    raise RuntimeError('no')\n")):
        home = ctx.config.extensions_dir / name
        home.mkdir(parents=True, exist_ok=True)
        (home / "script.py").write_text(script)
    enabled = ctx.extensions.enable(ctx, ["setup_raiser", "raiser"])  # the first is refused, reported
    try:
        api_ok = answers(client)
        conv = Conversation(ctx, "local")
        chat = conv.new_chat(TurnSetup().settings)
        steps = list(conv.send(chat, "Hello", TurnSetup(params=SamplerParams(max_new_tokens=4)), threading.Event()))
        stored = conv.messages(chat)
        notices = ctx.extensions.report.recent(50)
    finally:
        ctx.extensions.enable(ctx, [])
    chat_ok = steps and steps[-1].done and len(stored) == 2
    refused = "setup_raiser" in ctx.extensions.failed()
    detail = f"enabled={enabled}, {len(notices)} notices, setup failure reported={refused}, chat stored={bool(chat_ok)}"
    return bool(api_ok and chat_ok and refused and enabled == ["raiser"] and notices), detail


FULL_DISK = textwrap.dedent("""
    import resource, signal, sqlite3, sys
    from pathlib import Path
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    from modules.core.store import Store
    store = Store(Path(sys.argv[1]))
    chat = store.create_chat("local", "full")
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
    try:
        for n in range(100_000):
            mid = store.add_message("local", chat, "user", "x" * 20_000)
            print(mid, flush=True)
    except Exception as err:
        print("ERROR", type(err).__name__, err, flush=True)
""")


def full_disk(folder: Path) -> tuple[bool, str]:
    """Writes fail at a 2 MB file-size limit: a clear error, the database intact, nothing committed lost."""
    from modules.core.store import Store

    path = folder / "full.db"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=300)
    lines = done.stdout.splitlines()
    committed = {int(line) for line in lines if line.isdigit()}
    error = next((line for line in lines if line.startswith("ERROR")), "no error raised")
    with Store(path) as store:
        integrity = store._conn.execute("PRAGMA integrity_check").fetchone()[0]
        stored = {row[0] for row in store._conn.execute("SELECT id FROM messages")}
    clear = "full" in error.lower() or "disk" in error.lower() or "space" in error.lower()
    return clear and integrity == "ok" and committed <= stored, f"{error[:110]}; integrity {integrity}"


def unusable_user_data(folder: Path) -> tuple[bool, str]:
    """user_data/ that cannot be used: a file where the folder should be, a database that is not one.

    (Read-only permissions cannot be simulated here: the suite may run as root, which ignores them.)
    """
    from modules.core.errors import CorralError
    from modules.core.store import Store

    blocked = folder / "blocked"
    blocked.write_text("not a folder")
    garbage = folder / "garbage.db"
    garbage.write_bytes(b"this is not SQLite" * 100)
    before = garbage.read_bytes()
    messages = []
    for path in (blocked / "corral.db", garbage):
        try:
            Store(path).close()
            messages.append(f"{path.name}: opened?!")
        except CorralError as err:
            messages.append(str(err)[:70])
    untouched = garbage.read_bytes() == before
    ok = not any("opened?!" in m for m in messages) and untouched
    return ok, f"{' | '.join(messages)}; the damaged file left as it was: {untouched}"


KILLED_CHAT = textwrap.dedent("""
    import json, sys, threading
    from pathlib import Path
    from modules.core.config import AppConfig, LoaderOptions
    from modules.core.context import build_context
    from modules.core.conversation import Conversation, TurnSetup
    from modules.core.sampling import SamplerParams
    ctx = build_context(AppConfig(models_dir=Path(sys.argv[1]), user_data_dir=Path(sys.argv[2]),
                                  loader=LoaderOptions(cpu=True, dtype="float32")))
    ctx.models.load(sys.argv[3])
    conv = Conversation(ctx, "local", every_tokens=1, every_seconds=0.0)
    chat = conv.new_chat(TurnSetup().settings)
    setup = TurnSetup(params=SamplerParams(max_new_tokens=60, do_sample=False, ban_eos_token=True))
    for turn in range(1000):
        for step in conv.send(chat, f"turn {turn}", setup, threading.Event()):
            print(json.dumps({"id": step.message_id, "text": step.text, "done": step.done}), flush=True)
""")


def kill_mid_stream(models: Path, model: str, folder: Path) -> tuple[bool, int, str]:
    """``kill -9`` while a reply streams: (survived, messages lost, detail)."""
    from modules.core.store import Store

    user_data = folder / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CHAT, str(models), str(user_data), model],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    finished: dict[int, str] = {}
    last: dict = {}
    try:
        for line in proc.stdout:
            last = json.loads(line)
            if last["done"]:
                finished[last["id"]] = last["text"]
            elif len(finished) >= 3 and len(last["text"]) > 10:
                break  # the fourth reply is streaming now
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    if len(finished) < 3:
        return False, 0, f"the chat did not run: {proc.stderr.read()[-300:]}"
    with Store(user_data / "corral.db") as store:
        integrity = store._conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = dict(store._conn.execute("SELECT id, content FROM messages"))
    lost = sum(1 for mid, text in finished.items() if rows.get(mid) != text)
    partial = rows.get(last.get("id"), "")
    streamed = last.get("text", "")
    partial_ok = bool(partial) and (streamed.startswith(partial) or partial.startswith(streamed))
    detail = (f"{len(finished)} finished replies, {lost} lost; streaming reply kept {len(partial)} of "
              f"{len(streamed)} characters; integrity {integrity}")
    return integrity == "ok" and lost == 0 and partial_ok, lost, detail


def concurrent_streams(url: str, count: int, max_tokens: int = 8) -> tuple[int, int]:
    """``count`` streaming clients at once: (completed with [DONE], started)."""
    done: list[bool] = []

    def one() -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            try:
                reply = client.post(CHAT, json={"messages": HI, "max_tokens": max_tokens, "stream": True})
                done.append(reply.status_code == 200 and reply.text.rstrip().endswith("[DONE]"))
            except httpx.HTTPError:
                done.append(False)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    return sum(done), count
