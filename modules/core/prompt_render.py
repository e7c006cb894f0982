"""Rendering a format into prompt segments: what the template wrote, and what people wrote.

The template is rendered twice: over the real messages (the text), and over messages whose
contents are replaced by markers no real text contains. Wherever a marker lands, the text there
is a person's; everything else the template wrote. The two renders must agree once the markers
are filled in with the contents (or with the contents stripped, for formats that strip them, as
LLaMA-2-chat does); a template that inspects contents too closely to allow that falls back to
finding each content in the text, so a person's text is still never read as control tokens.
"""
from __future__ import annotations

import logging
import re
import uuid
from typing import Callable

from modules.core.errors import TemplateError
from modules.core.prompt_tokens import Segment, joined, trusted_text, untrusted_text
from modules.core.templates import InstructionFormat, render

log = logging.getLogger(__name__)

# Private-use characters: no tokenizer, user or template gives them meaning, and strip() keeps them.
_MARK = "\ue000{}\ue001"
_MARKS = re.compile("\ue000(\\d+)\ue001")
_CONTENT_FORMS: tuple[Callable[[str], str], ...] = (lambda text: text, str.strip)


def render_segments(fmt: InstructionFormat, messages: list[dict], add_generation_prompt: bool = True,
                    bos_token: str = "", eos_token: str = "") -> list[Segment]:
    """The prompt for ``messages`` in ``fmt``, as segments."""
    text = render(fmt, messages, add_generation_prompt, bos_token, eos_token)
    masked = render(fmt, _masked(messages), add_generation_prompt, bos_token, eos_token)
    return _matched(fmt, text, masked, messages)


def continuation_segments(fmt: InstructionFormat, messages: list[dict], partial_reply: str,
                          bos_token: str = "", eos_token: str = "") -> list[Segment]:
    """A prompt for the model to continue (or start) its reply with ``partial_reply`` already written."""
    return _up_to(fmt, messages, "assistant", partial_reply, bos_token, eos_token)


def impersonation_segments(fmt: InstructionFormat, messages: list[dict], partial: str,
                           bos_token: str = "", eos_token: str = "") -> list[Segment]:
    """A prompt for the model to write the user's next message, beginning with ``partial``."""
    return _up_to(fmt, messages, "user", partial, bos_token, eos_token)


def _up_to(fmt: InstructionFormat, messages: list[dict], role: str, partial: str, bos: str, eos: str) -> list[Segment]:
    """``messages`` plus one ``role`` turn, cut where that turn's text begins, then ``partial``.

    Whatever the template writes before the added turn's text is exactly the opening of that
    turn, so this works for any template.
    """
    sentinel = f"CORRAL{uuid.uuid4().hex}SENTINEL"
    text = render(fmt, [*messages, {"role": role, "content": sentinel}], False, bos, eos)
    masked = render(fmt, [*_masked(messages), {"role": role, "content": sentinel}], False, bos, eos)
    if sentinel not in text or sentinel not in masked:
        raise TemplateError(
            f"Instruction format '{fmt.name}' ({fmt.source}) does not write the {role} message's text, "
            f"so a {role} turn cannot be continued with it. Choose another instruction format."
        )
    head = _matched(fmt, text[:text.index(sentinel)], masked[:masked.index(sentinel)], messages)
    return head + untrusted_text(partial)


def _masked(messages: list[dict]) -> list[dict]:
    return [{**message, "content": _MARK.format(i)} for i, message in enumerate(messages)]


def _matched(fmt: InstructionFormat, text: str, masked: str, messages: list[dict]) -> list[Segment]:
    contents = [str(message.get("content") or "") for message in messages]
    for form in _CONTENT_FORMS:
        segments = _filled(masked, [form(c) for c in contents])
        if joined(segments) == text:
            return segments
    log.warning("Instruction format '%s' changes message texts in a way Corral cannot follow; "
                "the messages are found in the prompt by search instead.", fmt.name)
    return _found(text, contents)


def _filled(masked: str, contents: list[str]) -> list[Segment]:
    out: list[Segment] = []
    position = 0
    for mark in _MARKS.finditer(masked):
        out += trusted_text(masked[position:mark.start()])
        index = int(mark.group(1))
        out += untrusted_text(contents[index] if index < len(contents) else mark.group(0))
        position = mark.end()
    return out + trusted_text(masked[position:])


def _found(text: str, contents: list[str]) -> list[Segment]:
    """Each content's first place in ``text`` after the previous one is a person's text."""
    out: list[Segment] = []
    position = 0
    for content in contents:
        start = text.find(content, position) if content else -1
        if start < 0:
            continue
        out += trusted_text(text[position:start]) + untrusted_text(content)
        position = start + len(content)
    return out + trusted_text(text[position:])
