"""The one interface every loader implements.

A loader turns a model on disk (or a remote server) into a :class:`Backend`.
The engine drives a backend; the UI and API only ever talk to the engine, so
they cannot tell loaders apart except by speed.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, runtime_checkable

from modules.core.prompt_tokens import Segment, SpecialTokens
from modules.core.sampling import SamplerParams

# progress(fraction 0..1, message) -- the UI turns it into a progress bar.
ProgressCallback = Callable[[float, str], None]


@dataclass
class Piece:
    """One step of a backend's output: a token id (local loaders) or text (remote)."""

    token_id: int | None = None
    text: str | None = None
    logprob: float | None = None  # log-probability of the chosen token, where known


@dataclass
class BackendInfo:
    """What the UI shows about a loaded model."""

    name: str
    loader: str
    context_length: int
    dtype: str = ""
    quantization: str = ""
    device: str = "cpu"
    memory_bytes: int = 0
    details: dict = field(default_factory=dict)
    vocab_size: int = 0  # token ids run from 0 to vocab_size - 1; 0: unknown (remote)


@runtime_checkable
class Backend(Protocol):
    """A loaded model. Local backends stream token ids; remote ones stream text.

    Everything the engine, prompt building and extensions may ask of a model is here, so
    nobody probes a backend for optional attributes.
    """

    info: BackendInfo
    eos_token_ids: set[int]
    # Sampler features this backend applies (see sampling.SAMPLER_FEATURES).
    supported_samplers: set[str]
    streams_text: bool  # True: stream() yields text pieces; no tokenizer here
    special_tokens: SpecialTokens  # BOS / EOS texts, for templates' {{ bos_token }} / {{ eos_token }}
    bos_prefix: list[int]  # the ids every prompt starts with ([BOS] or nothing); truncation keeps them

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt written whole by its author: control texts (<s>, </s>...) as ids, BOS once."""

    def encode_segments(self, segments: list[Segment]) -> list[int]:
        """Token ids of a built prompt: only the format's own text may hold control tokens (prompt_tokens)."""

    def decode(self, ids: list[int]) -> str:
        """Text of token ids; special tokens skipped unless models/config.yaml sets skip_special_tokens: false."""

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` as a prompt (remote backends may estimate)."""

    def stream(self, prompt: str, input_ids: list[int] | None, params: SamplerParams,
               cancel: threading.Event, logits_processors: list = ()) -> Iterator[Piece]:
        """Generate until the caller stops iterating, ``cancel`` is set, or the model ends.

        Local backends ignore ``prompt`` and use ``input_ids``; remote ones use ``prompt``.
        ``logits_processors`` (from extensions) run after the backend's own; a backend
        that samples outside Python reports them as unsupported instead.
        Stop strings and max_new_tokens are the engine's job; a backend may also honour them.
        """

    def unload(self) -> None:
        """Free every byte the backend holds (CPU and GPU)."""


class Loader(Protocol):
    """Builds a backend. One per kind, registered by name in ``loaders/__init__``."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, why and how to install)."""

    def load(self, model: "ModelInfo", options: "LoaderOptions", progress: ProgressCallback) -> Backend:  # noqa: F821
        """Load ``model``; raise ModelLoadError with a readable message on failure."""
