"""The default model loaded once per test session and lent to every context that needs it as is.

Loading SmolLM2-135M-Instruct costs seconds of two busy cores each time; most test modules want
the same thing (float32 on the CPU, default options). The ``default_model`` session fixture in
``conftest.py`` loads it once; :meth:`SharedModel.lend` puts it into any context, whose own
``models.unload()`` or ``models.load(other)`` then lets go of it without freeing it.

Tests that must change load options (4-bit, another dtype, fast_decode, another loader) or
that test loading itself still call ``ctx.models.load`` and say why.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.core.config import DEFAULT_MODEL_NAME, LoaderOptions
from modules.core.context import Context
from modules.core.engine import Engine
from modules.core.models import LoadedModel, ModelManager
from modules.core.registry import ModelRegistry

# The options every shared load uses; a context lent the model reports them as its loaded options.
SHARED_OPTIONS = {"dtype": "float32", "cpu": True}


class SharedBackend:
    """A loaded backend lent to several engines: everything passes through, except ``unload``.

    An engine calls ``unload()`` on the backend it replaces; the session's model must survive
    that, so only :meth:`SharedModel.close` frees it.
    """

    def __init__(self, backend: Any) -> None:
        object.__setattr__(self, "_backend", backend)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._backend, name, value)

    def unload(self) -> None:
        """Nothing: the session fixture frees the model at the end of the run."""


@dataclass
class SharedModel:
    backend: SharedBackend
    loaded: LoadedModel
    manager: ModelManager

    def lend(self, ctx: Context) -> Context:
        """Put the shared model into ``ctx`` as if ``ctx.models.load(DEFAULT_MODEL_NAME)`` had loaded it."""
        ctx.engine.set_backend(self.backend)  # type: ignore[arg-type]
        ctx.models.current = self.loaded
        return ctx

    def close(self) -> None:
        self.manager.unload()


def load_shared_model(models_dir: Path) -> SharedModel:
    """Load the default model from ``models_dir`` (float32, CPU) for the whole session."""
    manager = ModelManager(ModelRegistry(models_dir), Engine(), LoaderOptions(**SHARED_OPTIONS))
    loaded = manager.load(DEFAULT_MODEL_NAME)
    return SharedModel(SharedBackend(manager.engine.backend), loaded, manager)
