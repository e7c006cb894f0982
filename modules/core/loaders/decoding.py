"""The token loop for PyTorch models: prefill, then one token at a time.

Runs in the caller's thread (no generate() in a second thread): the engine
iterates this generator, so cancel takes effect between two tokens and a
consumer that stops iterating stops the model.
"""
from __future__ import annotations

import inspect
from typing import Iterator

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


def pick_token(scores: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> int:
    """Argmax when greedy, else a draw from softmax(scores) with the request's generator."""
    if greedy:
        return int(scores.argmax(dim=-1).item())
    probs = scores.softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def decode_tokens(model: torch.nn.Module, input_ids: list[int], processors: LogitsProcessorList,
                  greedy: bool, generator: torch.Generator | None, device: torch.device,
                  cache_arg: str) -> Iterator[tuple[int, float]]:
    """Yield (token id, log-probability) forever; the consumer decides when to stop."""
    context = torch.tensor([input_ids], dtype=torch.long, device=device)  # [1, L]
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        logits = prefill(model, context, cache, cache_arg)
        while True:
            scores = processors(context, logits.clone()) if processors else logits
            token = pick_token(scores, greedy, generator)
            logprob = float(torch.log_softmax(logits, dim=-1)[0, token])
            for proc in processors:
                if isinstance(proc, Mirostat):
                    proc.observe(token)
            yield token, logprob
            step = torch.tensor([[token]], dtype=torch.long, device=device)  # [1, 1]
            context = torch.cat([context, step], dim=1)
            logits = decode_one_token(model, step, cache, cache_arg)
