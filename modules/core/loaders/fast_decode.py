"""The fast decoding path: a static KV cache and a compiled one-token step.

Why: at batch 1 plain transformers decoding (bitsandbytes 4-bit most of all)
spends most of each token launching kernels from Python, not reading weights.
A :class:`~transformers.StaticCache` keeps every tensor's shape and address
fixed from token to token, so ``torch.compile`` can turn :func:`decode_one_token`
into one graph, and ``mode="reduce-overhead"`` replays it as a CUDA graph: a
single launch per token. Prefill stays eager, since its shape changes with
every prompt.

The cache only grows, in powers of two from 1,024 positions: each new size
compiles once more (a few bounded recompiles: 1k, 2k, 4k...), and a short chat
does not pay attention over a cache sized for the whole context window. The
loader compiles the first size at load time, so the first reply does not stall.

If compiling or running the compiled step fails, the generation in progress
carries on through the normal loop (:class:`~modules.core.loaders.decoding.DynamicSteps`,
re-reading the tokens so far) and the reason is logged; later generations use
the normal loop directly.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from transformers import StaticCache

from modules.core.errors import ModelLoadError
from modules.core.loaders.decoding import DynamicSteps

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
MIN_CACHE = 1024  # positions of the first cache: a prompt plus 512 new tokens fits

# step(model, token [1, 1], position_ids [1, 1], cache, cache_arg) -> float32 logits [1, V]
StepFunction = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, StaticCache, str], torch.Tensor]


def decode_one_token(model: torch.nn.Module, token: torch.Tensor, position: torch.Tensor,
                     cache: StaticCache, cache_arg: str) -> torch.Tensor:
    """One step over the static cache: token [1, 1] at ``position`` [1, 1] -> logits [1, V] float32."""
    out = model(input_ids=token, position_ids=position, use_cache=True, **{cache_arg: cache})
    return out.logits[:, -1, :].float()


def compile_step(device: torch.device) -> StepFunction:
    """``torch.compile`` of :func:`decode_one_token`: CUDA graphs on CUDA, inductor kernels elsewhere."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(decode_one_token, mode=mode, fullgraph=False, dynamic=False)


def cache_size_for(tokens: int, limit: int, smallest: int = MIN_CACHE) -> int:
    """The smallest power of two >= ``tokens`` (at least ``smallest``), capped at ``limit``."""
    size = smallest
    while size < tokens:
        size *= 2
    return max(min(size, limit), tokens)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_option(option: str) -> None:
    """Fail before loading anything when the option is not one of auto|on|off."""
    if option not in MODES:
        raise ModelLoadError(f"Unknown fast_decode value {option!r}: choose auto, on or off.")


def fast_decode_choice(option: str, model: torch.nn.Module) -> tuple[bool, str]:
    """Whether to use the fast path for ``option`` (auto|on|off), and why (for the log and the UI)."""
    check_option(option)
    if option == "off":
        return False, "off (turned off)"
    devices = {p.device for p in model.parameters()}
    if len(devices) != 1:
        return False, "off (the model is split across devices)"
    device = devices.pop()
    if option == "auto" and device.type != "cuda":
        return False, f"off (auto uses it on CUDA only; this model is on {device.type})"
    return True, "on"


class FastDecoder:
    """Static-cache decoding for one loaded model; hands out :class:`StaticSteps` per generation."""

    def __init__(self, model: torch.nn.Module, cache_arg: str, context_length: int,
                 compiler: Callable[[torch.device], StepFunction] | None = compile_step,
                 min_cache: int = MIN_CACHE) -> None:
        """``compiler`` builds the step function; ``None`` runs the static cache eagerly (tests, debugging)."""
        self.model, self.cache_arg, self.context_length = model, cache_arg, context_length
        self.min_cache = min_cache
        self.device = model_device(model)
        self.cache: StaticCache | None = None
        self.cache_size = 0  # positions the current cache holds
        self.failed: str | None = None  # why the fast path was given up, once it has been
        self._step: StepFunction = compiler(self.device) if compiler is not None else decode_one_token

    @property
    def usable(self) -> bool:
        return self.failed is None and self.model is not None

    @property
    def description(self) -> str:
        if self.failed:
            return f"off (failed: {self.failed})"
        compiled = self._step is not decode_one_token
        return "on (static cache" + (", torch.compile" if compiled else "") + ")"

    def steps(self, prompt_tokens: int, max_new_tokens: int) -> "StaticSteps":
        """Steps for one generation of at most ``max_new_tokens`` after a ``prompt_tokens`` prompt."""
        needed = cache_size_for(prompt_tokens + max_new_tokens + 1, self.context_length + 1, self.min_cache)
        if self.cache is None or self.cache_size < needed:
            self.cache = None  # free the smaller cache before allocating the larger one
            self.cache = StaticCache(config=self.model.config, max_cache_len=needed)
            self.cache_size = needed
        return StaticSteps(self, self.cache)

    def warm_up(self, tokens: int = 4) -> None:
        """Compile (and record the CUDA graph) for the first cache size now, instead of at the first reply."""
        bos = getattr(self.model.config, "bos_token_id", None)
        prompt = torch.full((1, 8), int(bos) if isinstance(bos, int) else 1, dtype=torch.long, device=self.device)
        steps = self.steps(prompt.shape[1], min(self.min_cache, self.context_length) - prompt.shape[1] - 1)
        with torch.inference_mode():
            logits = steps.prefill(prompt)
            for _ in range(tokens):
                token = logits.argmax(dim=-1, keepdim=True)  # [1, 1]
                logits = steps.decode_one_token(token)
        if self.failed:
            raise RuntimeError(self.failed)

    def give_up(self, reason: str) -> None:
        self.failed = reason
        log.warning("Fast decoding turned off for this model, using the normal loop: %s", reason)
        self.cache, self.cache_size = None, 0

    def close(self) -> None:
        """Free the cache and the compiled graphs (their CUDA graph memory pools go with them)."""
        self.cache, self.cache_size = None, 0
        self.model = None  # type: ignore[assignment]
        if self._step is not decode_one_token:
            # torch keeps compiled code and CUDA graph pools in process-wide caches.
            torch._dynamo.reset()
        self._step = decode_one_token


class StaticSteps:
    """One generation's steps over the shared static cache (see :class:`DecodeSteps`)."""

    def __init__(self, owner: FastDecoder, cache: StaticCache) -> None:
        self.owner, self.cache = owner, cache
        self.tokens: list[torch.Tensor] = []  # the prompt [1, L], then each token [1, 1]: to fall back mid-stream
        self.length = 0  # positions filled
        self.fallback: DynamicSteps | None = None

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.cache.reset()
        self.tokens, self.length = [input_ids], input_ids.shape[1]
        model = self.owner.model
        position = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # [1, L]
        out = model(input_ids=input_ids, position_ids=position, use_cache=True, logits_to_keep=1,
                    **{self.owner.cache_arg: self.cache})
        return out.logits[:, -1, :].float()

    def decode_one_token(self, token: torch.Tensor) -> torch.Tensor:
        if self.fallback is not None:
            return self.fallback.decode_one_token(token)
        position = torch.full((1, 1), self.length, dtype=torch.long, device=token.device)  # [1, 1]
        self.tokens.append(token)
        self.length += 1
        if self.owner.usable:
            try:
                # A CUDA graph's output is overwritten by its next replay: keep a copy.
                return self.owner._step(self.owner.model, token, position, self.cache, self.owner.cache_arg).clone()
            except Exception as err:  # noqa: BLE001 - any failure of the compiled step means: fall back
                self.owner.give_up(_reason(err))
        return self._fall_back()

    def _fall_back(self) -> torch.Tensor:
        """Carry on with the normal loop: re-read every token so far into a DynamicCache."""
        self.fallback = DynamicSteps(self.owner.model, self.owner.cache_arg)
        return self.fallback.prefill(torch.cat(self.tokens, dim=1))  # [1, length]


def _reason(err: Exception) -> str:
    """The exception's type and first line, for the log and the model's details."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def build_fast_decoder(model: torch.nn.Module, cache_arg: str, option: str, context_length: int,
                       announce: Callable[[str], None] = log.info) -> tuple[FastDecoder | None, str]:
    """The loader's hook: a warmed-up FastDecoder when ``option`` asks for one and it works, else None.

    Returns (decoder or None, what to show the user about the fast path).
    """
    wanted, why = fast_decode_choice(option, model)
    if not wanted:
        return None, why
    announce("Compiling the decoder for fast decoding (a minute or two the first time)")
    try:
        decoder = FastDecoder(model, cache_arg, context_length)
        decoder.warm_up()
    except Exception as err:  # noqa: BLE001 - the normal loop always works
        reason = _reason(err)
        log.warning("Fast decoding is not available for this model, using the normal loop: %s", reason)
        return None, f"off (failed: {reason})"
    return decoder, decoder.description


__all__ = ["FastDecoder", "StaticSteps", "build_fast_decoder", "check_option", "fast_decode_choice", "cache_size_for",
           "decode_one_token", "compile_step"]
