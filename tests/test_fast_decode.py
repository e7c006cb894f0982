"""The fast decoding path (static KV cache + compiled step) against the normal loop, on a tiny LLaMA."""
from __future__ import annotations

import logging

import pytest
import torch

from modules.core.config import LoaderOptions
from modules.core.engine import Engine, GenerationRequest
from modules.core.errors import ModelLoadError
from modules.core.loaders.fast_decode import FastDecoder, cache_size_for, decode_one_token
from modules.core.models import ModelManager
from modules.core.registry import ModelRegistry
from modules.core.sampling import SamplerParams
from tiny_models import build_tiny_llama

GREEDY = SamplerParams(do_sample=False, max_new_tokens=40, ban_eos_token=True)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    build_tiny_llama(models / "tiny-llama", hidden=64, layers=2, seed=3, context=1024)
    return models


@pytest.fixture()
def manager(tiny_dir):
    manager = ModelManager(ModelRegistry(tiny_dir), Engine(), LoaderOptions(dtype="float32", cpu=True))
    manager.load("tiny-llama")
    yield manager
    manager.unload()


def run(engine: Engine, prompt: str, params: SamplerParams) -> tuple[list[int], list[float], str]:
    deltas = list(engine.generate(GenerationRequest(prompt=prompt, params=params)))
    ids = [i for d in deltas for i in d.token_ids]
    logprobs = [p for d in deltas for p in d.logprobs]
    return ids, logprobs, deltas[-1].finish_reason


def use_fast(manager: ModelManager, **kwargs) -> FastDecoder:
    backend = manager.engine.backend
    backend.fast = FastDecoder(backend.model, backend._cache_arg, backend.info.context_length, **kwargs)
    manager.engine.refresh_batching()  # the static-cache path takes one request at a time, unbatched
    return backend.fast


def test_cache_sizes_grow_in_powers_of_two():
    assert cache_size_for(10, 4097) == 1024
    assert cache_size_for(1025, 4097) == 2048
    assert cache_size_for(257, 4097, smallest=256) == 512
    assert cache_size_for(3000, 4097) == 4096
    assert cache_size_for(3000, 2049) == 3000  # capped by the context, but never below what is needed


@pytest.mark.parametrize("prompt,max_new", [("The quick brown", 40), ("Llamas and alpacas " * 30, 100)])
def test_static_cache_gives_the_normal_loops_tokens_and_logprobs(manager, prompt, max_new):
    params = GREEDY.replace(max_new_tokens=max_new)
    normal_ids, normal_lp, _ = run(manager.engine, prompt, params)
    fast = use_fast(manager, compiler=None)
    fast_ids, fast_lp, finish = run(manager.engine, prompt, params)
    assert fast_ids == normal_ids and len(fast_ids) == max_new and finish == "length"
    assert fast_lp == pytest.approx(normal_lp, abs=1e-4)
    assert fast.cache_size == 1024  # the first size covers both


def test_static_cache_is_reused_and_grows(manager):
    fast = use_fast(manager, compiler=None, min_cache=64)
    short = run(manager.engine, "Llamas", GREEDY.replace(max_new_tokens=10))[0]
    first_cache = fast.cache
    assert run(manager.engine, "Llamas", GREEDY.replace(max_new_tokens=10))[0] == short  # reset between requests
    assert fast.cache is first_cache and fast.cache_size == 64
    grown = run(manager.engine, "Llamas", GREEDY.replace(max_new_tokens=70))[0]
    assert fast.cache_size == 128 and fast.cache is not first_cache
    assert grown[:10] == short


def test_sampling_with_a_seed_is_the_same_on_both_paths(manager):
    params = SamplerParams(temperature=1.3, top_k=20, min_p=0.02, repetition_penalty=1.2, seed=11,
                           max_new_tokens=30, ban_eos_token=True)
    normal = run(manager.engine, "Numbers: one two", params)[0]
    use_fast(manager, compiler=None)
    assert run(manager.engine, "Numbers: one two", params)[0] == normal


def test_a_failing_compiled_step_falls_back_to_the_normal_loop(manager, caplog):
    normal = run(manager.engine, "What is the capital", GREEDY)[0]
    calls = []

    def broken_compiler(device: torch.device):
        def step(*args):
            calls.append(1)
            if len(calls) > 3:  # fail mid-stream, after a few good tokens
                raise RuntimeError("backend compiler failed: no C++ compiler found")
            return decode_one_token(*args)
        return step

    fast = use_fast(manager, compiler=broken_compiler)
    with caplog.at_level(logging.WARNING):
        assert run(manager.engine, "What is the capital", GREEDY)[0] == normal
    assert not fast.usable and "no C++ compiler" in fast.failed
    assert any("normal loop" in r.getMessage() for r in caplog.records)
    calls.clear()
    assert run(manager.engine, "What is the capital", GREEDY)[0] == normal
    assert calls == []  # later generations go straight to the normal loop


def test_auto_is_off_on_the_cpu_and_bad_values_fail_before_loading(tiny_dir):
    manager = ModelManager(ModelRegistry(tiny_dir), Engine(), LoaderOptions(dtype="float32", cpu=True))
    manager.load("tiny-llama", {"fast_decode": "auto"})
    assert manager.engine.backend.fast is None
    assert "CUDA only" in manager.engine.backend.info.details["fast_decode"]
    manager.unload()
    with pytest.raises(ModelLoadError, match="fast_decode"):
        manager.load("tiny-llama", {"fast_decode": "fastest"})
    assert manager.engine.backend is None


@pytest.mark.slow  # compiles with inductor (a C++ build, ~30 s or more on two cores); the fast path is for CUDA
def test_torch_compile_on_the_cpu_gives_the_normal_loops_tokens(tiny_dir):
    """'on' compiles the step with inductor here (CUDA graphs only on CUDA); first run ~30 s, cached after."""
    manager = ModelManager(ModelRegistry(tiny_dir), Engine(), LoaderOptions(dtype="float32", cpu=True))
    manager.load("tiny-llama", {"fast_decode": "off"})
    normal = run(manager.engine, "The quick brown", GREEDY)
    manager.load("tiny-llama", {"fast_decode": "on"})
    backend = manager.engine.backend
    assert backend.info.details["fast_decode"] == "on (static cache, torch.compile)"  # else: the reason it failed
    fast = run(manager.engine, "The quick brown", GREEDY)
    assert fast[0] == normal[0]
    assert fast[1] == pytest.approx(normal[1], abs=1e-4)
    fast_decoder = backend.fast
    manager.unload()
    assert fast_decoder.cache is None and fast_decoder.model is None  # unload freed the cache and graphs
