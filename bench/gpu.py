"""GPU performance at 16 and 4 bits: memory, decode speed, the bandwidth ceiling, unload.

    python3 bench/gpu.py                              # on a CUDA machine: LLaMA-7B shape, fp16, NF4, NF4 + double quant
    python3 bench/gpu.py --shape tiny --modes fp16    # a quick smoke run (the CPU default)

Builds a LLaMA-7B-shaped model with random weights (same speed and memory as
the real one; nothing is downloaded), saves it with safetensors, and loads it
through our Transformers loader in each mode. For each mode it prints:
memory after load and at peak with a long context; decode tokens/s at batch 1
through plain ``generate``, through our engine, and through our fast path
(static cache + torch.compile); time to first token; the card's copy bandwidth
and the ceiling it implies (weight bytes read per token / bandwidth) with our
fraction of it; the time to unload and the memory left after unload. On the CPU
memory is the process's resident memory. See docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from gpu_model import (SHAPES, copy_bandwidth, device_name, ensure_random_model, memory_now,  # noqa: E402
                       memory_peak, random_prompt, reset_peak, weight_bytes_per_token)
from modules.core.config import LoaderOptions  # noqa: E402
from modules.core.engine import Engine, GenerationRequest  # noqa: E402
from modules.core.loaders.decoding import cache_argument_name  # noqa: E402
from modules.core.loaders.fast_decode import FastDecoder, build_fast_decoder  # noqa: E402
from modules.core.models import ModelManager  # noqa: E402
from modules.core.registry import ModelRegistry  # noqa: E402
from modules.core.sampling import SamplerParams  # noqa: E402

NF4 = {"load_in_4bit": True, "quant_type": "nf4", "compute_dtype": "bfloat16", "dtype": "bfloat16"}
MODES = {"fp16": {"dtype": "float16"}, "nf4": {**NF4, "use_double_quant": False},
         "nf4-dq": {**NF4, "use_double_quant": True}}
PROMPT_TOKENS = 16  # the short prompt of the decode-speed runs
GB = 1e9


# -- one generation, three ways -----------------------------------------------------------------
def plain_generate(model: torch.nn.Module, ids: list[int], new_tokens: int) -> dict:
    """transformers' ``generate``, greedy, exactly ``new_tokens``; first token timed by a streamer."""
    from transformers.generation.streamers import BaseStreamer

    class FirstToken(BaseStreamer):
        def __init__(self) -> None:
            self.calls, self.at = 0, 0.0

        def put(self, value: torch.Tensor) -> None:  # first call: the prompt; second: the first new token
            self.calls += 1
            if self.calls == 2:
                self.at = time.perf_counter()

        def end(self) -> None:
            pass

    streamer = FirstToken()
    started = time.perf_counter()
    inputs = torch.tensor([ids], device=model.device)
    out = model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, streamer=streamer)
    tokens = out[0, len(ids):].tolist()  # waits for the GPU
    return _timing(tokens, started, streamer.at, time.perf_counter())


def engine_generate(engine: Engine, ids: list[int], new_tokens: int, stop_after: int | None = None) -> dict:
    """Our engine, greedy, EOS banned, deltas consumed as a client would; ``stop_after`` leaves early."""
    params = SamplerParams(do_sample=False, max_new_tokens=new_tokens, ban_eos_token=True)
    tokens: list[int] = []
    first = 0.0
    started = time.perf_counter()
    for delta in engine.generate(GenerationRequest(prompt="", input_ids=ids, params=params)):
        if delta.token_ids and not tokens:
            first = time.perf_counter()
        tokens.extend(delta.token_ids)
        if stop_after and len(tokens) >= stop_after:
            break
    return _timing(tokens, started, first, time.perf_counter())


def _timing(tokens: list[int], started: float, first: float, ended: float) -> dict:
    """Decode speed counts the tokens after the first over the time after the first (prefill excluded)."""
    decode_s = max(ended - first, 1e-9)
    return {"tokens": tokens, "ttft_s": first - started, "total_s": ended - started,
            "decode_tok_s": (len(tokens) - 1) / decode_s}


# -- one mode ---------------------------------------------------------------------------------------
def run_mode(mode: str, manager: ModelManager, name: str, args: argparse.Namespace, device: str) -> dict:
    """Load, measure everything, unload; the numbers of one mode."""
    vocab = SHAPES[args.shape]["vocab_size"]
    short, long_ = random_prompt(PROMPT_TOKENS, vocab, 1), random_prompt(args.context, vocab, 2)
    _collect(device)
    result: dict = {"mode": mode, "context_tokens": args.context, "before_load": memory_now(device)}
    started = time.perf_counter()
    manager.load(name, {**MODES[mode], "cpu": device == "cpu", "fast_decode": "off"})
    result["load_s"] = time.perf_counter() - started
    result["after_load"] = memory_now(device)
    backend = manager.engine.backend
    result["weight_bytes_per_token"] = weight_bytes_per_token(backend.model)
    plain_generate(backend.model, short, 8)  # warm-up
    result["plain"] = plain_generate(backend.model, short, args.new_tokens)
    engine_generate(manager.engine, short, 8)  # warm-up
    result["engine"] = engine_generate(manager.engine, short, args.new_tokens)
    reset_peak(device)
    result["context"] = engine_generate(manager.engine, long_, 16)
    result["peak_context"] = memory_peak(device)
    if args.fast != "off":
        result["fast"] = measure_fast(manager, short, args, device)
    started = time.perf_counter()
    manager.unload()
    _collect(device)
    result["unload_s"] = time.perf_counter() - started
    result["after_unload"] = memory_now(device)
    return result


def measure_fast(manager: ModelManager, ids: list[int], args: argparse.Namespace, device: str) -> dict:
    """Attach the fast path to the loaded backend (as the loader does), compile it, and time it."""
    backend = manager.engine.backend
    started = time.perf_counter()
    if args.fast == "eager":  # static cache without torch.compile: quick, for the CPU smoke test
        fast, note = FastDecoder(backend.model, cache_argument_name(backend.model), backend.info.context_length,
                                 compiler=None), "on (static cache)"
    else:
        fast, note = build_fast_decoder(backend.model, cache_argument_name(backend.model), "on",
                                        backend.info.context_length)
    if fast is None:
        return {"note": note}
    backend.fast = fast
    engine_generate(manager.engine, ids, args.new_tokens, stop_after=4)  # compile for this cache size
    out = {"note": note, "prepare_s": time.perf_counter() - started}
    reset_peak(device)
    out.update(engine_generate(manager.engine, ids, args.new_tokens))
    out["peak"] = memory_peak(device)
    if not fast.usable:
        out["note"] = fast.description  # fell back to the normal loop while running
    return out


def _collect(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# -- report ---------------------------------------------------------------------------------------
def print_mode(r: dict, bandwidth: float, device: str) -> None:
    mem = "GPU memory allocated" if device == "cuda" else "process RSS"
    ceiling = bandwidth / r["weight_bytes_per_token"]
    plain, engine = r["plain"], r["engine"]
    print(f"\n== {r['mode']} ==")
    peak = "peak with" if device == "cuda" else "process peak so far, with"
    print(f"  load {r['load_s']:.1f} s; {mem}: {_size(r['before_load'])} before, {_size(r['after_load'])} after load, "
          f"{_size(r['peak_context'])} {peak} a {r['context_tokens']}-token context "
          f"(first token {r['context']['ttft_s']:.3f} s)")
    print(f"  weights read per token {_size(r['weight_bytes_per_token'])} -> ceiling {ceiling:.1f} tok/s")
    for label, run in (("plain generate", plain), ("our engine", engine), ("fast path", r.get("fast"))):
        if run is None:
            continue
        if "decode_tok_s" not in run:
            print(f"  {label:<15} not measured: {run['note']}")
            continue
        extra = f"  [{run['note']}; compile + warm-up {run['prepare_s']:.1f} s; " \
                f"same tokens as the engine: {_same(run['tokens'], engine['tokens'])}]" if label == "fast path" else ""
        print(f"  {label:<15} {run['decode_tok_s']:8.1f} tok/s  first token {run['ttft_s'] * 1000:7.1f} ms  "
              f"{run['decode_tok_s'] / ceiling:6.1%} of ceiling{extra}")
    print(f"  engine / plain {engine['decode_tok_s'] / plain['decode_tok_s']:.3f}", end="")
    if "decode_tok_s" in r.get("fast", {}):
        print(f"; fast / plain {r['fast']['decode_tok_s'] / plain['decode_tok_s']:.2f}x", end="")
    left = (r["after_unload"] - r["before_load"]) / 1e6
    print(f"\n  unload {r['unload_s']:.2f} s; {_size(r['after_unload'])} left ({left:+.0f} MB vs before load)")


def _size(n: int) -> str:
    return f"{n / GB:.3f} GB" if n >= 0.1 * GB else f"{n / 1e6:.2f} MB"


def _same(a: list[int], b: list[int]) -> str:
    if a == b:
        return "yes"
    prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first {prefix} of {len(b)}"


def check_targets(results: list[dict]) -> list[str]:
    """The H100 targets of the 7B shape, as PASS/FAIL lines."""
    lines = []
    for r in results:
        ratio = r["engine"]["decode_tok_s"] / r["plain"]["decode_tok_s"]
        lines.append(f"{_flag(ratio >= 0.95)} {r['mode']}: engine {ratio:.3f} of plain generate (>= 0.95)")
        left = abs(r["after_unload"] - r["before_load"])
        lines.append(f"{_flag(left <= 100e6)} {r['mode']}: unload leaves {left / 1e6:.0f} MB (<= 100 MB)")
        if r["mode"].startswith("nf4"):
            lines.append(f"{_flag(r['after_load'] <= 4.5 * GB)} {r['mode']}: {r['after_load'] / GB:.2f} GB after load (<= 4.5 GB)")
            fast = r.get("fast", {}).get("decode_tok_s", 0.0)
            lines.append(f"{_flag(fast >= 3 * r['plain']['decode_tok_s'] and fast >= 150)} {r['mode']}: fast path "
                         f"{fast:.1f} tok/s, {fast / r['plain']['decode_tok_s']:.2f}x plain (>= 3x and >= 150 tok/s)")
    return lines


def _flag(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="7b" if cuda else "tiny")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--new-tokens", type=int, help="decode run length (default 512 for 7b, 32 for tiny)")
    p.add_argument("--context", type=int, help="prompt tokens of the peak-memory run (default 2048; tiny 512)")
    p.add_argument("--fast", choices=["compile", "eager", "off"], default="compile",
                   help="the fast path: compiled (as the loader does), static cache without compile, or skipped")
    p.add_argument("--model-dir", type=Path, help="where the random model is written (and reused)")
    p.add_argument("--json", type=Path, help="also write every number to this file")
    args = p.parse_args(argv)
    args.new_tokens = args.new_tokens or (512 if args.shape == "7b" else 32)
    args.context = args.context or (2048 if args.shape == "7b" else 512)
    args.model_dir = args.model_dir or ROOT / "bench" / "out" / f"llama-{args.shape}-random"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    import transformers

    print(f"bench/gpu.py {datetime.date.today()} on {device_name(device)}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, bitsandbytes {_bnb_version()}")
    print(f"shape {args.shape}, modes {' '.join(args.modes)}, {args.new_tokens} new tokens, fast path {args.fast}")
    built = ensure_random_model(args.model_dir, args.shape, device)
    print(f"random model in {args.model_dir} ({'written in %.1f s' % built if built else 'reused'})")
    bandwidth = copy_bandwidth(device)
    print(f"copy bandwidth {bandwidth / GB:.1f} GB/s")
    manager = ModelManager(ModelRegistry(args.model_dir.parent), Engine(), LoaderOptions())
    results = []
    for mode in args.modes:
        if mode.startswith("nf4") and _bnb_version() == "not installed":
            print(f"\n== {mode} == skipped: bitsandbytes is not installed (see docs/BENCHMARKS.md)")
            continue
        result = run_mode(mode, manager, args.model_dir.name, args, device)
        print_mode(result, bandwidth, device)
        results.append(result)
    if args.shape == "7b" and device == "cuda":
        print("\ntargets (H100, 7B):\n  " + "\n  ".join(check_targets(results)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device_name(device), "bandwidth": bandwidth,
                                         "args": {k: str(v) for k, v in vars(args).items()}, "results": results}))
    return 0


def _bnb_version() -> str:
    try:
        import bitsandbytes
    except Exception:  # noqa: BLE001 - any import failure means: not usable here
        return "not installed"
    return bitsandbytes.__version__


if __name__ == "__main__":
    sys.exit(main())
