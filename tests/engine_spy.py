"""What the engine really gives a model: the prompt ids after truncation."""
from __future__ import annotations

import pytest

from modules.core.context import Context
from modules.core.engine import GenerationRequest
from modules.core.sampling import SamplerParams


def ids_given_to_the_model(ctx: Context, ids: list[int], params: SamplerParams,
                           monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], int]:
    """Generate from ``ids`` and return (the ids the model was given, how many were cut)."""
    seen: list[list[int]] = []
    real = ctx.engine._pieces

    def spy(backend, request, input_ids, budget):
        seen.append(list(input_ids))
        return real(backend, request, input_ids, budget)

    monkeypatch.setattr(ctx.engine, "_pieces", spy)
    deltas = list(ctx.engine.generate(GenerationRequest(prompt="", input_ids=ids, params=params)))
    return seen[0], deltas[0].truncated_prompt_tokens
