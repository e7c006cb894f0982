"""Concurrent streaming clients against our API: aggregate and per-stream tokens/s, time to first token.

    installer_files/env/bin/python bench/concurrency.py                           # 1 2 4 8 16 clients
    installer_files/env/bin/python bench/concurrency.py --clients 1 8 --tokens 32 --dtype float32

Starts the app (``app.py --api``) as a subprocess on loopback with OMP_WAIT_POLICY=PASSIVE and the
default model, waits until the API lists the model, warms up with one short reply, then for each
client count N sends N streaming chat completions at once (each its own question, greedy, EOS
banned so every stream produces exactly ``--tokens`` tokens) and reads them as they stream.

Per level it prints: aggregate tokens/s (all tokens / wall time from the first request sent to
the last stream ended), per-stream tokens/s (median over streams of tokens / that stream's own
time), time to first token p50 / p95 (from sending the request to its first text chunk), the
ratio of the aggregate to one stream's, and the load average (the machine may be shared).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Write a long story about a llama who travels to Paris and learns to cook.",
    "Explain how a bicycle works, part by part.",
    "Describe a day in the life of a lighthouse keeper.",
    "Tell me about the history of the printing press.",
    "What should I pack for a week of hiking in the mountains?",
    "Write a letter to a friend about your new garden.",
    "Explain why the sky is blue to a curious child.",
    "Describe the city of Rome to someone who has never been there.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(api_port: int, ui_port: int, user_data: Path, extra: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", GRADIO_ANALYTICS_ENABLED="False")
    command = [sys.executable, str(ROOT / "app.py"), "--api", "--api-port", str(api_port),
               "--listen-port", str(ui_port), "--user-data-dir", str(user_data), *extra]
    log = open(user_data / "server.log", "w")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_model(base: str, server: subprocess.Popen, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"The server exited with code {server.returncode}; see its log.")
        try:
            data = httpx.get(f"{base}/v1/models", timeout=5).json().get("data") or []
            if data:
                return data[0]["id"]
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("The server did not list a model in time.")


async def one_stream(client: httpx.AsyncClient, base: str, model: str, question: str, tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "stream": True,
            "max_tokens": tokens, "temperature": 0, "ban_eos_token": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first, completion = None, 0
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                completion = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or []
            if first is None and choices and choices[0].get("delta", {}).get("content"):
                first = time.perf_counter()
    ended = time.perf_counter()
    return {"started": started, "first": first or ended, "ended": ended, "tokens": completion}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


async def level(base: str, model: str, clients: int, tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=clients + 4)) as client:
        streams = await asyncio.gather(*[one_stream(client, base, model, QUESTIONS[i % len(QUESTIONS)], tokens)
                                         for i in range(clients)])
    wall = max(s["ended"] for s in streams) - min(s["started"] for s in streams)
    total = sum(s["tokens"] for s in streams)
    ttft = [s["first"] - s["started"] for s in streams]
    return {"clients": clients, "tokens": total, "wall_s": wall, "aggregate": total / wall,
            "per_stream": statistics.median(s["tokens"] / (s["ended"] - s["started"]) for s in streams),
            "ttft_p50": percentile(ttft, 0.5), "ttft_p95": percentile(ttft, 0.95),
            "load": os.getloadavg()[0], "short": [s["tokens"] for s in streams if s["tokens"] != tokens]}


def print_table(rows: list[dict]) -> None:
    one = rows[0]["aggregate"] if rows and rows[0]["clients"] == 1 else None
    print("| clients | aggregate tok/s | per-stream tok/s (median) | TTFT p50 | TTFT p95 | vs 1 stream | load avg |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row['aggregate'] / one:.2f}x" if one else "-"
        print(f"| {row['clients']} | {row['aggregate']:.1f} | {row['per_stream']:.1f} | {row['ttft_p50'] * 1000:.0f} ms"
              f" | {row['ttft_p95'] * 1000:.0f} ms | {ratio} | {row['load']:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream (EOS banned)")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(api_port, free_port(), Path(tmp), ["--dtype", args.dtype])
        try:
            model = wait_for_model(base, server)
            print(f"model {model}, dtype {args.dtype}, {args.tokens} tokens per stream, {os.cpu_count()} CPUs",
                  flush=True)
            asyncio.run(level(base, model, 1, 8))  # warm-up
            rows = []
            for clients in args.clients:
                rows.append(asyncio.run(level(base, model, clients, args.tokens)))
                print(f"  {clients} clients: {rows[-1]['aggregate']:.1f} tok/s aggregate", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print_table(rows)
    if any(row["short"] for row in rows):
        print("note: some streams ended early:", {row["clients"]: row["short"] for row in rows if row["short"]})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
