"""token_probabilities: colour each generated token by its probability in the chat view.

output_modifier rebuilds the shown reply from the reply's tokens (from
``corral.reply_tokens(state)``): each token becomes a span coloured from red
(unlikely) through yellow to green (likely), with the probability as a tooltip.
Only the shown text changes: the prompt history, the notebook and the API keep
the plain text.
"""
import html
import math

import gradio as gr

from modules import extension_api as corral

params = {
    "display_name": "Token probabilities",
    "is_tab": False,
    "active": True,
}


def colour(probability: float) -> str:
    """Red (0) -> yellow (0.5) -> green (1), as an rgb() string readable on light and dark pages."""
    p = min(max(probability, 0.0), 1.0)
    red = 220 if p < 0.5 else int(220 * (1 - p) * 2)
    green = int(200 * p * 2) if p < 0.5 else 200
    return f"rgb({red}, {green}, 40)"


def span(text: str, logprob) -> str:
    shown = html.escape(text)
    if logprob is None:
        return shown
    probability = math.exp(logprob)
    return (f'<span class="token-probability" style="color: {colour(probability)}" '
            f'title="{probability:.3f}">{shown}</span>')


def coloured(string: str, tokens) -> str:
    """``string`` with the tokens that make it up wrapped in spans; text not from tokens stays plain.

    The shown reply can differ from the tokens: a "start reply with" prefix before them, a stop
    string cut off after them. Tokens are matched where they occur in order.
    """
    out, position = [], 0
    start = _reply_start(string, tokens)
    if start > 0:
        out.append(html.escape(string[:start]))
        position = start
    for index, token in enumerate(tokens):
        text = token.text
        if index == 0 and not string.startswith(text, position):
            text = text.lstrip()  # the chat strips the reply's leading space
        if not text:
            continue
        if not string.startswith(text, position):
            break
        out.append(span(text, token.logprob))
        position += len(text)
    out.append(html.escape(string[position:]))
    return "".join(out)


def _reply_start(string: str, tokens) -> int:
    """Where the generated text begins in ``string`` (after a prefix the model did not write)."""
    generated = "".join(t.text for t in tokens).lstrip()
    if not generated:
        return len(string)
    head = generated[:20]
    index = string.find(head)
    return index if index >= 0 else 0


def output_modifier(string, state, is_chat=False):
    if not (params["active"] and is_chat and state.get("interface", "chat") == "chat"):
        return string
    tokens = corral.reply_tokens(state)
    if not tokens:
        return string
    return coloured(string, tokens)


def custom_css():
    return ".token-probability { border-bottom: 1px dotted currentColor; }"


def ui():
    active = gr.Checkbox(value=params["active"], label="Colour the tokens of new replies by probability")
    active.change(lambda value: params.update(active=value), active, None)
