"""Loader registry: name -> loader. Dispatch by name, never by class."""
from __future__ import annotations

from modules.core.config import LoaderOptions
from modules.core.errors import ModelLoadError
from modules.core.loaders.base import Backend, Loader
from modules.core.loaders.llamacpp_loader import LlamaCppLoader
from modules.core.loaders.remote_loader import RemoteLoader
from modules.core.loaders.transformers_loader import TransformersLoader
from modules.core.registry import ModelInfo

LOADERS: dict[str, Loader] = {}


def register_loader(loader: Loader) -> None:
    LOADERS[loader.name] = loader


register_loader(TransformersLoader())
register_loader(LlamaCppLoader())
register_loader(RemoteLoader())


def choose_loader(model: ModelInfo, options: LoaderOptions) -> Loader:
    """The user's choice, else by file type: GGUF -> llama.cpp where installed, else Transformers."""
    wanted = options.loader
    if wanted == "auto" and model.kind == "remote":
        wanted = "remote"
    if wanted == "auto":
        wanted = "transformers"
        llama = LOADERS.get("llama.cpp")
        if model.kind == "gguf" and llama is not None and llama.available()[0]:
            wanted = "llama.cpp"
    loader = LOADERS.get(wanted)
    if loader is None:
        raise ModelLoadError(f"Unknown loader {wanted!r}. Loaders: {', '.join(sorted(LOADERS))}.")
    ok, why = loader.available()
    if not ok:
        raise ModelLoadError(f"The {wanted} loader is not available: {why}")
    return loader


__all__ = ["Backend", "Loader", "LOADERS", "register_loader", "choose_loader"]
