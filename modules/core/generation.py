"""From a conversation to an engine request: the format, the prompt, the stops.

The chat UI, the notebook and the API all come through here, so a prompt is
built one way everywhere (and "show the exact prompt" shows what is sent).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Iterator

from modules.core.chat import ChatSettings, PromptPlan, Turn, build_prompt
from modules.core.context import Context
from modules.core.errors import CorralError, PromptTooLongError
from modules.core.extensions import TurnHooks
from modules.core.extensions.convention import default_state, history_to_pairs, pairs_to_history, params_after_state
from modules.core.extensions.run import Generation, PreparedGeneration, run_generation
from modules.core.engine import Delta, GenerationRequest
from modules.core.prompt_tokens import SpecialTokens
from modules.core.sampling import SamplerParams
from modules.core.model_rules import format_rule
from modules.core.templates import InstructionFormat, resolve_format


def special_tokens(ctx: Context) -> SpecialTokens:
    """The loaded model's BOS/EOS texts (empty with no model), for templates' bos_token/eos_token."""
    backend = ctx.engine.backend
    return backend.special_tokens if backend is not None else SpecialTokens()


def format_for_loaded_model(ctx: Context, user_choice: str | None = None) -> InstructionFormat:
    """The user's choice, else the model's own template, else models/config.yaml, else a plain
    transcript; the result's ``reason`` says which and why. The model's stop_strings from
    models/config.yaml are added to the format's."""
    current = ctx.models.current
    info = current.info if current else None
    config_format = info.settings.get("instruction_format") if info else None
    rule = format_rule(ctx.registry.models_dir / "config.yaml", info.name) if config_format else None
    return resolve_format(ctx.formats, user_choice or None, info.chat_template if info else None, config_format,
                          eos_token=special_tokens(ctx).eos, rule=rule, model_name=info.name if info else "",
                          extra_stops=info.settings.get("stop_strings") if info else None)


def max_prompt_tokens(ctx: Context, params: SamplerParams) -> int:
    context = params.truncation_length or ctx.engine.context_length
    return max(context - min(params.max_new_tokens, context // 2), 1)


def chat_prompt(ctx: Context, history: list[dict], turn: Turn, settings: ChatSettings,
                params: SamplerParams, format_name: str | None = None, hooks: TurnHooks | None = None) -> PromptPlan:
    """The exact prompt (and stop strings) the model gets for this turn.

    With ``hooks``, an extension's ``custom_tokenized_length`` counts tokens for truncation.
    """
    fmt = format_for_loaded_model(ctx, format_name)
    tokens = special_tokens(ctx)
    return build_prompt(history, turn, settings, fmt, _token_counter(ctx, hooks),
                        max_prompt_tokens(ctx, params), tokens.bos, tokens.eos)


def _token_counter(ctx: Context, hooks: TurnHooks | None):
    custom = hooks.custom_tokenized_length() if hooks is not None else None
    if custom is None:
        return ctx.engine.count_tokens

    def count(text: str) -> int:
        counted = custom(text)
        return counted if counted is not None else ctx.engine.count_tokens(text)
    return count


def chat_request(ctx: Context, history: list[dict], turn: Turn, settings: ChatSettings,
                 params: SamplerParams, format_name: str | None = None) -> tuple[GenerationRequest, PromptPlan]:
    """The engine request for a chat turn, with the extensions' input-side hooks applied.

    To get every hook (output_modifier, logits processors...) and the texts to
    store, use :func:`prepare_chat` and :func:`run_generation` instead.
    """
    prepared = prepare_chat(ctx, history, turn, settings, params, format_name)
    return prepared.request, prepared.plan


def prepare_chat(ctx: Context, history: list[dict], turn: Turn, settings: ChatSettings, params: SamplerParams,
                 format_name: str | None = None, *, state: dict | None = None, visible_text: str | None = None,
                 interface: str = "chat") -> PreparedGeneration:
    """A chat turn through the hooks: history_modifier -> state_modifier -> chat_input_modifier ->
    input_modifier -> bot_prefix_modifier -> (custom_generate_chat_prompt or the format).

    ``state``: the UI's settings dict (extensions' ``state``); ``visible_text``: the
    user's message as shown, when it differs from ``turn.user_message``. Store
    ``user_text`` / ``visible_text`` of the result as the user's message.
    """
    state = {**default_state(params, settings, format_name, interface), **(state or {})}
    hooks = ctx.extensions.turn(history, state, is_chat=True)
    if hooks.has("history_modifier"):
        history = pairs_to_history(hooks.history_modifier(history_to_pairs(history)))
        hooks.turn.history = history
    state, params = _modified_state(hooks, state, params)
    original = turn.user_message or ""
    shown_prefix = turn.continue_reply if turn.continue_reply is not None else turn.bot_prefix
    turn, visible = _modified_turn(hooks, turn, state, visible_text)
    plan = chat_prompt(ctx, history, turn, settings, params, format_name, hooks)
    custom = hooks.custom_generate_chat_prompt(turn.user_message or "", state, _continue=turn.continue_reply is not None,
                                               impersonate=turn.impersonate, history=history_to_pairs(history))
    if custom is not None:
        plan = PromptPlan(custom, plan.stop_strings, plan.dropped_turns)
    request = GenerationRequest(prompt=plan.prompt, params=params, stop_strings=plan.stop_strings,
                                input_ids=_prompt_ids(ctx, plan))
    return PreparedGeneration(request, hooks, state, True, plan, turn.user_message, visible, original, shown_prefix)


def _prompt_ids(ctx: Context, plan: PromptPlan) -> list[int] | None:
    """The ids generation uses: only the format's own text may hold control tokens (prompt_tokens)."""
    backend = ctx.engine.require_backend()
    return None if backend.streams_text else backend.encode_segments(plan.prompt_segments)


def _modified_state(hooks: TurnHooks, state: dict, params: SamplerParams) -> tuple[dict, SamplerParams]:
    if not hooks.has("state_modifier"):
        return state, params
    before = dict(state)
    state = hooks.state_modifier(state)
    try:
        return state, params_after_state(params, before, state)
    except CorralError as err:
        for ext, _fn in hooks.with_hook("state_modifier"):
            hooks.misbehaved(ext, "state_modifier", f"{err} The sampler values were left as they were.")
        return state, params


def _modified_turn(hooks: TurnHooks, turn: Turn, state: dict, visible_text: str | None) -> tuple[Turn, str | None]:
    """The user message through chat_input_modifier and input_modifier; the reply's start through
    bot_prefix_modifier (not for continue or impersonate)."""
    visible = visible_text
    if turn.user_message is not None and not turn.impersonate:
        text, visible = hooks.chat_input_modifier(turn.user_message, visible_text or turn.user_message, state)
        turn = replace(turn, user_message=hooks.input_modifier(text, state, True))
    if turn.continue_reply is None and not turn.impersonate and hooks.has("bot_prefix_modifier"):
        turn = replace(turn, bot_prefix=hooks.bot_prefix_modifier(turn.bot_prefix, state))
    return turn, visible


def prepare_text(ctx: Context, prompt: str, params: SamplerParams, *, state: dict | None = None,
                 stop_strings: list[str] | None = None, interface: str = "notebook") -> PreparedGeneration:
    """A raw completion (notebook, API completions) through state_modifier and input_modifier."""
    ctx.engine.require_backend()
    state = {**default_state(params, None, None, interface), **(state or {})}
    hooks = ctx.extensions.turn([], state, is_chat=False)
    state, params = _modified_state(hooks, state, params)
    text = hooks.input_modifier(prompt, state, False)
    request = GenerationRequest(prompt=text, params=params, stop_strings=list(stop_strings or []))
    return PreparedGeneration(request, hooks, state, False, original_question=prompt)


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


def prepare_reply(ctx: Context, job: ReplyJob) -> PreparedGeneration:
    """``job`` through the extensions' input-side hooks, as the chat and the notebook go."""
    if job.turn is not None:
        prepared = prepare_chat(ctx, job.history, job.turn, job.settings, job.params, job.format_name,
                                interface=job.origin)
        prepared.request.stop_strings = list(prepared.request.stop_strings) + list(job.stop_strings)
    else:
        prepared = prepare_text(ctx, job.prompt or "", job.params, stop_strings=job.stop_strings,
                                interface=job.origin)
    prepared.request.cancel = job.cancel
    return prepared


def reply_request(ctx: Context, job: ReplyJob) -> tuple[GenerationRequest, PromptPlan]:
    """The engine request for ``job`` -- also what "show the exact prompt" shows."""
    prepared = prepare_reply(ctx, job)
    request = prepared.request
    return request, prepared.plan or PromptPlan(request.prompt, list(request.stop_strings))


def generate_reply(ctx: Context, job: ReplyJob, max_prompt_tokens: int = 0) -> Iterator[Delta]:
    """The one entry point for API generations: every extension hook applies, as in the chat.

    The prompt is built now, so a missing model, a bad format or a prompt over
    ``max_prompt_tokens`` (0: no cap) raises before anything is queued; the returned iterator
    generates only when it is read. An output_modifier's result arrives whole in the final
    delta (streamed text cannot be taken back).
    """
    prepared = prepare_reply(ctx, job)
    if max_prompt_tokens:
        _check_prompt_length(ctx, prepared.request, max_prompt_tokens, "messages" if job.is_chat else "prompt")
    return iter(run_generation(ctx, prepared, buffer_output=True))


def _check_prompt_length(ctx: Context, request: GenerationRequest, limit: int, param: str) -> None:
    count = len(request.input_ids) if request.input_ids is not None else ctx.engine.count_tokens(request.prompt)
    if count > limit:
        raise PromptTooLongError(f"The prompt has {count} tokens; this server accepts at most {limit} "
                                 "(--api-max-prompt-tokens). Send fewer or shorter messages.", param=param)
