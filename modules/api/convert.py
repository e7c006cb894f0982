"""From API request bodies to core objects: sampler params, chat turns, characters, reply jobs."""
from __future__ import annotations

import re

from modules.api.errors import ApiError
from modules.api.schemas import (EXTRA_SAMPLERS, QUIET_FIELDS, ChatCompletionBody, ChatFields, ChatMessage,
                                 CharacterFields, CompletionBody, GenerationFields)
from modules.core.character_cards import parse_character_file
from modules.core.chat import Character, ChatSettings, Turn
from modules.core.context import Context
from modules.core.generation import ReplyJob
from modules.core.paths import check_name
from modules.core.sampling import MAX_INT, SamplerParams, param_problem
from modules.core.store.base import DEFAULT_USER, NotFoundError

COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
OPENAI_SAMPLERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed")
SYSTEM_ROLES = ("system", "developer")
CHARACTER_SUFFIXES = (".yaml", ".yml", ".json", ".png")
TOKEN_ID = re.compile(r"[0-9]{1,10}")


def loaded_model(ctx: Context, requested: str | None) -> str:
    """The loaded model's name; 503 when none is loaded, 404 when the request names another."""
    current = ctx.models.current
    if current is None or ctx.engine.backend is None:
        raise ApiError(503, "No model is loaded. Load one on the Model tab, with POST /v1/internal/model/load, "
                            "or start the server with --model NAME.", "server_error", code="model_not_loaded")
    if requested and requested != current.info.name:
        where = ("it is in models/ but not loaded; load it first (POST /v1/internal/model/load)"
                 if requested in _local_names(ctx) else "there is no such model")
        raise ApiError(404, f"The model '{requested}' does not exist here: {where}. The loaded model is "
                            f"'{current.info.name}' (GET /v1/models lists it).", param="model", code="model_not_found")
    return current.info.name


def _local_names(ctx: Context) -> set[str]:
    try:
        return set(ctx.registry.names())
    except Exception:  # noqa: BLE001 - only used to word an error message
        return set()


def unknown_fields(body: GenerationFields | ChatFields) -> list[str]:
    """Warnings for fields this server does not know (a typo in a sampler name shows up here)."""
    extra = sorted(set(body.model_extra or {}) - QUIET_FIELDS)
    return [f"Unknown field(s) ignored: {', '.join(extra)}."] if extra else []


def sampler_params(ctx: Context, body: GenerationFields, max_tokens: int | None, default_max: int | None) -> SamplerParams:
    """The preset (if named) under the request's fields; max_tokens clamped to the context."""
    if body.n not in (None, 1):
        raise ApiError(400, "Only n = 1 is supported: one reply per request.", param="n", code="invalid_value")
    params = ctx.presets.load(body.preset) if body.preset else SamplerParams()
    changes: dict = {}
    for name in (*OPENAI_SAMPLERS, *EXTRA_SAMPLERS):
        value = getattr(body, name, None)
        if value is not None:
            changes[name] = value
    if changes.get("temperature") == 0:
        changes["do_sample"] = False  # temperature 0 means greedy, as in OpenAI's API
    wanted = max_tokens or default_max or params.max_new_tokens
    changes["max_new_tokens"] = max(1, min(wanted, ctx.engine.context_length))
    changes["stop"] = _stops(body.stop)
    changes["logit_bias"] = _logit_bias(body.logit_bias)
    params = params.replace(**changes)
    problem = param_problem(params)
    if problem:
        raise ApiError(400, f"Invalid value for '{problem[0]}': {problem[1]}.", param=problem[0], code="invalid_value")
    _check_vocabulary(ctx, params.logit_bias)
    return params


def _check_vocabulary(ctx: Context, bias: dict[int, float]) -> None:
    backend = ctx.engine.backend
    vocab = backend.info.vocab_size if backend is not None else 0
    outside = sorted(token for token in bias if vocab and token >= vocab)
    if outside:
        raise ApiError(400, f"logit_bias names token id {outside[0]}, but the loaded model's vocabulary has ids "
                            f"0 to {vocab - 1}.", param="logit_bias", code="invalid_value")


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [s for s in ([stop] if isinstance(stop, str) else stop) if s]


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        # ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses.
        if not TOKEN_ID.fullmatch(key.strip()) or int(key) > MAX_INT:
            raise ApiError(400, f"logit_bias keys must be token ids (whole numbers from 0 to {MAX_INT}, as text); "
                                f"{key[:40]!r} is not.", param="logit_bias", code="invalid_value")
        if not -100 <= value <= 100:
            raise ApiError(400, f"logit_bias values must be between -100 and 100; token {key} has {value}.",
                           param="logit_bias", code="invalid_value")
        out[int(key)] = float(value)
    return out


def message_text(message: ChatMessage, index: int) -> str:
    """A message's text; ``content`` may be a string or a list of text parts."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise ApiError(400, f"messages[{index}] has a '{part.type}' part; only text parts are supported.",
                           param=f"messages.{index}.content", code="invalid_value")
        texts.append(part.text)
    return "".join(texts)


def split_messages(messages: list[ChatMessage]) -> tuple[str | None, list[dict], Turn]:
    """(system text, history, turn). A last user message is answered; a last assistant message is continued."""
    systems = [message_text(m, i) for i, m in enumerate(messages) if m.role in SYSTEM_ROLES]
    turns = [{"role": m.role, "content": message_text(m, i)} for i, m in enumerate(messages)
             if m.role not in SYSTEM_ROLES]
    if not turns:
        raise ApiError(400, "messages has no user message: add one with role 'user'.", param="messages",
                       code="invalid_value")
    last = turns[-1]
    turn = Turn(user_message=last["content"]) if last["role"] == "user" else Turn(continue_reply=last["content"])
    system = "\n\n".join(s for s in systems if s) or None
    return system, turns[:-1], turn


def character_from(ctx: Context, value: str | CharacterFields) -> Character:
    """An inline character, or one by name: the store's first, then a file in characters/."""
    if isinstance(value, CharacterFields):
        return Character(name=value.name, greeting=value.greeting, context=value.context)
    name = check_name(value, "character")
    store = getattr(ctx, "store", None)
    if store is not None:
        try:
            found = store.get_character(DEFAULT_USER, name)
            return Character(name=found["name"], greeting=found["greeting"] or "", context=found["context"] or "")
        except NotFoundError:
            pass  # not in the store: try the folder next
    for suffix in CHARACTER_SUFFIXES:
        path = ctx.config.characters_dir / f"{name}{suffix}"
        if path.is_file():
            fields = parse_character_file(path.name, path.read_bytes())
            return Character(name=fields["name"], greeting=fields.get("greeting", ""), context=fields.get("context", ""))
    raise ApiError(404, f"No character called {name!r}. Create it on the Character tab, put a file in "
                        f"{ctx.config.characters_dir}, or send the character inline as "
                        "{\"name\", \"context\", \"greeting\"}.", param="character", code="character_not_found")


def chat_settings(ctx: Context, body: ChatFields, system: str | None) -> ChatSettings:
    settings = ChatSettings(mode=body.mode or "instruct", system=system)
    if body.character is not None:
        settings.character = character_from(ctx, body.character)
    if settings.mode == "chat" and system:  # a plain chat transcript has no system slot: lead its context
        settings.character.context = f"{system}\n\n{settings.character.context}".strip()
    if body.user_name:
        settings.user_name = body.user_name
    if body.user_bio is not None:
        settings.user_bio = body.user_bio
    if body.chat_instruct_command:
        settings.chat_instruct_command = body.chat_instruct_command
    return settings


def chat_job(ctx: Context, body: ChatFields, params: SamplerParams) -> ReplyJob:
    system, history, turn = split_messages(body.messages)
    return ReplyJob(params=params, history=history, turn=turn, settings=chat_settings(ctx, body, system),
                    format_name=body.instruction_format or ctx.config.instruction_format)


def chat_completion_job(ctx: Context, body: ChatCompletionBody) -> ReplyJob:
    params = sampler_params(ctx, body, body.max_completion_tokens or body.max_tokens, None)
    return chat_job(ctx, body, params)


def completion_job(ctx: Context, body: CompletionBody) -> ReplyJob:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise ApiError(400, "Send one prompt per request (a string, or a list with one string).", param="prompt",
                       code="invalid_value")
    if not prompts[0]:
        raise ApiError(400, "The prompt is empty: send some text to complete.", param="prompt", code="invalid_value")
    if body.suffix:
        raise ApiError(400, "suffix (fill-in-the-middle) is not supported.", param="suffix", code="invalid_value")
    if body.best_of not in (None, 1):
        raise ApiError(400, "Only best_of = 1 is supported.", param="best_of", code="invalid_value")
    params = sampler_params(ctx, body, body.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS)
    return ReplyJob(params=params, prompt=prompts[0])
