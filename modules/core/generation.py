"""From a conversation to an engine request: the format, the prompt, the stops.

The chat UI, the notebook and the API all come through here, so a prompt is
built one way everywhere (and "show the exact prompt" shows what is sent).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator

from modules.core.chat import ChatSettings, PromptPlan, Turn, build_prompt
from modules.core.context import Context
from modules.core.engine import Delta, GenerationRequest
from modules.core.sampling import SamplerParams
from modules.core.templates import InstructionFormat, resolve_format


@dataclass
class SpecialTokens:
    bos: str = ""
    eos: str = ""


def special_tokens(ctx: Context) -> SpecialTokens:
    known = getattr(ctx.engine.backend, "special_tokens", None)  # remote backends: the server's, no tokenizer here
    if known is not None:
        return SpecialTokens(bos=known.bos, eos=known.eos)
    tokenizer = getattr(ctx.engine.backend, "tokenizer", None)
    if tokenizer is None:
        return SpecialTokens()
    return SpecialTokens(bos=tokenizer.bos_token or "", eos=tokenizer.eos_token or "")


def format_for_loaded_model(ctx: Context, user_choice: str | None = None) -> InstructionFormat:
    """The user's choice, else the model's own template, else models/config.yaml, else Alpaca."""
    current = ctx.models.current
    chat_template = current.info.chat_template if current else None
    config_format = current.info.settings.get("instruction_format") if current else None
    return resolve_format(ctx.formats, user_choice or None, chat_template, config_format,
                          eos_token=special_tokens(ctx).eos)


def max_prompt_tokens(ctx: Context, params: SamplerParams) -> int:
    context = params.truncation_length or ctx.engine.context_length
    return max(context - min(params.max_new_tokens, context // 2), 1)


def chat_prompt(ctx: Context, history: list[dict], turn: Turn, settings: ChatSettings,
                params: SamplerParams, format_name: str | None = None) -> PromptPlan:
    """The exact prompt (and stop strings) the model gets for this turn."""
    fmt = format_for_loaded_model(ctx, format_name)
    tokens = special_tokens(ctx)
    return build_prompt(history, turn, settings, fmt, ctx.engine.count_tokens,
                        max_prompt_tokens(ctx, params), tokens.bos, tokens.eos)


def chat_request(ctx: Context, history: list[dict], turn: Turn, settings: ChatSettings,
                 params: SamplerParams, format_name: str | None = None) -> tuple[GenerationRequest, PromptPlan]:
    plan = chat_prompt(ctx, history, turn, settings, params, format_name)
    return GenerationRequest(prompt=plan.prompt, params=params, stop_strings=plan.stop_strings), plan


@dataclass
class ReplyJob:
    """One reply as a client asks for it: a chat turn (``turn`` set) or a raw text completion (``prompt``)."""

    params: SamplerParams
    prompt: str | None = None  # raw completion: the whole prompt, used as it is
    history: list[dict] = field(default_factory=list)
    turn: Turn | None = None
    settings: ChatSettings = field(default_factory=ChatSettings)
    format_name: str | None = None
    stop_strings: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    origin: str = "api"  # who asks: "api", "chat", "notebook" (extension hooks get it)

    @property
    def is_chat(self) -> bool:
        return self.turn is not None


def reply_request(ctx: Context, job: ReplyJob) -> tuple[GenerationRequest, PromptPlan]:
    """The engine request for ``job`` -- also what "show the exact prompt" shows."""
    if job.turn is not None:
        request, plan = chat_request(ctx, job.history, job.turn, job.settings, job.params, job.format_name)
    else:
        ctx.engine.require_backend()
        plan = PromptPlan(prompt=job.prompt or "", stop_strings=[])
        request = GenerationRequest(prompt=plan.prompt, params=job.params)
    request.stop_strings = list(request.stop_strings) + list(job.stop_strings)
    request.cancel = job.cancel
    return request, plan


def generate_reply(ctx: Context, job: ReplyJob) -> Iterator[Delta]:
    """The one entry point for API generations (extension hooks wrap this function).

    The prompt is built now, so a missing model or a bad format raises before any
    streaming starts; the returned iterator generates only when it is read.
    """
    request, _ = reply_request(ctx, job)
    return ctx.engine.generate(request)
