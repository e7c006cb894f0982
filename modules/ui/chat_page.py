"""The chat page: a conversation with the loaded model, streaming, with Stop."""
from __future__ import annotations

import gradio as gr

from modules.core.chat import ChatSettings, Turn
from modules.core.context import Context
from modules.core.errors import CorralError
from modules.core.generation import chat_request


def stats_line(delta, context_length: int) -> str:
    """'12.3 tokens/s · 45 tokens · context 120/8192' -- shown under every reply."""
    used = delta.prompt_tokens + delta.completion_tokens
    return (f"{delta.tokens_per_second:.1f} tokens/s · {delta.completion_tokens} tokens · "
            f"context {used}/{context_length}")


def build(ui) -> None:
    """Add the chat column to the current Blocks."""
    chatbot = gr.Chatbot(label="Chat", height=520, elem_id="chat", buttons=["copy"])
    with gr.Row():
        message = gr.Textbox(placeholder="Send a message (Enter sends, Shift+Enter for a new line)",
                             show_label=False, lines=2, scale=8, elem_id="message", autofocus=True)
        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
    status = gr.Markdown(elem_id="status")
    ui.components.update(chatbot=chatbot, message=message, send=send, stop=stop, status=status)


def wire(ui) -> None:
    """Events of the chat column (after every tab exists, so settings controls can be inputs)."""
    ctx, cancels = ui.ctx, ui.cancels
    c = ui.components
    chatbot, message, send, stop, status = c["chatbot"], c["message"], c["send"], c["stop"], c["status"]

    def respond(text: str, history: list[dict], request: gr.Request):
        history = list(history or [])
        if not text.strip():
            yield history, "", gr.update()
            return
        cancel = cancels.fresh(request.session_hash)
        prior = [{"role": m["role"], "content": _text_of(m)} for m in history]
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        yield history, "", "…"
        try:
            params = ctx.presets.load(ctx.config.preset)
            req, _ = chat_request(ctx, prior, Turn(user_message=text), ChatSettings(), params,
                                  ctx.config.instruction_format)
        except CorralError as err:
            history[-1]["content"] = f"⚠️ {err}"
            yield history, "", f"⚠️ {err}"
            return
        req.cancel = cancel
        reply, last = "", None
        for delta in ctx.engine.generate(req):
            reply += delta.text
            last = delta
            history[-1]["content"] = reply
            yield history, "", stats_line(delta, ctx.engine.context_length)
        note = " · stopped" if last and last.finish_reason == "cancelled" else ""
        yield history, "", stats_line(last, ctx.engine.context_length) + note

    def stop_reply(request: gr.Request) -> None:
        cancels.cancel(request.session_hash)

    outputs = [chatbot, message, status]
    message.submit(respond, [message, chatbot], outputs)
    send.click(respond, [message, chatbot], outputs)
    stop.click(stop_reply, None, None, queue=False)


def _text_of(message: dict) -> str:
    content = message.get("content", "")
    if isinstance(content, list):  # Gradio 6 may hand back [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)
