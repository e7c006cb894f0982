"""Errors a user can read: each says what happened and what to do.

Every failure that reaches a person (UI, API, log) is one of these. The
message is complete on its own; callers show ``str(err)`` as it is.
"""
from __future__ import annotations


class CorralError(Exception):
    """Base class: a failure with a message meant for the user."""


class BadNameError(CorralError):
    """A user-given name (chat, character, preset, format) is not a plain name."""


class ModelLoadError(CorralError):
    """A model could not be listed or loaded."""


class NoModelLoadedError(CorralError):
    """A generation was asked for while no model is loaded."""


class PresetError(CorralError):
    """A preset file is malformed or names an unknown parameter."""


class TemplateError(CorralError):
    """An instruction format is unknown, malformed, or fails to render."""


class CancelledError(CorralError):
    """A request was cancelled before it started generating."""


class RemoteServerError(CorralError):
    """A remote OpenAI-compatible server (the remote loader's) failed or could not be reached."""


class EmptyPromptError(CorralError):
    """A generation was asked for with nothing to continue from."""


class PromptTooLongError(CorralError):
    """A prompt over the server's prompt-token cap; ``param`` names the field that carried it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param
