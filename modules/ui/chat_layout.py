"""The chat tab's components: a list of past chats beside a clean chat column.

Every component is registered in ``ui.components`` under a short name, and
"start reply with" in ``ui.controls`` so every event gets it with the other
tabs' settings (the chat mode is the Parameters tab's). Element ids are stable: the
browser test and the keyboard shortcuts use them.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
    {"left": "$", "right": "$", "display": False},
]

CSS = """
#chat-page { gap: 12px; }
#chat-sidebar { max-width: 300px; }
#chat-list { max-height: 55vh; overflow-y: auto; }
#chat-list label { width: 100%; }
#chat-main { max-width: 980px; margin: 0 auto; min-width: 0 !important; }
#chat pre { max-width: 100%; overflow-x: auto; }
#chat-tools { gap: 6px; flex-wrap: wrap; }
#chat-tools > * { flex: 0 0 auto !important; width: auto !important; min-width: 0 !important; }
#version-label { align-self: center; padding: 0 !important; }
#version-label p { margin: 0 2px; white-space: nowrap; font-size: var(--text-sm); }
#reply-stats { color: var(--body-text-color-subdued); font-size: var(--text-sm); min-height: 1.5em; }
#composer { align-items: stretch; }
@media (max-width: 720px) {
  #chat-page { flex-direction: column; }
  #chat-sidebar { order: 2; max-width: none; }
  #chat-main { order: 1; width: 100%; max-width: 100%; }
  #composer { flex-wrap: wrap; }
  #composer #message { flex: 1 1 100% !important; }
  #chat { height: 62vh !important; }
}
"""


def build(ui: Any) -> None:
    """Lay out the tab (called inside its ``gr.Tab``)."""
    with gr.Row(elem_id="chat-page", equal_height=False):
        with gr.Column(scale=1, min_width=220, elem_id="chat-sidebar"):
            _sidebar(ui.components)
        with gr.Column(scale=4, min_width=300, elem_id="chat-main"):
            _chat_column(ui)
    c = ui.components
    c["chat_id"] = gr.State(None)  # per browser: the open chat (None: a new, unsaved one)
    c["selected"] = gr.State(None)  # per browser: the Chatbot index last clicked


def _sidebar(c: dict[str, Any]) -> None:
    c["who"] = gr.Markdown(visible=False, elem_id="signed-in-as")
    c["new_chat"] = gr.Button("+ New chat", variant="primary", size="sm", elem_id="new-chat")
    c["search"] = gr.Textbox(label="Search chats", placeholder="Search chats", show_label=False, container=False,
                             elem_id="chat-search")
    c["chat_list"] = gr.Radio(choices=[], label="Chats", show_label=False, container=False, elem_id="chat-list")
    with gr.Accordion("This chat", open=False, elem_id="chat-manage"):
        c["title"] = gr.Textbox(label="Title", elem_id="chat-title", max_lines=1)
        with gr.Row():
            c["rename"] = gr.Button("Rename", size="sm", elem_id="rename-chat")
            c["delete"] = gr.Button("Delete…", size="sm", variant="stop", elem_id="delete-chat")
        with gr.Group(visible=False, elem_id="delete-confirm-box") as confirm_box:
            gr.Markdown("Delete this chat and all its messages? This cannot be undone.")
            with gr.Row():
                c["delete_confirm"] = gr.Button("Yes, delete", size="sm", variant="stop", elem_id="delete-confirm")
                c["delete_cancel"] = gr.Button("Cancel", size="sm", elem_id="delete-cancel")
        c["confirm_box"] = confirm_box
        with gr.Row():
            c["export_json"] = gr.Button("Export JSON", size="sm", elem_id="export-json")
            c["export_md"] = gr.Button("Export Markdown", size="sm", elem_id="export-md")
        c["export_file"] = gr.File(label="Exported chat", visible=False, interactive=False, elem_id="export-file")
        c["import_chat"] = gr.UploadButton("Import a chat (JSON)", file_types=[".json"], size="sm",
                                           elem_id="import-chat")


def _chat_column(ui: Any) -> None:
    c = ui.components
    c["chatbot"] = gr.Chatbot(
        label="Chat", show_label=False, elem_id="chat", height="64vh", min_height=320, editable="all",
        buttons=["copy", "copy_all"], latex_delimiters=LATEX, autoscroll=True,
        placeholder="Ask anything. Click a message to pick it for paging versions or branching; "
                    "the pencil edits it.")
    with gr.Row(elem_id="composer"):
        c["message"] = gr.Textbox(
            label="Message", placeholder="Message (Enter sends, Shift+Enter: new line)", show_label=False, container=False,
            lines=1, max_lines=10, scale=8, autofocus=True, elem_id="message")
        c["send"] = gr.Button("Send", variant="primary", scale=1, min_width=72, elem_id="send")
        c["stop"] = gr.Button("Stop", variant="stop", scale=1, min_width=72, elem_id="stop")
    with gr.Row(elem_id="chat-tools"):
        c["regenerate"] = gr.Button("Regenerate", size="sm", elem_id="regenerate")
        c["continue"] = gr.Button("Continue", size="sm", elem_id="continue")
        c["impersonate"] = gr.Button("Impersonate", size="sm", elem_id="impersonate")
        c["remove_last"] = gr.Button("Remove last", size="sm", elem_id="remove-last")
        c["branch"] = gr.Button("Branch", size="sm", elem_id="branch")
        c["version_prev"] = gr.Button("‹", size="sm", visible=False, elem_id="version-prev")
        c["version_label"] = gr.Markdown(label="Version", visible=False, elem_id="version-label")
        c["version_next"] = gr.Button("›", size="sm", visible=False, elem_id="version-next")
    c["stats"] = gr.Markdown(label="Reply stats", elem_id="reply-stats")
    with gr.Accordion("Chat options", open=False, elem_id="chat-options"):
        start = gr.Textbox(label="Start reply with", placeholder="e.g. Sure! Here is",
                           elem_id="start-reply-with", max_lines=3)
        gr.Markdown("Mode, instruction format and system message: Parameters tab. Shortcuts: "
                    "**Ctrl+Enter** regenerate · **Alt+Enter** continue · **Esc** stop · "
                    "**Ctrl+Shift+Backspace** remove last · **Ctrl+Shift+M** impersonate.")
    ui.controls["start_reply_with"] = c["start_reply_with"] = start
