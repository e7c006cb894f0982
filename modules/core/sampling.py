"""Sampler parameters: one dataclass shared by presets, UI, API and every loader."""
from __future__ import annotations

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
