"""Loading and unloading models: one manager, one loaded model, progress for the UI."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from modules.core.config import LoaderOptions
from modules.core.engine import Engine
from modules.core.errors import ModelLoadError
from modules.core.load_checks import check_options
from modules.core.loaders import choose_loader
from modules.core.loaders.base import ProgressCallback
from modules.core.loaders.memory import cuda_allocated, process_rss, release_memory
from modules.core.loaders.remote_loader import RemoteCatalog
from modules.core.registry import ModelInfo, ModelRegistry

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    info: ModelInfo
    options: LoaderOptions
    loader: str
    seconds: float


def _quiet(fraction: float, message: str) -> None:
    log.debug("load %.0f%% %s", fraction * 100, message)


class ModelManager:
    """Loads a model from the registry into the engine; unloading frees its memory."""

    def __init__(self, registry: ModelRegistry, engine: Engine, defaults: LoaderOptions) -> None:
        self.registry, self.engine, self.defaults = registry, engine, defaults
        self.current: LoadedModel | None = None
        self._lock = threading.Lock()

    @property
    def loaded_name(self) -> str | None:
        return self.current.info.name if self.current else None

    def options_for(self, info: ModelInfo, overrides: dict | None = None) -> LoaderOptions:
        """Defaults, then models/config.yaml's loader settings for this model, then the caller's."""
        from dataclasses import fields

        known = {f.name for f in fields(LoaderOptions)}
        per_model = {k: v for k, v in info.settings.items() if k in known}
        return self.defaults.merged(per_model).merged(overrides or {})

    def load(self, name: str, overrides: dict | None = None, progress: ProgressCallback = _quiet) -> LoadedModel:
        """Unload what is loaded, then load ``name``.

        Options are checked before the loaded model is touched; when the load itself fails (bad
        files, out of memory), the previous model is loaded again and the error says so.
        """
        with self._lock:
            info = self._lookup(name, overrides)
            if info.problem:
                raise ModelLoadError(info.problem)
            options = self.options_for(info, overrides)
            check_options(name, options)
            loader = choose_loader(info, options)
            previous = self.current
            self._unload_locked()
            try:
                return self._load_locked(info, options, loader, progress)
            except Exception as err:
                if previous is None:
                    raise
                raise self._restore_locked(previous, err) from err

    def _load_locked(self, info: ModelInfo, options: LoaderOptions, loader, progress: ProgressCallback) -> LoadedModel:
        progress(0.0, f"Loading {info.name} with {loader.name}")
        started = time.perf_counter()
        backend = loader.load(info, options, progress)
        self.engine.set_backend(backend)
        self.current = LoadedModel(info, options, loader.name, time.perf_counter() - started)
        progress(1.0, f"Loaded {info.name} in {self.current.seconds:.1f} s")
        log.info("Loaded %s with %s in %.1f s", info.name, loader.name, self.current.seconds)
        return self.current

    def _restore_locked(self, previous: LoadedModel, err: Exception) -> Exception:
        """Load ``previous`` again after a failed load; the error to raise says whether it worked."""
        release_memory()
        try:
            self._load_locked(previous.info, previous.options, choose_loader(previous.info, previous.options), _quiet)
        except Exception as again:  # noqa: BLE001 - reported with the first failure
            log.error("Reloading %s after a failed load failed too: %s", previous.info.name, again)
            return ModelLoadError(f"{err} The previous model, {previous.info.name}, could not be loaded again "
                                  f"({again}); no model is loaded.")
        log.info("The load failed; %s is loaded again.", previous.info.name)
        return ModelLoadError(f"{err} The previous model, {previous.info.name}, is loaded again.")

    def _lookup(self, name: str, overrides: dict | None) -> ModelInfo:
        """models/ (and the registry's other sources), or the server named in the overrides for ``remote``."""
        wanted = self.defaults.merged(overrides or {})
        if wanted.loader == "remote" and wanted.remote_url:
            return RemoteCatalog(wanted.remote_url, wanted.remote_key, self.registry.models_dir).get(name)
        return self.registry.get(name)

    def unload(self) -> None:
        with self._lock:
            self._unload_locked()

    def _unload_locked(self) -> None:
        if self.engine.backend is None:
            return
        before = process_rss() + cuda_allocated()
        self.engine.set_backend(None)
        self.current = None
        release_memory()
        log.info("Unloaded; freed %.0f MB", (before - process_rss() - cuda_allocated()) / 1e6)
