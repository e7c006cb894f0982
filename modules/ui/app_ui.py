"""The Gradio page: built from the context, nothing global.

Each tab lives in its own file with ``build(ui)`` (layout, run inside its
``gr.Tab``) and, where it needs components of other tabs, ``wire(ui)`` (events,
run after every tab is built). Tabs share generation settings through
``ui.controls``: key -> component, gathered into one settings dict per request.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from modules.core.context import Context
from modules.ui import (arena_tab, characters_tab, chat_page, download_tab, model_tab, notebook_tab,
                        parameters_tab, session_tab)
from modules.ui import extensions_ui
from modules.ui.sessions import CancelRegistry

CSS = """
footer { display: none !important; }
""" + chat_page.CSS
JS = chat_page.SHORTCUTS_JS  # launch(js=...): keyboard shortcuts


# (title, tab id, module with build(ui) and wire(ui)), after the Chat tab.
OTHER_TABS = (("Parameters", "parameters-tab", parameters_tab), ("Characters", "characters-tab", characters_tab),
              ("Notebook", "notebook-tab", notebook_tab), ("Arena", "arena-tab", arena_tab),
              ("Model", "model-tab", model_tab),
              ("Download", "download-tab", download_tab), ("Session", "session-tab", session_tab))


@dataclass
class UIContext:
    """What every tab gets: the core context and the components tabs share."""

    ctx: Context
    controls: dict[str, Any] = field(default_factory=dict)  # settings key -> gradio component
    cancels: CancelRegistry = field(default_factory=CancelRegistry)
    components: dict[str, Any] = field(default_factory=dict)  # other shared components by name


def build_ui(ctx: Context) -> gr.Blocks:
    ui = UIContext(ctx=ctx)
    with gr.Blocks(title="Corral") as demo:
        ui.components["app"] = demo  # tabs add their page-load events to it
        with gr.Tabs():
            with gr.Tab("Chat", id="chat-tab"):
                chat_page.build(ui)
                extensions_ui.build_chat_block(ui)  # extensions' controls, under the chat
            for title, tab_id, tab in OTHER_TABS:
                with gr.Tab(title, id=tab_id):
                    tab.build(ui)
            extensions_ui.build_tabs(ui)  # extensions with is_tab
        chat_page.wire(ui)
        for _title, _id, tab in OTHER_TABS:
            tab.wire(ui)
    return demo
