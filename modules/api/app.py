"""The API application: ``create_api(ctx)`` builds a FastAPI app over the context (nothing global)."""
from __future__ import annotations

from fastapi import FastAPI

from modules.api.auth import KeyCheck
from modules.api.errors import install_error_handlers
from modules.api.routes_internal import internal_router
from modules.api.routes_openai import openai_router
from modules.core.config import ServerOptions
from modules.core.context import Context


def create_api(ctx: Context, options: ServerOptions | None = None) -> FastAPI:
    """The OpenAI-compatible API and our internal endpoints; keys from ``options`` (default: the config's)."""
    keys = KeyCheck(options or ctx.config.server)
    app = FastAPI(title="Corral API", description="OpenAI-compatible API of Corral.", version="1")
    install_error_handlers(app)
    app.include_router(openai_router(ctx, keys))
    app.include_router(internal_router(ctx, keys))
    return app
