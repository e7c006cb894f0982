"""The hook pipeline: each hook of each enabled extension, in order, isolated from the others.

Dispatch reads each hook's signature once (``inspect``) and passes exactly the
arguments it declares: by name where a parameter is named like one of the
convention's arguments (``string``, ``state``, ``is_chat``...), else by
position. So ``input_modifier(string)``, ``(string, state)`` and
``(string, state, is_chat=False)`` all work, and nothing is ever retried with
fewer arguments after a TypeError.

A hook that raises (or returns the wrong type) is reported and skipped for the
turn; the value goes on unchanged to the next extension.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from modules.core.extensions.host import TurnInfo, serving
from modules.core.extensions.loader import LoadedExtension
from modules.core.extensions.report import ExtensionReport, Notice

Offered = Sequence[tuple[str, Any]]
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@lru_cache(maxsize=1024)
def _shape(fn: Callable[..., Any]) -> tuple[tuple[str, Any, bool], ...] | None:
    """(kind, name, has default) per parameter; None when the signature cannot be read."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return tuple((p.kind, p.name, p.default is not inspect.Parameter.empty) for p in params)


def bind_arguments(fn: Callable[..., Any], offered: Offered) -> tuple[list[Any], dict[str, Any]]:
    """The (args, kwargs) to call ``fn`` with, out of the ``offered`` (name, value) pairs."""
    shape = _shape(fn)
    if shape is None:
        return [value for _, value in offered], {}
    by_name = dict(offered)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    used: set[str] = set()
    index = 0
    for kind, name, _default in shape:
        if kind in _POSITIONAL:
            if name in by_name:
                value, key = by_name[name], name
            elif index < len(offered):
                key, value = offered[index]
            else:
                break  # nothing more to offer: the rest keep their defaults
            index += 1
            used.add(key)
            if kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[name] = value
        elif kind is inspect.Parameter.KEYWORD_ONLY and name in by_name:
            kwargs[name] = by_name[name]
            used.add(name)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update({k: v for k, v in offered if k not in used and k not in kwargs})
    return args, kwargs


def call_hook(fn: Callable[..., Any], offered: Offered) -> Any:
    args, kwargs = bind_arguments(fn, offered)
    return fn(*args, **kwargs)


class TurnHooks:
    """The enabled extensions' hooks for one turn (one chat reply, notebook run or API request)."""

    def __init__(self, extensions: Sequence[LoadedExtension], report: ExtensionReport, turn: TurnInfo) -> None:
        self.extensions = tuple(extensions)
        self.report = report
        self.turn = turn
        self.notices: list[Notice] = []

    def with_hook(self, hook: str) -> list[tuple[LoadedExtension, Callable[..., Any]]]:
        found = [(ext, ext.hook(hook)) for ext in self.extensions]
        return [(ext, fn) for ext, fn in found if fn is not None]

    def has(self, hook: str) -> bool:
        return any(ext.hook(hook) is not None for ext in self.extensions)

    def call(self, ext: LoadedExtension, hook: str, fn: Callable[..., Any], offered: Offered) -> tuple[bool, Any]:
        """(True, result), or (False, None) after reporting what it raised."""
        try:
            with serving(self.turn):
                return True, call_hook(fn, offered)
        except Exception as err:  # noqa: BLE001 - isolation is the point
            self.notices.append(self.report.hook_failed(ext.name, hook, err))
            return False, None

    def misbehaved(self, ext: LoadedExtension, hook: str, message: str) -> None:
        self.notices.append(self.report.hook_misbehaved(ext.name, hook, message))

    def chain(self, hook: str, value: Any, first_name: str, extra: Offered,
              valid: Callable[[Any], bool], expected: str) -> Any:
        """Pass ``value`` through every extension's ``hook``; a bad result leaves it as it was."""
        for ext, fn in self.with_hook(hook):
            ok, result = self.call(ext, hook, fn, [(first_name, value), *extra])
            if ok and valid(result):
                value = result
            elif ok:
                self.misbehaved(ext, hook, f"it returned {type(result).__name__}, not {expected}.")
        return value

    # -- the convention's hooks, in the order of a chat turn ------------------------------
    def history_modifier(self, history: dict) -> dict:
        return self.chain("history_modifier", history, "history", [], _is_history, "a history dict")

    def state_modifier(self, state: dict) -> dict:
        state = self.chain("state_modifier", state, "state", [], lambda r: isinstance(r, dict), "a dict")
        self.turn.state = state
        return state

    def chat_input_modifier(self, text: str, visible: str, state: dict) -> tuple[str, str]:
        for ext, fn in self.with_hook("chat_input_modifier"):
            ok, result = self.call(ext, "chat_input_modifier", fn,
                                   [("text", text), ("visible_text", visible), ("state", state)])
            if ok and isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(r, str) for r in result):
                text, visible = result
            elif ok:
                self.misbehaved(ext, "chat_input_modifier", "it must return (text, visible_text).")
        return text, visible

    def input_modifier(self, string: str, state: dict, is_chat: bool) -> str:
        return self.chain("input_modifier", string, "string", [("state", state), ("is_chat", is_chat)],
                          _is_str, "text")

    def bot_prefix_modifier(self, string: str, state: dict) -> str:
        return self.chain("bot_prefix_modifier", string, "string", [("state", state)], _is_str, "text")

    def tokenizer_modifier(self, state: dict, prompt: str, input_ids: Any, input_embeds: Any) -> tuple[str, Any, Any]:
        for ext, fn in self.with_hook("tokenizer_modifier"):
            ok, result = self.call(ext, "tokenizer_modifier", fn, [("state", state), ("prompt", prompt),
                                                                   ("input_ids", input_ids), ("input_embeds", input_embeds)])
            if ok and isinstance(result, (tuple, list)) and len(result) == 3 and isinstance(result[0], str):
                prompt, input_ids, input_embeds = result
            elif ok:
                self.misbehaved(ext, "tokenizer_modifier", "it must return (prompt, input_ids, input_embeds).")
        return prompt, input_ids, input_embeds

    def logits_processor_modifier(self, processors: list, input_ids: Any) -> list:
        for ext, fn in self.with_hook("logits_processor_modifier"):
            ok, result = self.call(ext, "logits_processor_modifier", fn,
                                   [("processor_list", processors), ("input_ids", input_ids)])
            if ok and isinstance(result, list):
                processors = result  # a returned list replaces the list; None kept in-place changes
            elif ok and result is not None:
                self.misbehaved(ext, "logits_processor_modifier", "it must return a list or None.")
        return processors

    def output_modifier(self, string: str, state: dict, is_chat: bool) -> str:
        return self.chain("output_modifier", string, "string", [("state", state), ("is_chat", is_chat)],
                          _is_str, "text")

    # -- first extension wins ---------------------------------------------------------
    def first(self, hook: str) -> tuple[LoadedExtension, Callable[..., Any]] | None:
        found = self.with_hook(hook)
        return found[0] if found else None

    def custom_tokenized_length(self) -> Callable[[str], int] | None:
        """A token counter from the first extension that has one (a failure falls back to None)."""
        first = self.first("custom_tokenized_length")
        if first is None:
            return None
        ext, fn = first

        def count(prompt: str) -> int | None:
            ok, result = self.call(ext, "custom_tokenized_length", fn, [("prompt", prompt)])
            if ok and isinstance(result, int) and not isinstance(result, bool):
                return result
            if ok:
                self.misbehaved(ext, "custom_tokenized_length", "it must return an int.")
            return None
        return count

    def custom_generate_chat_prompt(self, user_input: str, state: dict, **kwargs: Any) -> str | None:
        first = self.first("custom_generate_chat_prompt")
        if first is None:
            return None
        ext, fn = first
        ok, result = self.call(ext, "custom_generate_chat_prompt", fn,
                               [("user_input", user_input), ("state", state), *kwargs.items()])
        if ok and result is not None and not isinstance(result, str):
            self.misbehaved(ext, "custom_generate_chat_prompt", "it must return the prompt text or None.")
            return None
        return result if ok else None

    def stream(self, ext: LoadedExtension, hook: str, fn: Callable[..., Any], offered: Offered) -> Iterator[Any]:
        """Iterate a generator hook (custom_generate_reply); a raise ends it with a notice."""
        ok, generator = self.call(ext, hook, fn, offered)
        if not ok:
            return
        if isinstance(generator, str) or not hasattr(generator, "__iter__"):
            self.misbehaved(ext, hook, "it must be a generator yielding the reply so far.")
            return
        iterator = iter(generator)
        try:
            while True:
                try:
                    with serving(self.turn):
                        item = next(iterator)
                except StopIteration:
                    return
                except Exception as err:  # noqa: BLE001
                    self.notices.append(self.report.hook_failed(ext.name, hook, err))
                    return
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_history(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("internal"), list) and isinstance(value.get("visible"), list)
