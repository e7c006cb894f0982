"""Our own endpoints under /v1/internal: models, tokens, stop, and the exact chat prompt."""
from __future__ import annotations

from dataclasses import fields

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from modules.api.auth import KeyCheck
from modules.api.convert import chat_completion_job, loaded_model
from modules.api.errors import ApiError
from modules.api.routes_openai import parse
from modules.api.schemas import ChatPromptBody, LoadBody, TextBody, TokensBody
from modules.core.config import LoaderOptions
from modules.core.context import Context
from modules.core.errors import CorralError
from modules.core.generation import format_for_loaded_model, reply_request, special_tokens

PREFIX = "/v1/internal"


def model_info(ctx: Context) -> dict:
    """What a client (or a Corral using this one as its remote backend) needs to know about the model."""
    current, backend = ctx.models.current, ctx.engine.backend
    if current is None or backend is None:
        return {"server": "corral", "model_name": None, "loader": None, "queue_depth": ctx.engine.busy}
    try:
        fmt = format_for_loaded_model(ctx, ctx.config.instruction_format)
        template, format_name, reason = fmt.template, fmt.name, fmt.reason
    except CorralError as err:
        template, format_name, reason = None, None, f"no format: {err}"
    tokens = special_tokens(ctx)
    return {"server": "corral", "model_name": current.info.name, "loader": current.loader,
            "context_length": backend.info.context_length, "instruction_format": format_name,
            "format_reason": reason, "chat_template": template, "bos_token": tokens.bos, "eos_token": tokens.eos,
            "supported_samplers": sorted(backend.supported_samplers), "dtype": backend.info.dtype,
            "quantization": backend.info.quantization, "device": backend.info.device,
            "queue_depth": ctx.engine.busy}  # requests generating or waiting


def _chat_prompt(ctx: Context, body: ChatPromptBody) -> dict:
    """Built by the very code a chat completion uses (convert.chat_completion_job, generation.reply_request)."""
    job = chat_completion_job(ctx, body)
    request, plan = reply_request(ctx, job)
    fmt = format_for_loaded_model(ctx, job.format_name)
    return {"prompt": request.prompt, "stop_strings": request.stop_strings, "instruction_format": fmt.name,
            "format_reason": fmt.reason, "mode": job.settings.mode, "dropped_turns": plan.dropped_turns,
            "prompt_tokens": len(request.input_ids) if request.input_ids is not None
            else ctx.engine.count_tokens(request.prompt),
            "prompt_token_ids": request.input_ids}  # exactly what generation gets (None: a remote server tokenizes)


def _decode(ctx: Context, tokens: list[int]) -> str:
    try:
        return ctx.engine.require_backend().decode(tokens)
    except (IndexError, ValueError, OverflowError, TypeError) as err:
        raise ApiError(400, f"These token ids cannot be decoded by the loaded model's tokenizer ({err}).",
                       param="tokens", code="invalid_value") from None


def _load(ctx: Context, body: LoadBody) -> dict:
    unknown = sorted(set(body.args) - {f.name for f in fields(LoaderOptions)})
    if unknown:
        raise ApiError(400, f"Unknown loader option(s) in args: {', '.join(unknown)[:200]}. Known: "
                            f"{', '.join(sorted(f.name for f in fields(LoaderOptions)))}.", param="args",
                       code="invalid_value")
    names = ctx.registry.names() if body.args.get("loader") != "remote" else [body.model_name]
    if body.model_name not in names:
        known = ", ".join(names) or "none"
        raise ApiError(404, f"No model called {body.model_name!r}. Models: {known}.", param="model_name",
                       code="model_not_found")
    loaded = ctx.models.load(body.model_name, overrides=dict(body.args))
    return {"status": "ok", "model_name": loaded.info.name, "loader": loaded.loader,
            "seconds": round(loaded.seconds, 2)}


def internal_router(ctx: Context, keys: KeyCheck) -> APIRouter:
    router = APIRouter(prefix=PREFIX, dependencies=[Depends(keys.user)])

    @router.get("/model/list")
    async def model_list() -> dict:
        return {"model_names": await run_in_threadpool(ctx.registry.names)}

    @router.get("/model/info")
    async def info() -> dict:
        return await run_in_threadpool(model_info, ctx)

    @router.post("/model/load", dependencies=[Depends(keys.admin)])
    async def load(request: Request) -> dict:
        body = await parse(request, LoadBody)
        return await run_in_threadpool(_load, ctx, body)

    @router.post("/model/unload", dependencies=[Depends(keys.admin)])
    async def unload() -> dict:
        await run_in_threadpool(ctx.models.unload)
        return {"status": "ok"}

    @router.post("/token-count")
    async def token_count(request: Request) -> dict:
        body = await parse(request, TextBody)
        return {"length": await run_in_threadpool(ctx.engine.count_tokens, body.text)}

    @router.post("/encode")
    async def encode(request: Request) -> dict:
        body = await parse(request, TextBody)
        tokens = await run_in_threadpool(lambda: ctx.engine.require_backend().encode(body.text))
        return {"tokens": tokens, "length": len(tokens)}

    @router.post("/decode")
    async def decode(request: Request) -> dict:
        body = await parse(request, TokensBody)
        return {"text": await run_in_threadpool(_decode, ctx, body.tokens)}

    @router.post("/stop-generation")
    async def stop_generation() -> dict:
        return {"stopped": ctx.engine.stop_all()}

    @router.post("/chat-prompt")
    async def chat_prompt(request: Request) -> dict:
        body = await parse(request, ChatPromptBody)
        loaded_model(ctx, body.model)
        return await run_in_threadpool(_chat_prompt, ctx, body)

    return router
