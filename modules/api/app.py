"""The API application: ``create_api(ctx)`` builds a FastAPI app over the context (nothing global)."""
from __future__ import annotations

from fastapi import Depends, FastAPI

from modules.api.auth import KeyCheck
from modules.api.errors import install_error_handlers
from modules.api.routes_arena import arena_router
from modules.api.routes_internal import internal_router
from modules.api.routes_openai import openai_router
from modules.core.config import ServerOptions
from modules.core.context import Context


def create_api(ctx: Context, options: ServerOptions | None = None) -> FastAPI:
    """The OpenAI-compatible API and our internal endpoints; keys from ``options`` (default: the config's)."""
    options = options or ctx.config.server
    keys = KeyCheck(options)
    # With an API key, the schema is as private as the routes: /openapi.json needs the key, and the
    # browser pages (/docs, /redoc), which cannot send it, are off. Without a key all is open anyway.
    public_docs = not keys.api_key
    app = FastAPI(title="Corral API", description="OpenAI-compatible API of Corral.", version="1",
                  **({} if public_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}))
    app.state.limits = options  # max_request_bytes, max_prompt_tokens: read by routes_openai
    install_error_handlers(app)
    app.include_router(openai_router(ctx, keys))
    app.include_router(internal_router(ctx, keys))
    app.include_router(arena_router(ctx, keys))
    if not public_docs:
        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(keys.user)])
        async def openapi() -> dict:
            return app.openapi()
    return app
