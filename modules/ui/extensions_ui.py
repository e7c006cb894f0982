"""Extensions on the page: their ui() (a block under the chat, or their own tab), their CSS and
JS, the Session tab's list to enable them, and notices of hooks that failed.

Everything an extension builds runs inside a guard: an extension whose ui()
raises gets a notice in its place, and the rest of the page is built as usual.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from modules.core.config import read_settings_file
from modules.core.context import Context
from modules.core.errors import CorralError
from modules.core.settings_file import write_settings_file
from modules.core.extensions import LoadedExtension, Notice

SHARED_COMPONENTS = ("chat_id",)  # what extensions may use as event inputs (extension_api.ui_component)


def share_components(ui: Any) -> None:
    """Offer the UI's shared components to extensions (call after the chat tab is built)."""
    host = ui.ctx.extensions.host
    if host is not None:
        host.ui_components.update({k: ui.components[k] for k in SHARED_COMPONENTS if k in ui.components})


def _build_one(ext: LoadedExtension, ui: Any) -> None:
    build = ext.hook("ui")
    try:
        build()
    except Exception as err:  # noqa: BLE001 - one extension's ui() must not break the page
        notice = ui.ctx.extensions.report.hook_failed(ext.name, "ui", err)
        gr.Markdown(f"⚠️ {notice}")


def _with_ui(ctx: Context, tab: bool) -> list[LoadedExtension]:
    return [e for e in ctx.extensions.active() if e.hook("ui") is not None and e.is_tab == tab]


def build_chat_block(ui: Any) -> None:
    """The extensions' controls stacked under the chat (those without ``is_tab``)."""
    extensions = _with_ui(ui.ctx, tab=False)
    if not extensions:
        return
    share_components(ui)
    with gr.Column(elem_id="extensions"):
        for ext in extensions:
            with gr.Accordion(ext.display_name, open=False, elem_id=f"extension-{ext.name}"):
                _build_one(ext, ui)


def build_tabs(ui: Any) -> None:
    """One top-level tab per extension with ``is_tab`` (call inside the page's ``gr.Tabs``)."""
    share_components(ui)
    for ext in _with_ui(ui.ctx, tab=True):
        with gr.Tab(ext.display_name, id=f"extension-{ext.name}-tab"):
            _build_one(ext, ui)


def page_css(ctx: Context) -> str:
    return ctx.extensions.page_text("custom_css")


def page_js(ctx: Context, base_js: str | None = None) -> str | None:
    """The page's load function: ``base_js`` (a JS function) and then every extension's custom_js."""
    extra = ctx.extensions.page_text("custom_js")
    if not extra:
        return base_js
    calls = f"({base_js})();\n" if base_js else ""
    return "() => {\n" + calls + "try {\n" + extra + "\n} catch (e) { console.error('extension script failed', e); }\n}"


def notices_markdown(notices: list[Notice]) -> str:
    """Hook failures of one turn, for the status line under the chat."""
    return "\n\n".join(f"⚠️ {n}" for n in notices)


def status_markdown(ctx: Context) -> str:
    """Which extensions are on, which failed to load (with what to do)."""
    manager = ctx.extensions
    lines = [f"**Enabled, in hook order:** {', '.join(manager.enabled) or 'none'}"]
    for name, why in sorted(manager.failed().items()):
        lines.append(f"❌ **{name}**: {why}")
    return "\n\n".join(lines)


def apply_selection(ctx: Context, names: list[str], had_ui: set[str]) -> str:
    """Enable ``names`` now (hooks apply from the next reply); say what needs a restart."""
    current = ctx.extensions.enabled
    before = set(current)
    wanted = [n for n in current if n in (names or [])] + [n for n in (names or []) if n not in before]
    enabled = ctx.extensions.enable(ctx, wanted)  # kept ones keep their place; new ones run after them
    page_bound = []
    for name in enabled:
        ext = ctx.extensions.get(name)
        builds_page = any(ext.hook(h) for h in ("ui", "custom_css", "custom_js"))
        if name not in before and builds_page and name not in had_ui:
            page_bound.append(ext.display_name)
    message = [status_markdown(ctx), "Hooks of the enabled extensions apply from the next reply.",
               remember(ctx, enabled)]
    if page_bound:
        message.append(f"🔁 Restart Corral to see the controls or styles of: {', '.join(page_bound)} "
                       "(Gradio cannot add components to a page that is already built).")
    return "\n\n".join(message)


def remember(ctx: Context, enabled: list[str]) -> str:
    """Keep the list in the settings file (``extensions:``) so the next start enables the same."""
    path = ctx.config.settings_path or (ctx.config.user_data_dir / "settings.yaml")
    try:
        existing = read_settings_file(path) if path.is_file() else {}
        write_settings_file(path, {**existing, "extensions": list(enabled)})
    except CorralError as err:
        return f"⚠️ The list was applied but not saved: {err}"
    return f"Saved to `{path}`: the next start enables the same extensions."


def build_manager(ui: Any) -> None:
    """The Session tab's extension list: tick, Apply, and the status (failures with pip commands)."""
    ctx: Context = ui.ctx
    had_ui = {e.name for e in ctx.extensions.active()}
    with gr.Group():
        choices = gr.CheckboxGroup(choices=ctx.extensions.available(), value=ctx.extensions.enabled,
                                   label="Extensions (newly ticked ones run after those already on)",
                                   elem_id="extensions-enabled")
        apply = gr.Button("Apply extensions", elem_id="extensions-apply")
    status = gr.Markdown(status_markdown(ctx), elem_id="extensions-status")
    apply.click(lambda names: apply_selection(ctx, names, had_ui), choices, status, api_name="extensions_apply")
    ui.components.update(extensions_enabled=choices, extensions_apply=apply, extensions_status=status)

