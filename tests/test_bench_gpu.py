"""bench/gpu.py runs end to end with the tiny CPU shape, so the GPU benchmark cannot rot unnoticed."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from processes import child_env


@pytest.mark.slow  # the GPU benchmark (16-bit and NF4 through bitsandbytes) run on the CPU
def test_bench_gpu_runs_on_the_cpu_with_the_tiny_shape(repo_root, tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(repo_root / "bench" / "gpu.py"), "--shape", "tiny", "--device", "cpu",
           "--modes", "fp16", "nf4", "--new-tokens", "12", "--context", "128", "--fast", "eager",
           "--model-dir", str(tmp_path / "llama-tiny-random"), "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=repo_root, env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["bandwidth"] > 1e8  # bytes/s of a real copy
    assert [r["mode"] for r in report["results"]] == ["fp16", "nf4"]
    for r in report["results"]:
        engine, plain, fast = r["engine"], r["plain"], r["fast"]
        assert len(engine["tokens"]) == len(plain["tokens"]) == len(fast["tokens"]) == 12
        # The engine's greedy tokens are plain generate's. (The static-cache path's equality is tested in
        # float32 in test_fast_decode.py: in 16-bit its differently sized attention may round differently.)
        assert engine["tokens"] == plain["tokens"]
        assert all(run["decode_tok_s"] > 0 and 0 < run["ttft_s"] < run["total_s"] for run in (engine, plain, fast))
        assert r["after_load"] > 0 and r["peak_context"] >= r["after_load"] and r["unload_s"] >= 0
        assert len(r["context"]["tokens"]) == 16
    fp16, nf4 = report["results"]
    assert nf4["weight_bytes_per_token"] < 0.6 * fp16["weight_bytes_per_token"]  # 4-bit layers read fewer bytes
    for mode in ("fp16", "nf4"):
        assert f"== {mode} ==" in done.stdout
    assert done.stdout.count("engine / plain") == 2 and "of ceiling" in done.stdout
