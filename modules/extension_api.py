"""The stable surface for extensions: what an extension may use of Corral.

    from modules import extension_api as corral

    ids = corral.encode("Hello")            # token ids of the loaded model
    text = corral.generate("Once upon a time", max_new_tokens=40, do_sample=False)
    corral.model_name(), corral.model_settings()
    corral.current_history(), corral.current_state()   # inside a hook: the turn it serves

Only the names in ``__all__`` are promised to stay. Everything else in
``modules`` is Corral's internals and may change between releases. See
``extensions/README.md`` for the hooks and a worked example.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modules.core.extensions.host import HANDLE, REPLY_TOKENS_KEY, current_turn

__all__ = ["TokenInfo", "count_tokens", "current_history", "current_state", "decode", "encode", "eos_token_ids",
           "generate", "logger", "model_name", "model_settings", "reply_tokens", "store", "stream",
           "token_texts", "ui_component"]


@dataclass(frozen=True)
class TokenInfo:
    """One generated token: its id, its share of the reply text, and its log-probability."""

    id: int
    text: str
    logprob: float | None


def encode(text: str) -> list[int]:
    """Token ids of ``text`` as a prompt for the loaded model (BOS included where the model uses one)."""
    return HANDLE.get().encode(text)


def decode(ids: list[int]) -> str:
    """The text of token ids (special tokens left out)."""
    return HANDLE.get().decode(ids)


def count_tokens(text: str) -> int:
    return HANDLE.get().count_tokens(text)


def eos_token_ids() -> set[int]:
    """The ids that end a reply for the loaded model."""
    return HANDLE.get().eos_token_ids()


def token_texts() -> list[str]:
    """The text of every token of the loaded model's vocabulary, indexed by id (cached)."""
    return HANDLE.get().token_texts()


def generate(prompt: str, **params: Any) -> str:
    """The loaded model's continuation of ``prompt``; ``params`` are sampler parameters
    (``max_new_tokens``, ``temperature``, ``do_sample``, ``stop``...). No hooks run, and the
    request waits its turn like any other. Do not call it from a logits processor."""
    return HANDLE.get().generate(prompt, **params)


def stream(prompt: str, **params: Any) -> Iterator[str]:
    """Like :func:`generate`, piece by piece."""
    return HANDLE.get().stream(prompt, **params)


def model_name() -> str | None:
    """The loaded model's name, or None when none is loaded."""
    return HANDLE.get().model_name()


def model_settings() -> dict[str, Any]:
    """name, loader, context_length, dtype, quantization, device, instruction_format,
    loader_options and model_config of the loaded model ({} when none is loaded)."""
    return HANDLE.get().model_settings()


def current_history() -> list[dict]:
    """Inside a hook: the chat history of the turn it serves, as ``{"role", "content", "visible"}``
    dicts (oldest first). Outside a turn, or on the notebook/API text path: []."""
    turn = current_turn()
    return [dict(m) for m in turn.history] if turn else []


def current_state() -> dict[str, Any]:
    """Inside a hook: a copy of the turn's state (the same dict hooks get as ``state``)."""
    turn = current_turn()
    return {k: v for k, v in turn.state.items() if k != REPLY_TOKENS_KEY} if turn else {}


def reply_tokens(state: dict[str, Any]) -> list[TokenInfo]:
    """In output_modifier: the reply's tokens with their log-probabilities ([] when the loader
    gives no token ids, or for a reply made by custom_generate_reply)."""
    ids, logprobs = state.get(REPLY_TOKENS_KEY) or ([], [])
    if not ids:
        return []
    pieces = HANDLE.get().token_pieces(ids)
    probs = list(logprobs) + [None] * (len(ids) - len(logprobs))
    return [TokenInfo(i, text, lp) for i, text, lp in zip(ids, pieces, probs)]


def store() -> Any:
    """Corral's database (``modules.core.store.Store``: chats, documents...), or None."""
    return HANDLE.get().store()


def ui_component(name: str) -> Any:
    """A component the UI shares with extensions (for ``ui()`` events), or None.
    Offered: ``chat_id`` (a gr.State holding the open chat's id), ``user`` (a gr.State with the user's name)."""
    return HANDLE.get().ui_components.get(name)


def logger(name: str) -> logging.Logger:
    """A logger for an extension; its lines appear in Corral's log as ``extensions.NAME``."""
    return logging.getLogger(f"extensions.{name}")
