"""What extensions may use of the app, backed by the Context: the host behind ``modules.extension_api``.

The one piece of module-level state for extensions is :data:`HANDLE`: the
:class:`~modules.core.extensions.ExtensionManager` binds it to the host of the
context that loaded the extensions, because an extension's module-level code
(and its Gradio event handlers) has no other way to reach the app. Nothing else
reads it; the rest of Corral passes the Context explicitly.

Which turn a hook is serving (its history and state) is a ``ContextVar`` that the
pipeline sets only for the duration of each hook call, so concurrent turns in
different threads never see each other's.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from modules.core.engine import GenerationRequest
from modules.core.errors import CorralError
from modules.core.presets import params_from_dict
from modules.core.streaming import IncrementalDecoder

REPLY_TOKENS_KEY = "_corral_reply_tokens"  # in the state output_modifier gets: (token ids, logprobs)
SECRET_OPTIONS = {"remote_key"}


@dataclass
class TurnInfo:
    """The turn a hook is serving: its history (role/content/visible dicts) and state."""

    history: list[dict] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    is_chat: bool = False


_TURN: ContextVar[TurnInfo | None] = ContextVar("corral_extension_turn", default=None)


@contextmanager
def serving(turn: TurnInfo | None) -> Iterator[None]:
    """Make ``turn`` the current one while a hook runs."""
    token = _TURN.set(turn)
    try:
        yield
    finally:
        _TURN.reset(token)


def current_turn() -> TurnInfo | None:
    return _TURN.get()


class ExtensionHost:
    """The app as extensions see it. Methods here are the stable surface's implementation."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.ui_components: dict[str, Any] = {}  # shared components the UI offers to extensions
        self._token_texts: tuple[str | None, list[str]] = (None, [])
        self._lock = threading.Lock()

    # -- tokens -------------------------------------------------------------------
    def _local_backend(self) -> Any:
        backend = self.ctx.engine.require_backend()
        if backend.streams_text:
            raise CorralError("The loaded model runs on a remote server, so its token ids are not available "
                              "here. Load a local model to use an extension that needs them.")
        return backend

    def encode(self, text: str) -> list[int]:
        return list(self._local_backend().encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._local_backend().decode(list(ids))

    def count_tokens(self, text: str) -> int:
        return self.ctx.engine.count_tokens(text)

    def eos_token_ids(self) -> set[int]:
        return set(self._local_backend().eos_token_ids)

    def token_texts(self) -> list[str]:
        """The text of every token id of the loaded model's vocabulary (cached per model)."""
        backend = self._local_backend()
        name = backend.info.name
        with self._lock:
            if self._token_texts[0] != name:
                self._token_texts = (name, [backend.decode([i]) for i in range(backend.info.vocab_size)])
            return self._token_texts[1]

    def token_pieces(self, ids: list[int]) -> list[str]:
        """Each token's share of the decoded text ('' for a token that ends mid-character)."""
        decoder = IncrementalDecoder(self.decode)
        return [decoder.push(i) for i in ids]

    # -- generation ----------------------------------------------------------------
    def stream(self, prompt: str, **params: Any) -> Iterator[str]:
        """The model's continuation of ``prompt`` (no hooks), piece by piece."""
        request = GenerationRequest(prompt=prompt, params=params_from_dict(params, "An extension's generate()"))
        for delta in self.ctx.engine.generate(request):
            if delta.text:
                yield delta.text

    def generate(self, prompt: str, **params: Any) -> str:
        return "".join(self.stream(prompt, **params))

    # -- the model and the app -----------------------------------------------------------
    def model_name(self) -> str | None:
        return self.ctx.models.loaded_name

    def model_settings(self) -> dict[str, Any]:
        current, backend = self.ctx.models.current, self.ctx.engine.backend
        if current is None or backend is None:
            return {}
        info = backend.info
        options = {k: v for k, v in asdict(current.options).items() if k not in SECRET_OPTIONS}
        return {"name": info.name, "loader": current.loader, "context_length": info.context_length,
                "dtype": info.dtype, "quantization": info.quantization, "device": info.device,
                "instruction_format": current.info.settings.get("instruction_format"),
                "loader_options": options, "model_config": dict(current.info.settings)}

    def store(self) -> Any:
        return getattr(self.ctx, "store", None) or self.ctx.services.get("store")


class HostHandle:
    """The single slot through which ``modules.extension_api`` finds the host."""

    def __init__(self) -> None:
        self._host: ExtensionHost | None = None

    def bind(self, host: ExtensionHost) -> None:
        self._host = host

    def get(self) -> ExtensionHost:
        if self._host is None:
            raise CorralError("The extension API is used before Corral loaded any extension. Call it from a "
                              "hook, setup() or ui(), not while the module is being imported.")
        return self._host


HANDLE = HostHandle()
