"""Logits processors: transformers' own where it has them, ours where it does not.

Each processor is called as ``processor(input_ids [1, L], scores [1, V]) -> scores``,
the transformers convention, so extensions' processors mix in freely.
Ours: repetition penalty with a range, presence/frequency penalties, logit bias,
ban-EOS, tail-free sampling, top-a, XTC and Mirostat (v1 and v2).
"""
from __future__ import annotations

import math

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from modules.core.sampling import SamplerParams

# Features the Transformers loader applies (penalty_alpha and DRY are not among them).
TRANSFORMERS_FEATURES = {
    "temperature", "top_p", "top_k", "min_p", "typical_p", "tfs", "top_a", "repetition_penalty",
    "repetition_penalty_range", "presence_penalty", "frequency_penalty", "no_repeat_ngram_size",
    "mirostat", "xtc", "ban_eos_token", "seed", "logit_bias",
}


class RepetitionPenaltyRange(LogitsProcessor):
    """Repetition penalty over the last ``window`` tokens (0: all), as in CTRL."""

    def __init__(self, penalty: float, window: int) -> None:
        self.penalty, self.window = penalty, window

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        context = input_ids[:, -self.window:] if self.window > 0 else input_ids
        score = torch.gather(scores, 1, context)
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return scores.scatter(1, context, score)


class PresenceFrequencyPenalty(LogitsProcessor):
    """OpenAI-style: subtract presence once per seen token and frequency per occurrence."""

    def __init__(self, presence: float, frequency: float, window: int) -> None:
        self.presence, self.frequency, self.window = presence, frequency, window

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        context = input_ids[:, -self.window:] if self.window > 0 else input_ids
        counts = torch.zeros_like(scores).scatter_add_(1, context, torch.ones_like(context, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class LogitBias(LogitsProcessor):
    """Add a fixed bias to chosen token ids (the API's ``logit_bias``)."""

    def __init__(self, bias: dict[int, float]) -> None:
        self.ids = torch.tensor([int(k) for k in bias], dtype=torch.long)
        self.values = torch.tensor([float(v) for v in bias.values()])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        inside = self.ids < scores.shape[-1]  # ids past the vocabulary name no token: nothing to bias
        ids = self.ids[inside].to(scores.device)
        scores[:, ids] += self.values[inside].to(scores.device, scores.dtype)
        return scores


class BanTokens(LogitsProcessor):
    """Never pick these ids (ban EOS)."""

    def __init__(self, ids: set[int]) -> None:
        self.ids = sorted(ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.ids] = -math.inf
        return scores


class TailFree(LogitsProcessor):
    """Tail-free sampling: cut where the second derivative of sorted probabilities flattens."""

    def __init__(self, z: float) -> None:
        self.z = z

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        sorted_logits, order = torch.sort(scores, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        d2 = probs.diff().diff().abs()
        d2 = d2 / d2.sum(dim=-1, keepdim=True)
        cumulative = d2.cumsum(dim=-1)
        remove = cumulative > self.z
        # d2 is two shorter: keep the first token, and pad the end as removed.
        remove = torch.cat([torch.zeros_like(remove[:, :1]), remove, torch.ones_like(remove[:, :1])], dim=-1)
        mask = remove.scatter(1, order, remove)
        return scores.masked_fill(mask, -math.inf)


class TopA(LogitsProcessor):
    """Top-a: drop tokens with probability below a * p_max**2."""

    def __init__(self, a: float) -> None:
        self.a = a

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.softmax(dim=-1)
        limit = self.a * probs.max(dim=-1, keepdim=True).values ** 2
        return scores.masked_fill(probs < limit, -math.inf)


class XTC(LogitsProcessor):
    """Exclude Top Choices: with some probability, drop every token above the threshold but the least likely."""

    def __init__(self, threshold: float, probability: float, generator: torch.Generator | None) -> None:
        self.threshold, self.probability, self.generator = threshold, probability, generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        roll = torch.rand(1, generator=self.generator).item()
        if roll >= self.probability:
            return scores
        probs = scores.softmax(dim=-1)
        above = probs >= self.threshold
        if above.sum() < 2:
            return scores
        keep_last = probs.masked_fill(~above, math.inf).argmin(dim=-1, keepdim=True)
        above.scatter_(1, keep_last, False)
        return scores.masked_fill(above, -math.inf)


class Mirostat(LogitsProcessor):
    """Mirostat v2 (mode 2) and a v1-like truncation (mode 1): aim at surprise ``tau``.

    Keeps tokens whose surprise (-log2 p) is below ``mu``; after each pick the
    engine calls :meth:`observe` so ``mu`` follows the observed surprise.
    """

    def __init__(self, mode: int, tau: float, eta: float) -> None:
        self.mode, self.tau, self.eta = mode, tau, eta
        self.mu = 2 * tau
        self._log_probs: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        log_probs = scores.log_softmax(dim=-1)
        surprise = -log_probs / math.log(2)
        mask = surprise > self.mu
        best = scores.argmax(dim=-1, keepdim=True)
        mask.scatter_(1, best, False)  # always keep the most likely token
        self._log_probs = log_probs
        return scores.masked_fill(mask, -math.inf)

    def observe(self, token_id: int) -> None:
        if self._log_probs is None:
            return
        observed = -self._log_probs[0, token_id].item() / math.log(2)
        self.mu -= self.eta * (observed - self.tau)


def build_processors(params: SamplerParams, eos_ids: set[int], generator: torch.Generator | None) -> LogitsProcessorList:
    """The processors for ``params``, in transformers' order: penalties, then (sampling) warpers."""
    procs = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyRange(params.repetition_penalty, params.repetition_penalty_range))
    if params.presence_penalty or params.frequency_penalty:
        procs.append(PresenceFrequencyPenalty(params.presence_penalty, params.frequency_penalty,
                                              params.repetition_penalty_range))
    if params.no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
    if params.logit_bias:
        procs.append(LogitBias(params.logit_bias))
    if params.ban_eos_token and eos_ids:
        procs.append(BanTokens(eos_ids))
    if params.greedy:
        return procs
    procs.extend(_warpers(params, generator))
    return procs


def _warpers(params: SamplerParams, generator: torch.Generator | None) -> list[LogitsProcessor]:
    if params.mirostat_mode:
        return [TemperatureLogitsWarper(params.temperature),
                Mirostat(params.mirostat_mode, params.mirostat_tau, params.mirostat_eta)]
    warpers: list[LogitsProcessor] = []
    if params.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k > 0:
        warpers.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(params.top_p))
    if params.min_p > 0:
        warpers.append(MinPLogitsWarper(params.min_p))
    if params.typical_p < 1.0:
        warpers.append(TypicalLogitsWarper(params.typical_p))
    if params.tfs < 1.0:
        warpers.append(TailFree(params.tfs))
    if params.top_a > 0:
        warpers.append(TopA(params.top_a))
    if params.xtc_probability > 0:
        warpers.append(XTC(params.xtc_threshold, params.xtc_probability, generator))
    return warpers
