"""The prompt part of the Parameters tab: chat mode, instruction format (chosen, shown, editable),
system text, and "show the exact prompt" for the chat on the Chat tab.

"Show the exact prompt" builds the turn through ``generation.prepare_chat`` with the open chat's
stored history, the same call the chat makes (extension hooks included), and shows the prompt
text and the token ids generation gets; users debug wrong formats this way.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from modules.core.chat import DEFAULT_CHAT_INSTRUCT, MODES, Turn
from modules.core.context import Context
from modules.core.errors import CorralError, TemplateError
from modules.core.conversation import Conversation, TurnSetup
from modules.core.extensions.run import PreparedGeneration
from modules.core.generation import format_for_loaded_model, prepare_chat
from modules.core.templates import MODEL_SOURCE
from modules.ui.characters_tab import user_of
from modules.ui.chat_view import turn_setup
from modules.ui.state import control_inputs, unescape_text

AUTOMATIC = ""  # the instruction_format value meaning: the model's own template, else config.yaml, else a plain transcript


def format_choices(ctx: Context) -> list[tuple[str, str]]:
    return [("Automatic (the model's own, else models/config.yaml by name, else a plain transcript)", AUTOMATIC),
            *[(name, name) for name in ctx.formats.names()]]


def resolved_format_text(ctx: Context, choice: str | None) -> str:
    """Which format a reply uses now, and where it comes from."""
    try:
        fmt = format_for_loaded_model(ctx, choice or None)
    except CorralError as err:
        return f"⚠️ {err}"
    source = "the model's own chat template" if fmt.source == MODEL_SOURCE else fmt.source
    loaded = ctx.models.loaded_name
    suffix = "" if loaded or choice else " (no model is loaded; the loaded model's own template will take over)"
    return (f"Using **{fmt.name}** from {source}{suffix}: {fmt.reason}. "
            f"Stop strings: {', '.join(map(repr, fmt.stop_strings)) or 'none'}.")


def escape_lines(items: list[str]) -> str:
    return "\n".join(s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") for s in items)


def editor_values(ctx: Context, choice: str | None) -> tuple[str, str, str]:
    """(name, template, stop strings) for the editor; the automatic choice shows the resolved format."""
    fmt = format_for_loaded_model(ctx, choice or None)
    name = fmt.name if fmt.source != MODEL_SOURCE else ""
    return name, fmt.template, escape_lines(fmt.stop_strings)


def save_format(ctx: Context, name: str, template: str, stops_text: str) -> str:
    """Write the edited format to instruction-templates/NAME.yaml; returns the saved name."""
    if not (name or "").strip():
        raise TemplateError("Give the format a name to save it (it becomes instruction-templates/NAME.yaml).")
    stops = [unescape_text(line) for line in (stops_text or "").splitlines() if line]
    return ctx.formats.save(name, template, stops).stem


def history_from_chatbot(messages: list[dict] | None) -> list[dict]:
    """The Chatbot's messages as prompt history: user and assistant turns with plain text."""
    out = []
    for message in messages or []:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("user", "assistant"):
            out.append({"role": role, "content": _text_of(message.get("content", ""))})
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # [{"type": "text", "text": ...}] as Gradio 6 may hand back
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def exact_prompt(ctx: Context, user: str, chat_id: int | None, shown: list[dict], message: str,
                 setup: TurnSetup) -> PreparedGeneration:
    """What the next reply gets, built by the chat's own ``prepare`` (extension hooks included).

    The open chat's stored history is used; with no chat open, the history on screen. With a
    message typed: the reply to it; without: the prompt behind the last reply.
    """
    if chat_id is not None:
        return Conversation(ctx, user).preview(chat_id, message, setup)
    prior, turn = list(shown), Turn(user_message=message, bot_prefix=setup.start_reply_with)
    if not (message or "").strip():
        if prior and prior[-1]["role"] == "assistant":
            prior.pop()
        turn.user_message = prior.pop()["content"] if prior and prior[-1]["role"] == "user" else ""
    state = {**setup.state, "chat_id": None, "user": user}
    return prepare_chat(ctx, prior, turn, setup.settings, setup.params, setup.format_name, state=state)


def prompt_report(prepared: PreparedGeneration) -> str:
    request, plan = prepared.request, prepared.plan
    tokens = len(request.input_ids) if request.input_ids is not None else "?"
    dropped = f" · {plan.dropped_turns} old turn(s) left out to fit the context" if plan.dropped_turns else ""
    return f"{tokens} tokens · stop strings: {', '.join(map(repr, request.stop_strings)) or 'none'}{dropped}"


def prompt_ids_text(prepared: PreparedGeneration) -> str:
    ids = prepared.request.input_ids
    return "(the remote server tokenizes the prompt)" if ids is None else " ".join(map(str, ids))


# --- layout ---------------------------------------------------------------------------------------


def build(ui) -> None:
    ctx: Context = ui.ctx
    settings = ctx.config.settings
    chosen = ctx.config.instruction_format or AUTOMATIC
    ui.controls["mode"] = gr.Radio(list(MODES), value=settings.get("mode", "instruct"), label="Mode",
                                   elem_id="chat-mode")
    ui.controls["instruction_format"] = gr.Dropdown(format_choices(ctx), value=chosen, label="Instruction format",
                                                    elem_id="instruction-format", allow_custom_value=True)
    resolved = gr.Markdown(resolved_format_text(ctx, chosen), elem_id="format-resolved")
    ui.controls["system"] = gr.Textbox(settings.get("system", ""), lines=2, label="System message",
                                       placeholder="blank: the format's own (if any)")
    ui.controls["chat_instruct_command"] = gr.Textbox(settings.get("chat_instruct_command", DEFAULT_CHAT_INSTRUCT),
                                                      lines=3, label="chat-instruct command")
    with gr.Accordion("Edit the instruction format", open=False):
        name, template, stops = _editor_or_blank(ctx, chosen)
        fmt_name = gr.Textbox(name, label="Save as (name)", elem_id="format-name")
        fmt_template = gr.Textbox(template, lines=12, label="Template (Jinja)", elem_id="format-template")
        fmt_stops = gr.Textbox(stops, lines=2, label="Stop strings (one per line; \\n for a newline)",
                               elem_id="format-stops")
        fmt_save = gr.Button("Save format", elem_id="format-save")
        fmt_status = gr.Markdown()
    show = gr.Button("Show the exact prompt", elem_id="show-prompt")
    shown = gr.Textbox(label="The exact prompt", lines=10, buttons=["copy"], elem_id="exact-prompt")
    shown_info = gr.Markdown(elem_id="exact-prompt-info")
    with gr.Accordion("Token ids", open=False):
        shown_ids = gr.Textbox(label="Token ids the model gets", lines=3, buttons=["copy"], elem_id="exact-prompt-ids")
    ui.components.update(format_resolved=resolved, format_name=fmt_name, format_template=fmt_template,
                         format_stops=fmt_stops, format_save=fmt_save, format_status=fmt_status,
                         show_prompt=show, exact_prompt=shown, exact_prompt_info=shown_info,
                         exact_prompt_ids=shown_ids)


def _editor_or_blank(ctx: Context, choice: str) -> tuple[str, str, str]:
    try:
        return editor_values(ctx, choice)
    except CorralError:
        return "", "", ""


def wire(ui) -> None:
    ctx: Context = ui.ctx
    c = ui.components
    choice, resolved = ui.controls["instruction_format"], c["format_resolved"]
    editor = [c["format_name"], c["format_template"], c["format_stops"]]

    def chosen(name: str | None):
        try:
            values = editor_values(ctx, name)
        except CorralError as err:
            return resolved_format_text(ctx, name), *[gr.update()] * 3, f"⚠️ {err}"
        return resolved_format_text(ctx, name), *values, ""

    def save(name: str, template: str, stops: str):
        try:
            saved = save_format(ctx, name, template, stops)
        except CorralError as err:
            return gr.update(), gr.update(), f"⚠️ {err}"
        return (gr.update(choices=format_choices(ctx), value=saved), resolved_format_text(ctx, saved),
                f"Saved instruction format **{saved}**.")

    chat_id = [c["chat_id"]] if "chat_id" in c else [gr.State(None)]
    chat_inputs = [c["chatbot"], c["message"]] if "message" in c else [c["chatbot"], gr.State("")]
    show_inputs = [*chat_id, *chat_inputs, *control_inputs(ui)]

    def show(request: gr.Request, *values: Any):  # request first: see notebook_tab
        data = dict(zip(show_inputs, values))
        chat, history, message = values[:3]
        user = user_of(request)
        try:
            setup, _ = turn_setup(ui, user, data)
            prepared = exact_prompt(ctx, user, chat, history_from_chatbot(history), message or "", setup)
        except CorralError as err:
            return "", f"⚠️ {err}", ""
        return prepared.request.prompt, prompt_report(prepared), prompt_ids_text(prepared)

    choice.change(chosen, choice, [resolved, *editor, c["format_status"]], api_name="format_choose")
    c["format_save"].click(save, editor, [choice, resolved, c["format_status"]], api_name="format_save")
    c["show_prompt"].click(show, show_inputs, [c["exact_prompt"], c["exact_prompt_info"], c["exact_prompt_ids"]],
                           api_name="show_prompt")
    if "model_status" in c:  # a model load can change the automatic format
        c["model_status"].change(lambda name: resolved_format_text(ctx, name), choice, resolved,
                                 api_visibility="private")
