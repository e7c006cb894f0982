"""llama.cpp vs Transformers on the default model: tokens/s, time to first token, ratios.

    installer_files/env/bin/python bench/loaders.py                   # 128 tokens, 3 rounds
    installer_files/env/bin/python bench/loaders.py --tokens 256 --rounds 5
    installer_files/env/bin/python bench/loaders.py --passive      # on a machine busy with other work

Both loaders run through our own engine (ModelManager + Engine.generate, the
path the UI and API use), on the same chat prompt, greedy, EOS suppressed so
every side produces exactly ``--tokens`` tokens:

- ``llama.cpp``: models/SmolLM2-135M-Instruct-Q4_1.gguf (the file the model ships as);
- ``transformers bf16`` and ``transformers fp32``: models/SmolLM2-135M-Instruct/
  (the same weights, dequantized once to float32 by modules.core.default_model).

Also ``llama.cpp raw``: plain ``llama_cpp.Llama.generate`` without our engine,
to show what the engine costs on top of llama.cpp.

Every measurement runs in a fresh process (a process that has just done heavy
work can run several times slower) and the sides take turns, so that drift in
the machine's load hits all of them alike. The parent prints medians and the
ratios llama.cpp / Transformers.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUESTION = "Write a long story about a llama who travels to Paris and learns to cook."
FOLDER = ROOT / "models" / "SmolLM2-135M-Instruct"
GGUF = ROOT / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
SIDES = ("llama.cpp", "llama.cpp raw", "transformers bf16", "transformers fp32")


def chat_prompt(folder: Path) -> str:
    """The prompt every side gets: the model's own chat template around one user turn."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                         add_generation_prompt=True)


# -- workers (one per fresh process) -------------------------------------------------------
def worker_engine(side: str, prompt: str, tokens: int, threads: int) -> dict:
    """Our engine with the loader ``side`` names; deltas consumed as a client would."""
    from modules.core.config import LoaderOptions
    from modules.core.engine import Engine, GenerationRequest
    from modules.core.models import ModelManager
    from modules.core.registry import ModelRegistry
    from modules.core.sampling import SamplerParams

    if side == "llama.cpp":
        options, name = LoaderOptions(loader="llama.cpp", n_threads=threads), GGUF.name
    else:
        dtype = "bfloat16" if side.endswith("bf16") else "float32"
        options, name = LoaderOptions(loader="transformers", dtype=dtype, cpu=True), FOLDER.name
    manager = ModelManager(ModelRegistry(FOLDER.parent), Engine(), options)
    manager.load(name)

    def once(n: int, text: str = prompt) -> tuple[list[int], float, float]:
        params = SamplerParams(do_sample=False, max_new_tokens=n, ban_eos_token=True)
        ids: list[int] = []
        first = None
        started = time.perf_counter()
        for delta in manager.engine.generate(GenerationRequest(prompt=text, params=params)):
            if delta.token_ids and first is None:
                first = time.perf_counter() - started
            ids.extend(delta.token_ids)
        return ids, time.perf_counter() - started, first

    result = _timed(once, tokens)
    if side == "llama.cpp":  # the same prompt again: llama.cpp keeps it in its KV cache, as for a chat's next turn
        result["first_token_cached"] = once(1)[2]
    return result


def worker_raw(prompt: str, tokens: int, threads: int) -> dict:
    """llama-cpp-python alone: tokenize, then its own generate loop, greedy, EOS never checked."""
    import llama_cpp

    llama = llama_cpp.Llama(model_path=str(GGUF), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                            verbose=False)
    ids = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def once(n: int, text: str = "") -> tuple[list[int], float, float]:
        tokens = llama.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else ids
        llama.reset()  # no prompt cache between rounds: every side evaluates the whole prompt
        out: list[int] = []
        first = None
        started = time.perf_counter()
        for token in llama.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            if first is None:
                first = time.perf_counter() - started
            out.append(token)
            if len(out) >= n:
                break
        return out, time.perf_counter() - started, first

    return _timed(once, tokens)


WARM_UP = "Hello! Tell me about llamas."


def _timed(once, tokens: int) -> dict:
    """A warm-up on another prompt (so no side starts with the timed prompt cached), then the timed run."""
    once(8, WARM_UP)
    ids, total, first = once(tokens)
    return {"ids": ids, "seconds": total, "first_token": first}


def run_worker(side: str, prompt: str, tokens: int, threads: int) -> dict:
    if side == "llama.cpp raw":
        return worker_raw(prompt, tokens, threads)
    return worker_engine(side, prompt, tokens, threads)


# -- parent ----------------------------------------------------------------------------------
def measure(side: str, prompt_file: Path, tokens: int, threads: int) -> dict:
    """Run one worker in a fresh interpreter and read its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--prompt-file", str(prompt_file),
           "--tokens", str(tokens), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{side} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def compare(sides: list[str], prompt_file: Path, tokens: int, rounds: int, threads: int) -> dict:
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for round_ in range(rounds):
        order = sides if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            results[side].append(measure(side, prompt_file, tokens, threads))
            print(".", end="", flush=True)
    print()
    summary = {}
    for side, runs in results.items():
        speeds = [tokens / r["seconds"] for r in runs]
        summary[side] = {"tok_s": statistics.median(speeds), "all": speeds,
                         "ttft": statistics.median(r["first_token"] for r in runs), "ids": runs[0]["ids"]}
        if all("first_token_cached" in r for r in runs):
            summary[side]["ttft_cached"] = statistics.median(r["first_token_cached"] for r in runs)
    return summary


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def agreement(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy runs share (Q4_1 and float weights drift apart eventually)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def print_summary(summary: dict, tokens: int, rounds: int, threads: int) -> None:
    print(f"\n{tokens} greedy tokens, median of {rounds} fresh processes per side, {threads} threads")
    for side, s in summary.items():
        runs = ", ".join(f"{v:.1f}" for v in s["all"])
        print(f"  {side:<18} {s['tok_s']:7.1f} tok/s   first token {s['ttft'] * 1000:6.0f} ms   ({runs})")
        if "ttft_cached" in s:
            print(f"  {'':<18} first token {s['ttft_cached'] * 1000:.0f} ms when the prompt is already cached "
                  "(a chat's next turn)")
    if "llama.cpp" not in summary:
        return
    ours = summary["llama.cpp"]
    for side in ("transformers bf16", "transformers fp32", "llama.cpp raw"):
        if side in summary:
            other = summary[side]
            print(f"  llama.cpp / {side:<18} speed x{ours['tok_s'] / other['tok_s']:.2f}   "
                  f"first-token time x{ours['ttft'] / other['ttft']:.2f}   "
                  f"same first {agreement(ours['ids'], other['ids'])}/{tokens} tokens")
    print("  (speed above 1 and first-token time below 1: llama.cpp is faster)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per side")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: physical cores)")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--passive", action="store_true",
                   help="OMP_WAIT_POLICY=passive for every side: waiting threads sleep instead of spinning "
                        "(on a machine busy with other work, spinning threads slow each other many times over)")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--prompt-file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from modules.core.loaders.llamacpp_loader import default_threads

    threads = args.threads or default_threads()
    if args.worker:
        prompt = args.prompt_file.read_text(encoding="utf-8")
        print(json.dumps(run_worker(args.worker, prompt, args.tokens, threads)))
        return 0
    if not ((FOLDER / "config.json").is_file() and GGUF.is_file()):
        print(f"The default model is missing ({FOLDER}, {GGUF}). Make it first: "
              "installer_files/env/bin/python -m modules.core.default_model", file=sys.stderr)
        return 2
    import llama_cpp
    import torch

    print(f"bench/loaders.py {datetime.date.today()} on {cpu_name()} ({os.cpu_count()} logical CPUs, "
          f"load average {os.getloadavg()[0]:.1f} before the run): torch {torch.__version__}, "
          f"llama-cpp-python {llama_cpp.__version__}")
    prompt_file = ROOT / "bench" / "out" / "loaders_prompt.txt"
    prompt_file.parent.mkdir(parents=True, exist_ok=True)
    prompt_file.write_text(chat_prompt(FOLDER), encoding="utf-8")
    if args.passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by each fresh worker's OpenMP runtime
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    summary = compare(args.sides, prompt_file, args.tokens, args.rounds, threads)
    print_summary(summary, args.tokens, args.rounds, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
