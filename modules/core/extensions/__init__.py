"""Extensions: discovery and loading (loader), the hook pipeline (pipeline), failures (report),
and the host behind the stable surface ``modules.extension_api`` (host).

:class:`ExtensionManager` is what the Context holds as ``ctx.extensions``. It
knows which extensions are available, which are enabled (in hook order), and
hands out a :class:`TurnHooks` for each turn. Enabling can change while the app
runs: a turn takes a snapshot of the enabled list when it starts.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from modules.core.extensions.host import HANDLE, ExtensionHost, TurnInfo
from modules.core.extensions.loader import HOOKS, LoadedExtension, available_extensions, load_extension
from modules.core.extensions.pipeline import TurnHooks, bind_arguments, call_hook
from modules.core.extensions.report import ExtensionError, ExtensionReport, Notice


class ExtensionManager:
    """The available, loaded and enabled extensions of one app."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.report = ExtensionReport()
        self.host: ExtensionHost | None = None
        self._loaded: dict[str, LoadedExtension] = {}
        self._enabled: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def available(self) -> list[str]:
        return available_extensions(self.folder)

    @property
    def enabled(self) -> list[str]:
        """Enabled and loaded, in hook order."""
        return list(self._enabled)

    def active(self) -> list[LoadedExtension]:
        loaded = self._loaded
        return [loaded[name] for name in self._enabled if name in loaded]

    def get(self, name: str) -> LoadedExtension | None:
        return self._loaded.get(name)

    def failed(self) -> dict[str, str]:
        return self.report.failed()

    def enable(self, ctx: Any, names: list[str], settings: dict[str, Any] | None = None) -> list[str]:
        """Make ``names`` (in this order) the enabled extensions, importing those not loaded yet.

        An extension that fails to load is reported and left out; the others go on.
        Returns the names that are now enabled.
        """
        settings = ctx.config.settings if settings is None else settings
        with self._lock:
            if self.host is None or self.host.ctx is not ctx:
                self.host = ExtensionHost(ctx)
            HANDLE.bind(self.host)
            enabled: list[str] = []
            for name in dict.fromkeys(str(n) for n in names):
                if name not in self._loaded and not self._load(name, settings):
                    continue
                enabled.append(name)
            self._enabled = tuple(enabled)
            return enabled

    def _load(self, name: str, settings: dict[str, Any]) -> bool:
        if self.folder is None:
            self.report.load_failed(name, "Corral has no extensions folder configured.")
            return False
        try:
            self._loaded[name] = load_extension(self.folder, name, settings)
        except ExtensionError as err:
            self.report.load_failed(name, str(err))
            return False
        self.report.loaded(name)
        return True

    def turn(self, history: list[dict] | None = None, state: dict[str, Any] | None = None,
             is_chat: bool = False) -> TurnHooks:
        """The hooks for one turn, over a snapshot of the enabled extensions."""
        return TurnHooks(self.active(), self.report, TurnInfo(list(history or []), dict(state or {}), is_chat))

    def page_text(self, hook: str) -> str:
        """``custom_css`` / ``custom_js`` of every enabled extension, joined (failures reported)."""
        hooks = self.turn()
        parts = []
        for ext, fn in hooks.with_hook(hook):
            ok, text = hooks.call(ext, hook, fn, [])
            if ok and isinstance(text, str) and text.strip():
                parts.append(f"/* extension {ext.name} */\n{text}")
            elif ok and text is not None:
                hooks.misbehaved(ext, hook, "it must return text.")
        return "\n".join(parts)


__all__ = ["HOOKS", "ExtensionError", "ExtensionHost", "ExtensionManager", "ExtensionReport", "LoadedExtension",
           "Notice", "TurnHooks", "TurnInfo", "bind_arguments", "call_hook"]
