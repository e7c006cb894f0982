"""The engine on tiny LLaMA models: greedy equality, stops, cancel, queue, seeds, truncation."""
from __future__ import annotations

import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from modules.core.config import LoaderOptions
from modules.core.engine import Engine, GenerationRequest
from modules.core.models import ModelManager
from modules.core.registry import ModelRegistry
from modules.core.sampling import SamplerParams
from tiny_models import build_tiny_llama

GREEDY = SamplerParams(do_sample=False, max_new_tokens=40)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    build_tiny_llama(models / "tiny-llama")
    return models


@pytest.fixture(scope="module")
def manager(tiny_dir):
    manager = ModelManager(ModelRegistry(tiny_dir), Engine(), LoaderOptions(dtype="float32", cpu=True))
    manager.load("tiny-llama")
    yield manager
    manager.unload()


def run(engine: Engine, request: GenerationRequest):
    deltas = list(engine.generate(request))
    text = "".join(d.text for d in deltas)
    ids = [i for d in deltas for i in d.token_ids]
    return text, ids, deltas[-1]


def test_greedy_matches_plain_generate(manager, tiny_dir):
    prompt = "What is the capital of France?"
    _, ids, last = run(manager.engine, GenerationRequest(prompt=prompt, params=GREEDY))
    backend = manager.engine.backend
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir / "tiny-llama", dtype=torch.float32)
    input_ids = torch.tensor([backend.encode(prompt)])
    out = plain.generate(input_ids, do_sample=False, max_new_tokens=40, min_new_tokens=0)
    expected = out[0, input_ids.shape[1]:].tolist()
    expected = expected[: expected.index(2)] if 2 in expected else expected
    assert ids == expected
    assert last.completion_tokens == len(ids)
    assert last.finish_reason == ("stop" if len(ids) < GREEDY.max_new_tokens else "length")  # EOS, or the budget


def test_max_new_tokens_and_counts(manager):
    params = GREEDY.replace(max_new_tokens=5, ban_eos_token=True)
    _, ids, last = run(manager.engine, GenerationRequest(prompt="Numbers: one two", params=params))
    assert len(ids) == 5 and last.finish_reason == "length" and last.completion_tokens == 5
    assert last.prompt_tokens == len(manager.engine.backend.encode("Numbers: one two"))


def test_stop_string_split_across_tokens_is_never_shown(manager):
    params = GREEDY.replace(max_new_tokens=30, ban_eos_token=True)
    full, ids, _ = run(manager.engine, GenerationRequest(prompt="The quick brown", params=params))
    assert len(full) > 6
    stop = full[3:7]  # four characters in the middle of the reply: almost surely across tokens
    deltas = list(manager.engine.generate(GenerationRequest(prompt="The quick brown", params=params,
                                                             stop_strings=[stop])))
    shown = [d.text for d in deltas]
    assert "".join(shown) == full[: full.index(stop)]
    assert deltas[-1].finish_reason == "stop" and deltas[-1].stopped_by == stop
    running = ""
    for piece in shown:  # no prefix of the stop string ever leaked, even mid-stream
        running += piece
        assert stop not in running


def test_cancel_mid_stream_stops_within_one_token(manager):
    request = GenerationRequest(prompt="Llamas", params=GREEDY.replace(max_new_tokens=200, ban_eos_token=True))
    seen = 0
    for delta in manager.engine.generate(request):
        if delta.token_ids:
            seen += 1
            if seen == 3:
                request.cancel.set()
        last = delta
    assert last.finish_reason == "cancelled"
    assert last.completion_tokens == 3


def test_two_concurrent_requests_are_both_served(manager):
    params = GREEDY.replace(max_new_tokens=20, ban_eos_token=True)
    order: list[tuple[str, str]] = []
    results: dict[str, str] = {}

    def worker(name: str, prompt: str) -> None:
        text = ""
        for delta in manager.engine.generate(GenerationRequest(prompt=prompt, params=params)):
            order.append((name, "token"))
            text += delta.text
        results[name] = text

    threads = [threading.Thread(target=worker, args=(n, p)) for n, p in (("a", "Llamas"), ("b", "The quick"))]
    threads[0].start()
    time.sleep(0.05)
    threads[1].start()
    for t in threads:
        t.join(timeout=60)
    assert set(results) == {"a", "b"}
    # batched side by side (tests/test_batching.py), each reply as it would be alone
    assert results["a"] == run(manager.engine, GenerationRequest(prompt="Llamas", params=params))[0]
    assert results["b"] == run(manager.engine, GenerationRequest(prompt="The quick", params=params))[0]


def test_seed_makes_sampling_reproducible(manager):
    params = SamplerParams(temperature=1.5, max_new_tokens=25, seed=1234, ban_eos_token=True)
    first = run(manager.engine, GenerationRequest(prompt="Llamas", params=params))[1]
    second = run(manager.engine, GenerationRequest(prompt="Llamas", params=params))[1]
    other = run(manager.engine, GenerationRequest(prompt="Llamas", params=params.replace(seed=99)))[1]
    assert first == second
    assert first != other


def test_prompt_longer_than_context_is_truncated_from_the_left(manager):
    long_prompt = "one two three four five " * 200  # far beyond the 256-token context
    params = GREEDY.replace(max_new_tokens=16, ban_eos_token=True)
    deltas = list(manager.engine.generate(GenerationRequest(prompt=long_prompt, params=params)))
    first, last = deltas[0], deltas[-1]
    assert first.truncated_prompt_tokens > 0
    assert last.completion_tokens == 16 and last.finish_reason == "length"


@pytest.mark.parametrize("name,value", [("tfs", 0.9), ("top_a", 0.2), ("mirostat_mode", 2), ("typical_p", 0.8),
                                        ("min_p", 0.1), ("top_k", 5), ("top_p", 0.5), ("xtc_probability", 0.5),
                                        ("repetition_penalty", 1.3), ("presence_penalty", 0.5),
                                        ("no_repeat_ngram_size", 2)])
def test_every_sampler_runs_without_warnings(manager, name, value):
    params = SamplerParams(max_new_tokens=8, seed=7, ban_eos_token=True).replace(**{name: value})
    deltas = list(manager.engine.generate(GenerationRequest(prompt="Llamas", params=params)))
    assert deltas[0].warnings == []
    assert deltas[-1].completion_tokens == 8


def test_unsupported_sampler_is_reported_not_ignored(manager):
    params = SamplerParams(max_new_tokens=4, penalty_alpha=0.3)
    deltas = list(manager.engine.generate(GenerationRequest(prompt="Llamas", params=params)))
    assert any("penalty_alpha" in w for w in deltas[0].warnings)


def test_an_empty_prompt_is_a_clear_error(manager, tiny_dir):
    from modules.core.errors import EmptyPromptError

    with pytest.raises(EmptyPromptError, match="empty"):
        list(manager.engine.generate(GenerationRequest(prompt="", params=GREEDY, input_ids=[])))
    _, ids, _ = run(manager.engine, GenerationRequest(prompt="Llamas", params=GREEDY.replace(max_new_tokens=3)))
    assert ids  # the queue was released: the next request runs


def test_a_stream_resumed_on_other_threads_leaves_no_thread_in_inference_mode(manager):
    """Web servers call next() from a thread pool: a step must not leave its mode set on a thread."""
    from concurrent.futures import ThreadPoolExecutor

    stream = manager.engine.backend.stream("Llamas", None, GREEDY, threading.Event())
    workers = 3
    barrier = threading.Barrier(workers)

    def mode_of_this_thread() -> bool:
        barrier.wait(timeout=10)  # one check on each pool thread
        return torch.is_inference_mode_enabled()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in range(6):
            pool.submit(next, stream).result()
        modes = [f.result() for f in [pool.submit(mode_of_this_thread) for _ in range(workers)]]
    stream.close()
    assert modes == [False] * workers
