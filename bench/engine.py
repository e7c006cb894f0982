"""Engine vs plain ``generate``: tokens/s, their ratio and time to first token.

    installer_files/env/bin/python bench/engine.py                 # bf16 and fp32, 200 tokens, 3 rounds
    installer_files/env/bin/python bench/engine.py --dtypes bfloat16 --tokens 128 --rounds 5
    installer_files/env/bin/python bench/engine.py --threads 1     # on a machine busy with other work

Every measurement runs in a fresh process (a process that has just done heavy
work can run several times slower), and the two sides alternate so that drift
in the machine's load hits both alike. Each worker loads the default model,
warms up with a short generation, then times greedy decoding of the same chat
prompt with EOS suppressed, so both sides produce exactly ``--tokens`` tokens.
The parent prints medians, the ratio engine / plain, and checks that both
sides produced the same token ids.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUESTION = "Write a long story about a llama who travels to Paris and learns to cook."


def chat_text(tokenizer) -> str:
    """The prompt both sides get: the model's own chat template around one user turn."""
    messages = [{"role": "user", "content": QUESTION}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# -- workers (one per fresh process) -------------------------------------------------
def worker_plain(folder: Path, dtype: str, tokens: int) -> dict:
    """transformers' own ``generate``, greedy, in this thread; first token timed by a streamer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    prompt = chat_text(tokenizer)

    class FirstToken(BaseStreamer):
        """``put`` is called once with the prompt, then once per new token."""

        def __init__(self) -> None:
            self.calls, self.first = 0, None

        def put(self, value) -> None:
            self.calls += 1
            if self.calls == 2:
                self.first = time.perf_counter()

        def end(self) -> None:
            pass

    def once(n: int) -> tuple[list[int], float, float]:
        streamer = FirstToken()
        started = time.perf_counter()
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])  # the template wrote BOS etc.
        out = model.generate(ids, do_sample=False, max_new_tokens=n, min_new_tokens=n, streamer=streamer)
        total = time.perf_counter() - started
        return out[0, ids.shape[1]:].tolist(), total, streamer.first - started

    once(8)  # warm-up
    ids, total, first = once(tokens)
    return {"ids": ids, "seconds": total, "first_token": first}


def worker_engine(folder: Path, dtype: str, tokens: int) -> dict:
    """Our path: ModelManager + Engine.generate, deltas consumed as a client would."""
    from modules.core.config import LoaderOptions
    from modules.core.engine import Engine, GenerationRequest
    from modules.core.models import ModelManager
    from modules.core.registry import ModelRegistry
    from modules.core.sampling import SamplerParams

    manager = ModelManager(ModelRegistry(folder.parent), Engine(), LoaderOptions(dtype=dtype, cpu=True))
    manager.load(folder.name)
    prompt = chat_text(manager.engine.backend.tokenizer)

    def once(n: int) -> tuple[list[int], float, float]:
        params = SamplerParams(do_sample=False, max_new_tokens=n, ban_eos_token=True)
        ids: list[int] = []
        first = None
        started = time.perf_counter()
        for delta in manager.engine.generate(GenerationRequest(prompt=prompt, params=params)):
            if delta.token_ids and first is None:
                first = time.perf_counter() - started
            ids.extend(delta.token_ids)
        return ids, time.perf_counter() - started, first

    once(8)  # warm-up
    ids, total, first = once(tokens)
    return {"ids": ids, "seconds": total, "first_token": first}


WORKERS = {"plain": worker_plain, "engine": worker_engine}


# -- parent ----------------------------------------------------------------------------
def measure(kind: str, folder: Path, dtype: str, tokens: int, threads: int) -> dict:
    """Run one worker in a fresh interpreter and read its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--model-dir", str(folder),
           "--dtypes", dtype, "--tokens", str(tokens)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{kind} {dtype} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def compare(folder: Path, dtype: str, tokens: int, rounds: int, threads: int) -> dict:
    results: dict[str, list[dict]] = {"plain": [], "engine": []}
    for round_ in range(rounds):
        order = ("plain", "engine") if round_ % 2 == 0 else ("engine", "plain")
        for kind in order:
            results[kind].append(measure(kind, folder, dtype, tokens, threads))
            print(f"  {dtype} round {round_ + 1}/{rounds} {kind}: {tokens / results[kind][-1]['seconds']:.1f} tok/s",
                  file=sys.stderr, flush=True)
    summary = {}
    for kind, runs in results.items():
        speeds = [tokens / r["seconds"] for r in runs]
        summary[kind] = {"tok_s": statistics.median(speeds), "ttft": statistics.median(r["first_token"] for r in runs),
                         "all": speeds}
    same = all(r["ids"] == results["plain"][0]["ids"] for r in results["plain"] + results["engine"])
    summary["ratio"] = summary["engine"]["tok_s"] / summary["plain"]["tok_s"]
    summary["same_tokens"] = same
    return summary


def print_summary(dtype: str, tokens: int, rounds: int, s: dict) -> None:
    print(f"\n{dtype}: {tokens} greedy tokens, median of {rounds} fresh processes per side")
    for kind in ("plain", "engine"):
        runs = ", ".join(f"{v:.1f}" for v in s[kind]["all"])
        print(f"  {kind:<7} {s[kind]['tok_s']:6.1f} tok/s   first token {s[kind]['ttft'] * 1000:6.0f} ms   ({runs})")
    print(f"  ratio engine/plain {s['ratio']:.3f}   same token ids: {'yes' if s['same_tokens'] else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per side and dtype")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads in the workers (OMP_NUM_THREADS); 0: torch's default. "
                        "On a machine busy with other work, 1 avoids threads waiting on each other")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        print(f"No model at {args.model_dir}. Make the default model first: "
              "installer_files/env/bin/python -m modules.core.default_model", file=sys.stderr)
        return 2
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.model_dir, args.dtypes[0], args.tokens)))
        return 0
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"bench/engine.py: {args.model_dir.name}, torch {torch.__version__}, {threads} threads per worker, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    worst = float("inf")
    for dtype in args.dtypes:
        summary = compare(args.model_dir, dtype, args.tokens, args.rounds, args.threads)
        print_summary(dtype, args.tokens, args.rounds, summary)
        worst = min(worst, summary["ratio"])
    print(f"\nlowest ratio {worst:.3f} (target >= 0.95); load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
