"""Request bodies of the API (pydantic), validated strictly from JSON.

Strict: a string where a number belongs is an error (400), as OpenAI answers it, not
silently converted. Unknown fields are kept (``model_extra``) and reported back as
warnings, since clients send fields we do not use (``user``, ``store``, ``metadata``...).
"""
from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

# Fields OpenAI clients commonly send that change nothing here; accepted without a warning.
QUIET_FIELDS = {"user", "store", "metadata", "service_tier", "parallel_tool_calls", "response_format",
                "stream_options", "logprobs", "top_logprobs", "best_of", "suffix", "echo"}


class Body(BaseModel):
    # allow_inf_nan off: NaN and Infinity (which Python's JSON reader accepts) are no sampler values.
    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False)


class SamplerFields(Body):
    """Our samplers beyond OpenAI's, as extra fields (the names presets use)."""

    preset: str | None = None
    do_sample: bool | None = None
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    typical_p: float | None = Field(None, gt=0, le=1)
    tfs: float | None = Field(None, gt=0, le=1)
    top_a: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    repetition_penalty_range: int | None = Field(None, ge=0)
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    penalty_alpha: float | None = Field(None, ge=0)
    mirostat_mode: int | None = Field(None, ge=0, le=2)
    mirostat_tau: float | None = Field(None, ge=0)
    mirostat_eta: float | None = Field(None, ge=0)
    xtc_threshold: float | None = Field(None, ge=0, le=1)
    xtc_probability: float | None = Field(None, ge=0, le=1)
    dry_multiplier: float | None = Field(None, ge=0)
    ban_eos_token: bool | None = None
    truncation_length: int | None = Field(None, ge=0)


EXTRA_SAMPLERS = tuple(name for name in SamplerFields.model_fields if name != "preset")


class StreamOptions(Body):
    include_usage: bool = False


class GenerationFields(SamplerFields):
    """What completions and chat completions share (OpenAI's names and ranges)."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None


class ContentPart(Body):
    type: str
    text: str | None = None


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class CharacterFields(Body):
    name: str = Field(min_length=1)
    context: str = ""
    greeting: str = ""


class ChatFields(Body):
    """How the prompt is built: our chat modes, format and character (extra fields)."""

    messages: list[ChatMessage] = Field(min_length=1)
    mode: Literal["instruct", "chat", "chat-instruct"] | None = None
    instruction_format: str | None = Field(
        None, validation_alias=AliasChoices("instruction_format", "instruction_template"))
    character: str | CharacterFields | None = None
    user_name: str | None = None
    user_bio: str | None = None
    chat_instruct_command: str | None = None


class ChatCompletionBody(ChatFields, GenerationFields):
    max_completion_tokens: int | None = Field(None, ge=1)


class ChatPromptBody(ChatCompletionBody):
    """``/v1/internal/chat-prompt`` takes a whole chat request, so its prompt is built exactly alike."""


class CompletionBody(GenerationFields):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)


class TextBody(Body):
    text: str


class TokensBody(Body):
    tokens: list[int]


class LoadBody(Body):
    model_name: str = Field(min_length=1)
    args: dict[str, object] = Field(default_factory=dict)  # loader options, e.g. {"dtype": "float32"}
