"""Running one prepared generation with the extensions' generation-side hooks.

tokenizer_modifier -> logits_processor_modifier -> custom_generate_reply or the
engine -> output_modifier. Chat, notebook and API all come through
:class:`Generation`, so an extension behaves the same on every path.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modules.core.engine import Delta, GenerationRequest
from modules.core.extensions.host import REPLY_TOKENS_KEY
from modules.core.extensions.pipeline import TurnHooks
from modules.core.extensions.report import Notice

log = logging.getLogger("corral.extensions")


@dataclass
class PreparedGeneration:
    """A request with the turn's hooks and state, after the input-side hooks ran."""

    request: GenerationRequest
    hooks: TurnHooks
    state: dict[str, Any]
    is_chat: bool = False
    plan: Any = None  # the chat PromptPlan (None for raw text)
    user_text: str | None = None  # chat: the user message in prompt form, after the hooks (store this)
    visible_text: str | None = None  # chat: the user message as shown, after chat_input_modifier
    original_question: str = ""  # the user's message (chat) or prompt (text) before any hook
    reply_prefix: str = ""  # shown text the reply starts with ("start reply with", a continued reply)
    lstrip_reply: bool = False  # the shown reply drops the model's leading spaces (when there is no prefix)

    @property
    def notices(self) -> list[Notice]:
        return self.hooks.notices


class Generation:
    """Iterate for the deltas; afterwards ``text`` is the raw reply and ``shown`` what to display.

    ``buffer_output``: when an enabled extension has ``output_modifier``, hold the
    text back and send the modified whole output in the final delta (for clients
    that cannot replace text already sent, such as a streamed API response).
    """

    def __init__(self, ctx: Any, prepared: PreparedGeneration, buffer_output: bool = False) -> None:
        self.ctx, self.prepared = ctx, prepared
        self.hooks = prepared.hooks
        self.buffer = buffer_output and self.hooks.has("output_modifier")
        self.text = ""
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.last: Delta | None = None
        self.finished = False
        self._shown: str | None = None

    @property
    def notices(self) -> list[Notice]:
        return self.hooks.notices

    @property
    def reply(self) -> str:
        """The whole reply as shown before output_modifier: the prefix, then the generated text."""
        prefix = self.prepared.reply_prefix
        strip = self.prepared.lstrip_reply and not prefix
        return prefix + (self.text.lstrip() if strip else self.text)

    @property
    def shown(self) -> str:
        """The reply after output_modifier (applied once, at the final delta); the raw reply before."""
        return self._shown if self._shown is not None else self.reply

    def modify_output(self, text: str) -> str:
        """output_modifier on ``text``. Runs by itself on ``reply`` at the end; call it again only
        when the shown reply is composed differently (it then replaces ``shown``)."""
        state = self.prepared.state
        state[REPLY_TOKENS_KEY] = (list(self.token_ids), list(self.logprobs))
        try:
            self._shown = self.hooks.output_modifier(text, state, self.prepared.is_chat)
        finally:
            state.pop(REPLY_TOKENS_KEY, None)
        return self._shown

    def __iter__(self) -> Iterator[Delta]:
        request = self.prepared.request
        self._apply_token_hooks(request)
        for delta in self._deltas(request):
            self._record(delta)
            if delta.finish_reason is not None:
                self.finished = True
                self.modify_output(self.reply)
                if self.buffer:
                    delta.text = self.shown
            elif self.buffer:
                delta.text = ""
            yield delta

    def _record(self, delta: Delta) -> None:
        self.text += delta.text
        self.token_ids += delta.token_ids
        self.logprobs += delta.logprobs
        self.last = delta

    # -- before generation -------------------------------------------------------------
    def _apply_token_hooks(self, request: GenerationRequest) -> None:
        hooks = self.hooks
        if not (hooks.has("tokenizer_modifier") or hooks.has("logits_processor_modifier")):
            return
        backend = self.ctx.engine.require_backend()
        if backend.streams_text:
            log.warning("tokenizer_modifier / logits_processor_modifier are not applied: the %s loader "
                        "samples outside Python.", backend.info.loader)
            return
        import torch  # only local backends get here, and they run on torch

        ids = request.input_ids if request.input_ids is not None else backend.encode(request.prompt)
        input_ids = torch.tensor([ids], dtype=torch.long)  # [1, L], as the convention passes it
        if hooks.has("tokenizer_modifier"):
            prompt, input_ids, embeds = hooks.tokenizer_modifier(self.prepared.state, request.prompt, input_ids, None)
            request.prompt = prompt
            input_ids = _as_tensor(torch, input_ids)
            request.input_ids = input_ids[0].tolist()
            if embeds is not None:
                log.warning("An extension returned input_embeds; Corral generates from token ids only, so they "
                            "are not used.")
        if hooks.has("logits_processor_modifier"):
            request.logits_processors = hooks.logits_processor_modifier(list(request.logits_processors), input_ids)

    # -- generation ----------------------------------------------------------------------
    def _deltas(self, request: GenerationRequest) -> Iterator[Delta]:
        first = self.hooks.first("custom_generate_reply")
        if first is not None:
            produced = yield from self._custom_reply(request, *first)
            if produced:
                return
        yield from self.ctx.engine.generate(request)

    def _custom_reply(self, request: GenerationRequest, ext: Any, fn: Any) -> Iterator[Delta]:
        """Deltas from an extension's generator of cumulative text; returns whether it produced any."""
        offered = [("question", request.prompt), ("original_question", self.prepared.original_question),
                   ("state", self.prepared.state),
                   ("stopping_strings", list(request.stop_strings) + list(request.params.stop)),
                   ("is_chat", self.prepared.is_chat)]
        sent, produced, finish = "", False, "stop"
        for item in self.hooks.stream(ext, "custom_generate_reply", fn, offered):
            produced = True
            cumulative = item if isinstance(item, str) else str(item)
            if cumulative.startswith(sent) and len(cumulative) > len(sent):
                yield Delta(text=cumulative[len(sent):])
                sent = cumulative
            if request.cancel.is_set():
                finish = "cancelled"
                break
        if produced:
            yield Delta(finish_reason=finish, completion_tokens=self._count(sent))
        return produced

    def _count(self, text: str) -> int:
        try:
            return self.ctx.engine.count_tokens(text)
        except Exception:  # noqa: BLE001 - a count is a nicety
            return 0


def _as_tensor(torch: Any, ids: Any) -> Any:
    """Token ids as a [1, L] long tensor, whatever shape an extension handed back."""
    tensor = ids if isinstance(ids, torch.Tensor) else torch.tensor(ids, dtype=torch.long)
    return tensor.reshape(1, -1).long()


def run_generation(ctx: Any, prepared: PreparedGeneration, buffer_output: bool = False) -> Generation:
    return Generation(ctx, prepared, buffer_output)
