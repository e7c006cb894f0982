"""The OpenAI shapes of a reply: whole (``chat.completion`` / ``text_completion``) and in chunks."""
from __future__ import annotations

import time
import uuid

from modules.core.engine import Delta

# OpenAI has no "cancelled": a reply cut by a hang-up or stop-generation ends like a stop.
FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "stop"}


def usage(delta: Delta | None) -> dict:
    prompt = delta.prompt_tokens if delta else 0
    completion = delta.completion_tokens if delta else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ReplyShape:
    """Builds the response objects of one request (chat or text completion)."""

    def __init__(self, chat: bool, model: str, include_usage: bool = False, echo: str = "") -> None:
        self.chat, self.model, self.include_usage, self.echo = chat, model, include_usage, echo
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self.last: Delta | None = None

    def _base(self, object_name: str) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model,
                "system_fingerprint": None}

    def _chunk(self, text: str | None, finish: str | None, role: bool = False) -> dict:
        if self.chat:
            delta: dict = {"role": "assistant", "content": text or ""} if role else \
                ({"content": text} if text is not None else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk = self._base("chat.completion.chunk") | {"choices": [choice]}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            chunk = self._base("text_completion") | {"choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    # -- streaming -------------------------------------------------------------------------------
    def head(self) -> list[dict]:
        """Sent at once, before the request waits its turn: the role (chat) or the echoed prompt."""
        if self.chat:
            return [self._chunk("", None, role=True)]
        return [self._chunk(self.echo, None)] if self.echo else []

    def chunks(self, delta: Delta) -> list[dict]:
        out = []
        if delta.text:
            out.append(self._chunk(delta.text, None))
        if delta.finish_reason:
            self.last = delta
            out.append(self._chunk(None if self.chat else "", FINISH_REASONS.get(delta.finish_reason, "stop")))
        return out

    def tail(self) -> list[dict]:
        """The usage chunk (empty choices), when the client asked through ``stream_options``."""
        if not self.include_usage:
            return []
        return [self._base(f"{self.object}.chunk" if self.chat else self.object)
                | {"choices": [], "usage": usage(self.last)}]

    # -- whole -------------------------------------------------------------------------------------
    def full(self, deltas: list[Delta], warnings: list[str]) -> dict:
        text = self.echo + "".join(d.text for d in deltas)
        last = deltas[-1] if deltas else None
        finish = FINISH_REASONS.get(last.finish_reason or "stop", "stop") if last else "stop"
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        body = self._base(self.object) | {"choices": [choice], "usage": usage(last)}
        all_warnings = warnings + [w for d in deltas for w in d.warnings]
        if all_warnings:
            body["warnings"] = all_warnings  # ours: e.g. samplers the loader cannot apply
        return body
