"""The Chat tab: past chats beside a streaming chat column (layout, events and history in their own files).

``build`` lays it out (:mod:`chat_layout`); ``wire`` connects the turns
(:mod:`chat_events`), the quick tools (:mod:`chat_tools`) and the chat list
(:mod:`chat_history`) once every tab exists, so other tabs' settings are
inputs of every turn.
"""
from __future__ import annotations

from typing import Any

from modules.ui import chat_events, chat_history, chat_layout, chat_tools

CSS = chat_layout.CSS

# Keyboard shortcuts, run once when the page loads (launch(js=...)). Capture phase, so the
# message box's own Enter handling does not see Ctrl/Alt+Enter first.
SHORTCUTS_JS = """
() => {
  const press = (id) => {
    const button = document.getElementById(id);
    if (button && button.offsetParent !== null && !button.disabled) { button.click(); return true; }
    return false;
  };
  window.addEventListener('keydown', (e) => {
    let id = null;
    if (e.key === 'Escape') { press('stop'); return; }  // Esc also closes editors: do not swallow it
    if (e.key === 'Enter' && e.ctrlKey && !e.shiftKey && !e.altKey) id = 'regenerate';
    else if (e.key === 'Enter' && e.altKey && !e.ctrlKey && !e.shiftKey) id = 'continue';
    else if (e.key === 'Backspace' && e.ctrlKey && e.shiftKey) id = 'remove-last';
    else if ((e.key === 'M' || e.key === 'm') && e.ctrlKey && e.shiftKey) id = 'impersonate';
    if (id && press(id)) { e.preventDefault(); e.stopPropagation(); }
  }, true);
}
"""


def build(ui: Any) -> None:
    """Add the chat tab's components to the current Blocks (inside its ``gr.Tab``)."""
    chat_layout.build(ui)


def wire(ui: Any) -> None:
    """Events of the chat tab; run after every tab is built."""
    chat_events.wire(ui)
    chat_tools.wire(ui)
    chat_history.wire(ui)
