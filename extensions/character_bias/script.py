"""character_bias: a hidden string that starts every bot reply.

The string goes into the prompt where the reply begins (through
bot_prefix_modifier), so the model continues from it; the chat shows only what
the model wrote after it. Use it to steer a character's mood or style, e.g.
``*I am so happy*``.
"""
import gradio as gr

params = {
    "display_name": "Character bias",
    "is_tab": False,
    "activate": True,
    "bias string": " *I am so happy*",
}


def bot_prefix_modifier(string, state):
    """Append the bias to whatever the reply already starts with."""
    if params["activate"] and params["bias string"]:
        return f"{string}{params['bias string']}"
    return string


def ui():
    with gr.Row():
        active = gr.Checkbox(value=params["activate"], label="Start every reply with the bias string")
        text = gr.Textbox(value=params["bias string"], label="Bias string")
    active.change(lambda value: params.update(activate=value), active, None)
    text.change(lambda value: params.update({"bias string": value}), text, None)
