"""Sampler parameters: one dataclass shared by presets, UI, API and every loader."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class SamplerParams:
    """Neutral defaults: a preset lists only what differs from these."""

    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    typical_p: float = 1.0
    tfs: float = 1.0
    top_a: float = 0.0
    repetition_penalty: float = 1.0
    repetition_penalty_range: int = 0  # 0: the whole context
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    penalty_alpha: float = 0.0
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    xtc_threshold: float = 0.1
    xtc_probability: float = 0.0
    dry_multiplier: float = 0.0
    ban_eos_token: bool = False
    seed: int = -1  # -1: random
    max_new_tokens: int = 512
    truncation_length: int = 0  # 0: the model's context length
    stop: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def replace(self, **changes: Any) -> "SamplerParams":
        data = asdict(self)
        data.update(changes)
        return SamplerParams(**data)

    def non_neutral(self) -> dict[str, Any]:
        """The values that differ from the neutral defaults (what a preset file holds)."""
        neutral = SamplerParams()
        return {k: v for k, v in asdict(self).items() if v != getattr(neutral, k)}

    @property
    def greedy(self) -> bool:
        """Greedy when sampling is off, or temperature 0 (the API's convention)."""
        return (not self.do_sample) or self.temperature <= 0 or self.top_k == 1


MIN_TEMPERATURE = 0.01  # below this (but above 0) logits / temperature overflow: say 0 for greedy
MAX_SEED = 2**63 - 1
MAX_INT = 2**31 - 1  # loaders hand these to C (llama.cpp) as 32-bit ints
# Ranges every sampler parameter must fall in, whoever sets it (API, preset file, UI).
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0, 5), "top_p": (0, 1), "top_k": (0, MAX_INT), "min_p": (0, 1), "typical_p": (0, 1),
    "tfs": (0, 1), "top_a": (0, 1), "repetition_penalty": (0.01, 100), "repetition_penalty_range": (0, MAX_INT),
    "presence_penalty": (-100, 100), "frequency_penalty": (-100, 100), "no_repeat_ngram_size": (0, 1024),
    "penalty_alpha": (0, 100), "mirostat_mode": (0, 2), "mirostat_tau": (0, 100), "mirostat_eta": (0, 10),
    "xtc_threshold": (0, 1), "xtc_probability": (0, 1), "dry_multiplier": (0, 100), "seed": (-1, MAX_SEED),
    "max_new_tokens": (1, MAX_INT), "truncation_length": (0, MAX_INT),
}


def param_problem(params: SamplerParams) -> tuple[str, str] | None:
    """(field, what is wrong) for the first value that would break sampling; None when all are usable.

    Values outside these ranges do not fail cleanly later: a temperature of 1e-300 or a
    repetition penalty of 1e-300 turns the logits into inf/NaN, a seed past 64 bits overflows.
    """
    for name, (low, high) in RANGES.items():
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return name, f"{name} must be a finite number, not {value!r}"
        if not low <= value <= high:
            return name, f"{name} must be between {low} and {high}; it is {value!r}"
    if 0 < params.temperature < MIN_TEMPERATURE:
        return "temperature", (f"temperature {params.temperature!r} is too small to sample with: use 0 for greedy "
                               f"decoding or at least {MIN_TEMPERATURE}")
    for token, bias in params.logit_bias.items():
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= MAX_INT:
            return "logit_bias", f"logit_bias keys must be token ids from 0 to {MAX_INT}; {token!r} is not"
        if not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
            return "logit_bias", f"logit_bias values must be between -100 and 100; token {token} has {bias!r}"
    return None


# Which parameter needs which feature. A loader lists the features it applies;
# the engine reports any non-neutral parameter outside that list.
SAMPLER_FEATURES: dict[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "tfs": "tfs",
    "top_a": "top_a",
    "repetition_penalty": "repetition_penalty",
    "repetition_penalty_range": "repetition_penalty_range",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
    "penalty_alpha": "penalty_alpha",
    "mirostat_mode": "mirostat",
    "xtc_probability": "xtc",
    "dry_multiplier": "dry",
    "ban_eos_token": "ban_eos_token",
    "seed": "seed",
    "logit_bias": "logit_bias",
}


def unsupported_parameters(params: SamplerParams, supported: set[str]) -> list[str]:
    """Names of non-neutral parameters whose feature the loader does not apply."""
    out = []
    for name in params.non_neutral():
        feature = SAMPLER_FEATURES.get(name)
        if feature and feature not in supported:
            out.append(name)
    return sorted(out)
