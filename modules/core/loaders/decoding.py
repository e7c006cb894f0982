"""The token loop for PyTorch models: prefill, then one token at a time.

Runs in the caller's thread (no generate() in a second thread): the engine
iterates this generator, so cancel takes effect between two tokens and a
consumer that stops iterating stops the model.

How the model is stepped is a :class:`DecodeSteps` object: :class:`DynamicSteps`
(a growing DynamicCache, the default) or the static-cache, compiled steps of
``fast_decode.py``. The loop around them (processors, sampling, log-probs) is
the same for both, so both pick the same tokens.
"""
from __future__ import annotations

import inspect
from typing import Iterator, Protocol

import torch
from transformers import DynamicCache, LogitsProcessorList

from modules.core.logits import Mirostat


def cache_argument_name(model: torch.nn.Module) -> str:
    """transformers >= 5.20 calls the KV cache ``cache``; earlier releases ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def prefill(model: torch.nn.Module, input_ids: torch.Tensor, cache: DynamicCache, cache_arg: str) -> torch.Tensor:
    """Run the whole prompt [1, L] through the model; logits of the last position [1, V] in float32."""
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{cache_arg: cache})
    return out.logits[:, -1, :].float()


def decode_one_token(model: torch.nn.Module, token: torch.Tensor, cache: DynamicCache, cache_arg: str) -> torch.Tensor:
    """One step: token [1, 1] -> logits [1, V] in float32, the cache grown by one."""
    out = model(input_ids=token, use_cache=True, **{cache_arg: cache})
    return out.logits[:, -1, :].float()


class DecodeSteps(Protocol):
    """How one generation drives the model: the prompt once, then one token per call."""

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Prompt [1, L] -> float32 logits of its last position [1, V]."""

    def decode_one_token(self, token: torch.Tensor) -> torch.Tensor:
        """Token [1, 1] -> float32 logits [1, V] of the next position."""


class DynamicSteps:
    """The default steps: a fresh DynamicCache that grows by one position per token."""

    def __init__(self, model: torch.nn.Module, cache_arg: str) -> None:
        self.model, self.cache_arg = model, cache_arg
        self.cache = DynamicCache(config=model.config)

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        return prefill(self.model, input_ids, self.cache, self.cache_arg)

    def decode_one_token(self, token: torch.Tensor) -> torch.Tensor:
        return decode_one_token(self.model, token, self.cache, self.cache_arg)


def pick_token(scores: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> int:
    """Argmax when greedy, else a draw from softmax(scores) with the request's generator."""
    if greedy:
        return int(scores.argmax(dim=-1).item())
    probs = scores.softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def decode_tokens(model: torch.nn.Module, input_ids: list[int], processors: LogitsProcessorList,
                  greedy: bool, generator: torch.Generator | None, device: torch.device,
                  cache_arg: str, steps: DecodeSteps | None = None) -> Iterator[tuple[int, float]]:
    """Yield (token id, log-probability) forever; the consumer decides when to stop.

    Per token this does as few tensor operations as it can (each one is a
    parallel region that costs far more than its arithmetic on a busy CPU):
    the log-probabilities of the model's own distribution are taken first, so
    the processors may then change ``logits`` in place without a copy; the
    context tensor [1, L] is only kept up to date when processors read it.
    """
    steps = steps if steps is not None else DynamicSteps(model, cache_arg)
    context = torch.tensor([input_ids], dtype=torch.long, device=device)  # [1, L]
    mirostats = [proc for proc in processors if isinstance(proc, Mirostat)]
    # Inference mode is thread-local and a generator may be resumed on another thread
    # (web servers iterate it from a thread pool), so it is entered around each step,
    # never held across a ``yield``.
    with torch.inference_mode():
        logits = steps.prefill(context)
    while True:
        with torch.inference_mode():
            logprobs = torch.log_softmax(logits, dim=-1)  # [1, V], before any processor
            scores = processors(context, logits) if processors else logits  # logits is not read again
            token = pick_token(scores, greedy, generator)
            logprob = float(logprobs[0, token])
            for proc in mirostats:
                proc.observe(token)
        yield token, logprob
        with torch.inference_mode():
            step = torch.tensor([[token]], dtype=torch.long, device=device)  # [1, 1]
            if processors:
                context = torch.cat([context, step], dim=1)
            logits = steps.decode_one_token(step)
