"""The OpenAI-compatible endpoints: models, completions, chat completions (streaming and not)."""
from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from modules.api.auth import KeyCheck
from modules.api.convert import chat_completion_job, completion_job, loaded_model, unknown_fields
from modules.api.errors import ApiError
from modules.api.replies import ReplyShape
from modules.api.schemas import ChatCompletionBody, CompletionBody, GenerationFields
from modules.api.streaming import ClientGone, DeltaPump, collect, event_stream
from modules.core.context import Context
from modules.core.generation import ReplyJob, generate_reply

log = logging.getLogger(__name__)
B = TypeVar("B", bound=BaseModel)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_request_bytes`` (read in chunks)."""
    limit = request.app.state.limits.max_request_bytes
    declared = request.headers.get("content-length", "")
    too_big = ApiError(413, f"The request body is larger than this server accepts ({limit} bytes). Send a shorter "
                            "request, or start the server with a larger --api-max-request-bytes.",
                       code="request_too_large")
    if limit and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if limit and size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def parse(request: Request, model: type[B]) -> B:
    """The body validated strictly as JSON; errors become 400s through the ValidationError handler."""
    return model.model_validate_json(await read_body(request) or b"", strict=True)


def model_entry(ctx: Context) -> dict[str, Any]:
    """The loaded model as an OpenAI model object (``max_model_len`` as vLLM names the context length)."""
    current, backend = ctx.models.current, ctx.engine.require_backend()
    path = current.info.path if current else None
    created = int(path.stat().st_mtime) if path is not None and path.exists() else 0
    return {"id": backend.info.name if current is None else current.info.name, "object": "model",
            "created": created, "owned_by": "corral", "max_model_len": backend.info.context_length,
            "loader": backend.info.loader}


async def reply(ctx: Context, request: Request, body: GenerationFields,
                build: Callable[[Context, Any], ReplyJob], shape: ReplyShape) -> Any:
    """Run one generation: streamed as server-sent events, or collected into one answer."""
    if body.logprobs:
        raise ApiError(400, "logprobs are not supported by this server.", param="logprobs", code="invalid_value")
    job = await run_in_threadpool(build, ctx, body)
    limit = request.app.state.limits.max_prompt_tokens
    deltas = await run_in_threadpool(generate_reply, ctx, job, limit)  # the prompt is built here: errors raise now
    warnings = unknown_fields(body)
    for warning in warnings:
        log.warning("API: %s", warning)
    pump = DeltaPump(deltas, job.cancel)
    if body.stream:
        # The background task runs however the response ends, even when the client left before
        # the stream began (then the event generator never runs its own ``finally``).
        return StreamingResponse(event_stream(pump, shape.head(), shape.chunks, shape.tail),
                                 media_type="text/event-stream", headers=SSE_HEADERS,
                                 background=BackgroundTask(job.cancel.set))
    try:
        collected = await collect(pump, request)
    except ClientGone:
        log.info("API: the client hung up; its generation was cancelled.")
        return Response(status_code=499)
    return shape.full(collected, warnings)


def openai_router(ctx: Context, keys: KeyCheck) -> APIRouter:
    router = APIRouter(dependencies=[Depends(keys.user)])

    @router.get("/v1/models")
    async def list_models() -> dict:
        data = [model_entry(ctx)] if ctx.engine.backend is not None else []
        return {"object": "list", "data": data}

    @router.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict:
        loaded_model(ctx, model_id)
        return model_entry(ctx)

    @router.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await parse(request, CompletionBody)
        model = loaded_model(ctx, body.model)
        prompt = body.prompt if isinstance(body.prompt, str) else (body.prompt[0] if body.prompt else "")
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        shape = ReplyShape(chat=False, model=model, include_usage=include_usage, echo=prompt if body.echo else "")
        return await reply(ctx, request, body, completion_job, shape)

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await parse(request, ChatCompletionBody)
        model = loaded_model(ctx, body.model)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        shape = ReplyShape(chat=True, model=model, include_usage=include_usage)
        return await reply(ctx, request, body, chat_completion_job, shape)

    return router
