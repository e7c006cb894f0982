"""Raw completion on free text (the Notebook): no instruction format, the text is the prompt."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from modules.core.engine import Engine, GenerationRequest
from modules.core.generation import Generation, prepare_text, run_generation
from modules.core.sampling import SamplerParams


@dataclass
class Completion:
    """The completion so far, with the counts a user watches."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str | None = None  # set on the last update: stop | length | cancelled
    warnings: list[str] = field(default_factory=list)

    def report(self) -> str:
        """'prompt 12 tokens · 40 new tokens · 18.2 tokens/s · stopped'."""
        speed = self.completion_tokens / self.seconds if self.seconds > 0 else 0.0
        parts = [f"prompt {self.prompt_tokens} tokens", f"{self.completion_tokens} new tokens", f"{speed:.1f} tokens/s"]
        ending = {"cancelled": "stopped", "length": "reached max_new_tokens", "stop": "done"}
        if self.finish_reason:
            parts.append(ending.get(self.finish_reason, self.finish_reason))
        return " · ".join(parts + self.warnings)


def complete(engine: Engine, prompt: str, params: SamplerParams, cancel: threading.Event,
             ctx: Any = None, settings: dict | None = None) -> Iterator[Completion]:
    """Stream the continuation of ``prompt``; each update holds the whole completion so far.

    With ``ctx``, the extensions' hooks apply (input_modifier on the prompt, output_modifier
    on the whole completion, which the last update then holds); ``settings`` is their ``state``.
    """
    state = Completion()
    generation: Generation | None = None
    if ctx is not None:
        prepared = prepare_text(ctx, prompt, params, state=settings, interface="notebook")
        prepared.request.cancel = cancel
        generation = run_generation(ctx, prepared)
        deltas: Iterator = iter(generation)
    else:
        deltas = engine.generate(GenerationRequest(prompt=prompt, params=params, cancel=cancel))
    for delta in deltas:
        state.text += delta.text
        state.prompt_tokens = delta.prompt_tokens or state.prompt_tokens
        state.completion_tokens = max(state.completion_tokens, delta.completion_tokens)
        state.seconds = delta.seconds or state.seconds
        state.warnings.extend(delta.warnings)
        state.finish_reason = delta.finish_reason
        if generation is not None and delta.finish_reason is not None:
            state.text = generation.shown  # after output_modifier
            state.warnings.extend(str(n) for n in generation.notices)
        yield state
