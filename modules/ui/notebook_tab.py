"""The Notebook tab: raw completion on free text, in one box or as input and output panes.

The text goes to the model as it is (no instruction format); the completion streams in.
Stop ends it within a token; the token counts show under the box.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from modules.core.context import Context
from modules.core.errors import CorralError
from modules.core.notebook import complete
from modules.ui.state import control_inputs, sampler_params, state_from_values


def cancel_key(request: gr.Request) -> str:
    """The notebook's own cancel slot, so its Stop leaves a chat reply in the same browser alone."""
    return f"{request.session_hash}:notebook"


def token_count(ctx: Context, text: str) -> str:
    try:
        return f"{ctx.engine.count_tokens(text or '')} tokens"
    except CorralError as err:
        return f"⚠️ {err}"


def build(ui) -> None:
    with gr.Tabs():
        with gr.Tab("Raw", id="notebook-raw"):
            text = gr.Textbox(lines=20, label="Text", elem_id="notebook-text",
                              placeholder="Write the beginning; Generate continues it.")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="notebook-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="notebook-stop")
                count = gr.Button("Count tokens", elem_id="notebook-count")
            info = gr.Markdown(elem_id="notebook-info")
        with gr.Tab("Input / output", id="notebook-panes"):
            with gr.Row():
                pane_in = gr.Textbox(lines=20, label="Input", elem_id="notebook-input")
                pane_out = gr.Textbox(lines=20, label="Output", elem_id="notebook-output")
            with gr.Row():
                pane_generate = gr.Button("Generate", variant="primary", elem_id="notebook-pane-generate")
                pane_stop = gr.Button("Stop", variant="stop", elem_id="notebook-pane-stop")
            pane_info = gr.Markdown(elem_id="notebook-pane-info")
    ui.components.update(notebook_text=text, notebook_generate=generate, notebook_stop=stop,
                         notebook_count=count, notebook_info=info, notebook_input=pane_in,
                         notebook_output=pane_out, notebook_pane_generate=pane_generate,
                         notebook_pane_stop=pane_stop, notebook_pane_info=pane_info)


def wire(ui) -> None:
    ctx: Context = ui.ctx
    c = ui.components

    def stream(prompt: str, values: tuple, request: gr.Request, keep_prompt: bool):
        """(shown text, report) pairs; the shown text is the prompt plus the completion in the one-box view."""
        lead = prompt if keep_prompt else ""
        try:
            state = state_from_values(ui, values)
            params = sampler_params(state)
            ctx.engine.require_backend()
        except CorralError as err:
            yield prompt if keep_prompt else "", f"⚠️ {err}"
            return
        cancel = ui.cancels.fresh(cancel_key(request))
        for update in complete(ctx.engine, prompt or "", params, cancel, ctx=ctx, settings=state):
            yield lead + update.text, update.report()

    # Gradio fills in gr.Request only for positional parameters, so it comes before *values.
    def generate(request: gr.Request, prompt: str, *values: Any):
        yield from stream(prompt, values, request, keep_prompt=True)

    def generate_panes(request: gr.Request, prompt: str, *values: Any):
        yield from stream(prompt, values, request, keep_prompt=False)

    def stop(request: gr.Request) -> None:
        ui.cancels.cancel(cancel_key(request))

    inputs = control_inputs(ui)
    c["notebook_generate"].click(generate, [c["notebook_text"], *inputs], [c["notebook_text"], c["notebook_info"]],
                                 api_name="notebook_generate")
    c["notebook_pane_generate"].click(generate_panes, [c["notebook_input"], *inputs],
                                      [c["notebook_output"], c["notebook_pane_info"]], api_name="notebook_panes")
    c["notebook_stop"].click(stop, None, None, queue=False, api_name="notebook_stop")
    c["notebook_pane_stop"].click(stop, None, None, queue=False, api_visibility="private")
    c["notebook_count"].click(lambda text: token_count(ctx, text), c["notebook_text"], c["notebook_info"],
                              api_name="notebook_count")
