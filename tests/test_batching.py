"""Continuous batching on the default model: concurrent streams equal their solo runs, fairness, cancel.

The model runs in float32 here: in bfloat16 a row's logits in a batch differ from the same row
alone by bf16 rounding (other matmul blocking; up to ~0.7 measured on SmolLM2-135M), enough to
flip exact greedy ties, whereas in float32 they differ by ~4e-5.
"""
from __future__ import annotations

import threading
import time

import pytest

from modules.core.engine import Engine, GenerationRequest
from modules.core.sampling import SamplerParams

GREEDY = SamplerParams(do_sample=False, max_new_tokens=16)
PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the mountains,",
    "def fibonacci(n):\n    ",
]


@pytest.fixture(scope="module")
def engine(default_model):
    """An engine of its own over the session's default model (float32, CPU)."""
    engine = Engine()
    engine.set_backend(default_model.backend)
    assert engine.batcher is not None
    yield engine
    engine.set_backend(None)  # closes the batcher; the shared model stays loaded


class HoldUntil:
    """A logits processor that changes nothing but holds the batch at its second call until
    ``ready()`` is true, so every request of a test joins before the first one runs ahead."""

    def __init__(self, ready) -> None:
        self.ready, self.calls = ready, 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        deadline = time.monotonic() + 120
        while self.calls == 2 and not self.ready() and time.monotonic() < deadline:
            time.sleep(0.005)
        return scores


def run(engine: Engine, request: GenerationRequest, on_delta=None):
    """(text, token ids, last delta) of one request."""
    deltas = []
    for delta in engine.generate(request):
        deltas.append(delta)
        if on_delta is not None:
            on_delta(delta, deltas)
    return "".join(d.text for d in deltas), [i for d in deltas for i in d.token_ids], deltas[-1]


def run_together(engine: Engine, requests: list[GenerationRequest], callbacks=None) -> tuple[list, list[int]]:
    """Run ``requests`` at once (each joins before the first runs ahead); results and finishing order."""
    count = len(requests)
    requests[0].logits_processors.append(HoldUntil(lambda: engine.batcher.active >= count))
    results, order = [None] * count, []
    callbacks = callbacks or [None] * count

    def worker(index: int) -> None:
        results[index] = run(engine, requests[index], callbacks[index])
        order.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results, order


def test_four_concurrent_greedy_streams_equal_their_solo_runs(engine):
    alone = [run(engine, GenerationRequest(prompt=p, params=GREEDY))[1] for p in PROMPTS]
    steps_before = engine.batcher.steps
    together, _ = run_together(engine, [GenerationRequest(prompt=p, params=GREEDY) for p in PROMPTS])
    assert [ids for _, ids, _ in together] == alone
    assert all(len(ids) > 0 for ids in alone)
    assert engine.batcher.widest == 4  # the four really shared decode steps
    assert engine.batcher.steps - steps_before < sum(len(ids) for ids in alone)


def test_each_request_keeps_its_own_sampling_seed_bias_and_stops(engine):
    plain_text, plain_ids, _ = run(engine, GenerationRequest(prompt=PROMPTS[2], params=GREEDY))
    stop = plain_text.split()[2]
    requests = lambda: [  # noqa: E731
        GenerationRequest(prompt=PROMPTS[0], params=SamplerParams(temperature=1.3, seed=11, max_new_tokens=12,
                                                                  ban_eos_token=True)),
        GenerationRequest(prompt=PROMPTS[2], params=GREEDY.replace(logit_bias={plain_ids[0]: -100.0})),
        GenerationRequest(prompt=PROMPTS[2], params=GREEDY, stop_strings=[stop]),
        GenerationRequest(prompt=PROMPTS[3], params=GREEDY.replace(max_new_tokens=5, repetition_penalty=1.3)),
    ]
    alone = [run(engine, request)[:2] for request in requests()]
    together, _ = run_together(engine, requests())
    assert [result[:2] for result in together] == alone
    assert alone[1][1][0] != plain_ids[0]  # the bias applied to its own request only
    assert together[2][2].stopped_by == stop and stop not in together[2][0]
    assert together[3][2].completion_tokens == 5


def test_a_long_request_does_not_starve_a_short_one(engine):
    long = GenerationRequest(prompt=PROMPTS[2], params=GREEDY.replace(max_new_tokens=40, ban_eos_token=True))
    short = GenerationRequest(prompt=PROMPTS[0], params=GREEDY.replace(max_new_tokens=5, ban_eos_token=True))
    results, order = run_together(engine, [long, short])
    assert order == [1, 0]  # the short one, which came second, finished first
    assert results[0][2].completion_tokens == 40 and results[1][2].completion_tokens == 5


def test_cancel_mid_batch_frees_the_slot_within_a_step_and_spares_the_others(engine):
    params = GREEDY.replace(max_new_tokens=16, ban_eos_token=True)
    alone = [run(engine, GenerationRequest(prompt=p, params=params))[1] for p in (PROMPTS[0], PROMPTS[3])]
    counter = HoldUntil(lambda: True)  # counts the model steps that serve the cancelled request
    victim = GenerationRequest(prompt=PROMPTS[1], params=params, logits_processors=[counter])
    seen_at_cancel = []

    def cancel_after_three(delta, deltas) -> None:
        if delta.completion_tokens == 3 and not victim.cancel.is_set():
            seen_at_cancel.append(counter.calls)
            victim.cancel.set()

    requests = [GenerationRequest(prompt=PROMPTS[0], params=params), victim,
                GenerationRequest(prompt=PROMPTS[3], params=params)]
    results, _ = run_together(engine, requests, [None, cancel_after_three, None])
    assert results[1][2].finish_reason == "cancelled" and results[1][2].completion_tokens == 3
    assert counter.calls - seen_at_cancel[0] <= 1  # at most the step already under way
    assert [results[0][1], results[2][1]] == alone
    deadline = time.monotonic() + 60  # the scheduler lets the last rows go at its next turn
    while engine.batcher.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.batcher.active == 0


class Count:
    """A logits processor that only counts the steps that serve its request."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        return scores


def test_a_long_prompt_is_read_in_chunks_while_running_streams_keep_stepping(engine):
    running = Count()
    seen_at_first_token = []

    def first_token(input_ids, scores):
        if not seen_at_first_token:
            seen_at_first_token.append(running.calls)
        return scores

    long_prompt = "one two three four five " * 250
    chunks = -(-len(engine.backend.encode(long_prompt)) // engine.batcher.prefill_tokens)
    assert chunks >= 4
    requests = [GenerationRequest(prompt=PROMPTS[2], params=GREEDY.replace(max_new_tokens=30, ban_eos_token=True),
                                  logits_processors=[running]),
                GenerationRequest(prompt=long_prompt, params=GREEDY.replace(max_new_tokens=2, ban_eos_token=True),
                                  logits_processors=[first_token])]
    results, _ = run_together(engine, requests)
    assert results[1][2].completion_tokens == 2
    # at most prefill_tokens of the long prompt are read between two steps of the running stream,
    # so it got a step after each chunk but the last (read all at once, it would be at 1 or 2)
    assert seen_at_first_token[0] >= chunks
