"""The context: every service of the app in one object, built once in app.py."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from modules.core.config import DEFAULT_MODEL_NAME, AppConfig
from modules.core.engine import Engine
from modules.core.extensions import ExtensionManager
from modules.core.loaders.remote_loader import RemoteCatalog
from modules.core.models import ModelManager
from modules.core.presets import PresetLibrary
from modules.core.registry import ModelRegistry
from modules.core.store import Store
from modules.core.templates import FormatLibrary

log = logging.getLogger(__name__)


@dataclass
class Context:
    config: AppConfig
    registry: ModelRegistry
    engine: Engine
    models: ModelManager
    formats: FormatLibrary
    presets: PresetLibrary
    store: Store | None = None  # chats, characters, settings per user (user_data/corral.db)
    extensions: ExtensionManager = field(default_factory=ExtensionManager)  # enabled in app.py (--extensions)
    services: dict[str, Any] = field(default_factory=dict)  # later layers attach theirs (store, extensions)


def build_context(config: AppConfig) -> Context:
    """Build every service from the config. Loads nothing; see :func:`load_startup_model`."""
    registry = ModelRegistry(config.models_dir)
    if config.loader.remote_url:  # the server's models join the list (the Model tab's dropdown)
        registry.sources.append(RemoteCatalog(config.loader.remote_url, config.loader.remote_key, config.models_dir))
    engine = Engine()
    return Context(config=config, registry=registry, engine=engine,
                   models=ModelManager(registry, engine, config.loader),
                   formats=FormatLibrary(config.templates_dir), presets=PresetLibrary(config.presets_dir),
                   store=Store(config.user_data_dir / "corral.db"),
                   extensions=ExtensionManager(config.extensions_dir))


def startup_model_name(ctx: Context) -> str | None:
    """--model, else the default model when present, else the first model listed."""
    if ctx.config.no_model:
        return None
    if ctx.config.model:
        return ctx.config.model
    names = ctx.registry.names()
    if DEFAULT_MODEL_NAME in names:
        return DEFAULT_MODEL_NAME
    return names[0] if names else None
